#!/usr/bin/env python3
"""The ``mesh`` case: N gateways on 127.0.x.y loopback addresses, a full mesh, idle cost.

    .venv/bin/python bench/mesh.py [--sizes 10,25,50] [--idle-seconds 20]
    .venv/bin/python bench/run.py --cases mesh [--mesh-sizes 10,25,50]

For each N: start N gateways (product defaults, log level info), measure each one's RSS before
any peer, then give every gateway an allow-all policy and the N-1 others as Peers through the
admin API (timing the N-1 POSTs on each gateway), poll until every gateway reports every peer
reachable, let the mesh settle, and read each process's CPU time from /proc/PID/stat over
``--idle-seconds``. Reports: seconds until every pair is reachable (from the first and from the
last object applied), admin-API seconds for N-1 peers on one gateway (median, max), idle CPU
in ms per gateway per peer per second (and per gateway), RSS per gateway idle and meshed.
Results go to bench/results/mesh-<timestamp>.json and a Markdown table is printed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"

if __package__ in (None, ""):
    if Path(sys.prefix) != VENV_PYTHON.parent.parent and VENV_PYTHON.exists():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "gateway" / "tests"))

import argparse  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402

from support.gateway import GatewayProcess  # noqa: E402
from support.pki import TestCA  # noqa: E402

RESULTS = REPO / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ALLOW_ALL = {"name": "allow-all", "spec": {"action": "allow", "from": [{}], "to": [{}]}}


def address(i: int) -> str:
    """The loopback address of gateway ``i``: 127.0.<x>.<y>, away from 127.0.0.x."""
    return f"127.0.{10 + i // 250}.{1 + i % 250}"


def free_port_on(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of ``pids`` (all threads): /proc/PID/stat utime + stime, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def run_seconds(pids: list[int]) -> float:
    """Time on CPU of ``pids`` (all threads) from /proc/PID/task/TID/schedstat: nanoseconds,
    exact even for a process that runs for microseconds at a time."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            continue
    return total / (1 << 20)


