"""Command line: ``python3 -m tests.lab {image,create,status,list,ssh,destroy,...}``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from . import image
from .lab import Lab, list_labs
from .util import LabError, log


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _pairs(value: str, what: str) -> dict[str, str]:
    pairs = {}
    for item in _csv(value):
        host, sep, other = item.partition("=")
        if not sep or not host or not other:
            raise argparse.ArgumentTypeError(f"expected HOST={what}, got {item!r}")
        pairs[host.strip()] = other.strip()
    return pairs


def _sites(value: str) -> dict[str, str]:
    return _pairs(value, "SITE")


def _images(value: str) -> dict[str, str]:
    return _pairs(value, "IMAGE")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m tests.lab",
        description="Real Debian hosts (systemd + sshd) in network namespaces, for tests.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("image", help="build (or reuse) the cached base image")
    s.add_argument("--rebuild", action="store_true", help="rebuild even if the cache is current")
    s.add_argument(
        "--suite",
        choices=image.SUITES,
        default=image.SUITE,
        help=f"Debian release of the image (default {image.SUITE})",
    )

    s = sub.add_parser("create", help="create a lab, or repair an existing one")
    s.add_argument("--name", required=True)
    s.add_argument("--hosts", required=True, type=_csv, help="comma-separated host names")
    s.add_argument("--topology", choices=("flat", "cloud"), default="flat")
    s.add_argument("--sites", type=_sites, default=None, help="cloud: host=site,... ")
    s.add_argument("--public-port", type=int, default=443, help="cloud: the peer port")
    s.add_argument(
        "--outbound-only",
        type=_csv,
        default=None,
        metavar="SITE,...",
        help="cloud: sites that accept no inbound connection (router SNAT only, no DNAT)",
    )
    s.add_argument(
        "--images",
        type=_images,
        default=None,
        help=f"host=release,... (one of {', '.join(image.SUITES)}; default {image.SUITE})",
    )
    s.add_argument("--timeout", type=float, default=120, help="seconds to wait for boot")

    for name, text in (
        ("destroy", "remove a lab completely (no-op if missing)"),
        ("status", "describe a lab"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--name", required=True)
        if name == "status":
            s.add_argument("--json", action="store_true")

    s = sub.add_parser("list", help="list labs")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("ssh", help="ssh to a lab host as root: ssh --name LAB HOST [-- CMD]")
    s.add_argument("--name", required=True)
    s.add_argument("host")
    s.add_argument("cmd", nargs=argparse.REMAINDER)

    for name, text in (
        ("link-down", "unplug a host's network link"),
        ("link-up", "plug a host's network link back in"),
        ("poweroff", "shut a host down"),
        ("start", "boot a powered-off host"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--name", required=True)
        s.add_argument("host")
    return p


def _print_status(lab: Lab, as_json: bool) -> None:
    st = lab.status()
    if as_json:
        print(json.dumps(st, indent=2))
        return
    if not st.get("topology"):
        print(f"lab {lab.name}: not created")
        return
    print(f"lab {lab.name} ({st['topology']}), key {st['key']}, inventory {st['inventory']}")
    for name, h in st["hosts"].items():
        extra = f" site {h['site']} public {h['public_address']}" if h["site"] else ""
        extra += " outbound-only" if h.get("outbound_only") else ""
        state = f"running pid {h['pid']}" if h["running"] else "stopped"
        print(f"  {name:16} {h['address']:15} {state}{extra}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if os.geteuid() != 0 and args.command not in ("list", "status"):
        print("the lab needs root (namespaces, mounts, nspawn)", file=sys.stderr)
        return 2
    try:
        if args.command == "image":
            started = time.monotonic()
            path = image.ensure_image(rebuild=args.rebuild, suite=args.suite)
            log(f"image ready in {time.monotonic() - started:.1f}s")
            print(path)
        elif args.command == "create":
            lab = Lab(args.name).create(
                args.hosts,
                args.topology,
                args.sites,
                args.public_port,
                args.timeout,
                args.images,
                args.outbound_only,
            )
            _print_status(lab, True)
        elif args.command == "destroy":
            Lab(args.name).destroy()
        elif args.command == "status":
            _print_status(Lab(args.name), args.json)
        elif args.command == "list":
            labs = {n: Lab(n).status() for n in list_labs()}
            if args.json:
                print(json.dumps(labs, indent=2))
                return 0
            for name, st in labs.items():
                running = sum(h["running"] for h in st["hosts"].values())
                print(f"{name:16} {st.get('topology', '?'):6} {running}/{len(st['hosts'])} up")
        elif args.command == "ssh":
            lab = Lab(args.name)
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            argv_ssh = lab.ssh_argv(args.host, " ".join(cmd) if cmd else None)
            if not cmd and sys.stdin.isatty():
                argv_ssh.insert(1, "-t")
            os.execvp(argv_ssh[0], argv_ssh)
        else:
            lab = Lab(args.name)
            action = {
                "link-down": lab.link_down,
                "link-up": lab.link_up,
                "poweroff": lab.poweroff,
                "start": lab.start,
            }[args.command]
            action(args.host)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