def anon_mib(pids: list[int]) -> float:
    """RssAnon: the part of RSS that is this process's own (not shared library pages)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def reachable_pairs(gateways: list[GatewayProcess]) -> int:
    count = 0
    for gw in gateways:
        try:
            peers = gw.client.list("peers")
        except OSError:
            continue
        count += sum(1 for p in peers if (p.get("status") or {}).get("reachable") is True)
    return count


def run_size(
    root: Path,
    ca: TestCA,
    n: int,
    idle_seconds: float,
    reach_timeout: float,
    env: dict[str, str],
    settings: dict[str, Any],
) -> dict[str, Any]:
    gateways: list[GatewayProcess] = []
    record: dict[str, Any] = {"n": n, "loadavg_start": list(os.getloadavg())}
    try:
        started = time.monotonic()
        for i in range(n):
            host = address(i)
            extra = {
                "listen": {"address": host, "port": free_port_on(host)},
                "log": {"level": "info"},
                **settings,
            }
            gw = GatewayProcess(root / f"n{n}", f"gw{i:03d}", ca, extra=extra)
            gateways.append(gw.start(wait=False, env=env))
        for gw in gateways:
            gw.wait_ready(timeout=120)
        record["start_s"] = round(time.monotonic() - started, 2)
        time.sleep(3)
        pids = {gw.name: tree(gw.proc.pid) for gw in gateways}  # type: ignore[union-attr]
        idle_rss = [rss_mib(pids[gw.name]) for gw in gateways]
        record["rss_idle_mib"] = _dist(idle_rss)
        record["anon_idle_mib"] = _dist([anon_mib(pids[gw.name]) for gw in gateways])
        for gw in gateways:
            gw.client.create("policies", ALLOW_ALL)
        applied_from = time.monotonic()
        # gw000 alone (the admin-API time of N-1 peers on one gateway), then the others
        # from 8 threads, as a playbook's forks would.
        apply_times = [apply_peers(gateways[0], gateways)]
        with ThreadPoolExecutor(8) as pool:
            apply_times += list(pool.map(lambda gw: apply_peers(gw, gateways), gateways[1:]))
        applied_to = time.monotonic()
        record["apply_one_s"] = round(apply_times[0], 3)
        record["apply_s"] = _dist(apply_times, 3)
        want = n * (n - 1)
        seen, reached = 0, None
        while time.monotonic() - applied_to < reach_timeout:
            seen = reachable_pairs(gateways)
            if seen >= want:
                reached = time.monotonic()
                break
            time.sleep(0.5)
        record["pairs"], record["pairs_reachable"] = want, seen
        if reached is not None:
            record["reachable_after_first_s"] = round(reached - applied_from, 2)
            record["reachable_after_last_s"] = round(reached - applied_to, 2)
        time.sleep(5)
        pids = {gw.name: tree(gw.proc.pid) for gw in gateways}  # type: ignore[union-attr]
        before = {name: (cpu_seconds(p), run_seconds(p)) for name, p in pids.items()}
        t0 = time.monotonic()
        time.sleep(idle_seconds)
        elapsed = time.monotonic() - t0
        after = {name: (cpu_seconds(p), run_seconds(p)) for name, p in pids.items()}
        per_gw = [(after[k][0] - before[k][0]) * 1000 / elapsed for k in before]
        exact = [(after[k][1] - before[k][1]) * 1000 / elapsed for k in before]
        record["idle_seconds"] = round(elapsed, 1)
        record["idle_cpu_ms_per_s"] = _dist(per_gw, 2)
        record["idle_cpu_ms_per_peer_s"] = round(statistics.mean(per_gw) / max(n - 1, 1), 4)
        record["idle_run_ms_per_s"] = _dist(exact, 2)
        record["idle_run_ms_per_peer_s"] = round(statistics.mean(exact) / max(n - 1, 1), 4)
        record["rss_meshed_mib"] = _dist([rss_mib(pids[gw.name]) for gw in gateways])
        record["anon_meshed_mib"] = _dist([anon_mib(pids[gw.name]) for gw in gateways])
        record["links"] = _links(gateways[0])
    finally:
        for gw in gateways:
            try:
                gw.stop()
            except Exception as exc:
                print(f"mesh: stopping {gw.name}: {exc}", file=sys.stderr)
    record["loadavg_end"] = list(os.getloadavg())
    return record


def apply_peers(gw: GatewayProcess, gateways: list[GatewayProcess]) -> float:
    """Create every other gateway as a Peer on ``gw``; the seconds it took."""
    t0 = time.monotonic()
    for other in gateways:
        if other is gw:
            continue
        listen = other.config["listen"]
        endpoint = {"host": listen["address"], "port": listen["port"]}
        gw.client.create("peers", {"name": other.peer_name, "spec": {"gateways": [endpoint]}})
    return time.monotonic() - t0


def _links(gw: GatewayProcess) -> int:
    try:
        return sum(int((p.get("status") or {}).get("links") or 0) for p in gw.client.list("peers"))
    except OSError:
        return -1


def _dist(values: list[float], digits: int = 1) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Run {result['started']}, `{result['command']}`, {result['machine']}, gateway from"
        f" {result['gateway_src']}, settings {json.dumps(result['settings'])}.",
        "",
        "| N | reachable after (s, from first / last object)"
        " | apply N-1 peers (s: gw000 alone / median / max)"
        " | idle CPU ms/s per gateway (median) | idle CPU ms per peer per s"
        " | RSS idle MiB (anon) | RSS meshed MiB (anon) | links on gw000 | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["records"]:
        if "error" in r:
            lines.append(f"| {r['n']} | FAILED: {r['error']} | | | | | | | |")
            continue
        reach = (
            f"{r['reachable_after_first_s']} / {r['reachable_after_last_s']}"
            if "reachable_after_first_s" in r
            else f"not all: {r['pairs_reachable']}/{r['pairs']}"
        )
        lines.append(
            f"| {r['n']} | {reach} | {r['apply_one_s']} / {r['apply_s']['median']}"
            f" / {r['apply_s']['max']}"
            f" | {r['idle_run_ms_per_s']['median']} | {r['idle_run_ms_per_peer_s']}"
            f" | {r['rss_idle_mib']['median']} ({r['anon_idle_mib']['median']})"
            f" | {r['rss_meshed_mib']['median']} ({r['anon_meshed_mib']['median']})"
            f" | {r['links']} | {r['loadavg_start'][0]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}"


def run(
    sizes: list[int],
    idle_seconds: float = 20.0,
    reach_timeout: float = 180.0,
    gateway_src: Path | None = None,
    settings: dict[str, Any] | None = None,
    results_dir: Path = RESULTS,
) -> int:
    """Run the mesh case for every size; print the table; 1 if a size broke. ``gateway_src``:
    run the daemon from that source tree (e.g. a ``git worktree`` of main, for before/after)."""
    import resource
    import shlex

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["bench/mesh.py", *map(shlex.quote, sys.argv[1:])]),
        "machine": machine(),
        "gateway_src": str(gateway_src or "working tree"),
        "settings": settings or {},
        "records": [],
    }
    env = {"PYTHONPATH": str(gateway_src)} if gateway_src else {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="clusterlink-mesh-") as tmp:
        root = Path(tmp)
        ca = TestCA(root / "pki")
        for n in sizes:
            print(f"mesh: N={n} ...", flush=True)
            try:
                record = run_size(root, ca, n, idle_seconds, reach_timeout, env, settings or {})
            except Exception as exc:
                record = {"n": n, "error": str(exc).splitlines()[0] if str(exc) else repr(exc)}
                failed = True
            print(f"mesh: {json.dumps(record)}", flush=True)
            result["records"].append(record)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"mesh-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(markdown(result))
    print(f"mesh: results in {out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/mesh.py", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,25,50", help="comma-separated N (default 10,25,50)")
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--reach-timeout", type=float, default=180.0)
    p.add_argument(
        "--gateway-src",
        type=Path,
        help="directory holding clusterlink_gateway to run (default: the installed working tree)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=YAML",
        help="a gateway setting for every gateway, e.g. heartbeat.full_every=1 (repeatable)",
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    settings: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        settings.setdefault(section, {})[name] = yaml.safe_load(value)
    return run(
        sizes, args.idle_seconds, args.reach_timeout, args.gateway_src, settings, args.results_dir
    )


if __name__ == "__main__":
    sys.exit(main())
