"""Network plumbing for a lab: namespaces, bridges, veths and nftables, all idempotent."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .util import LabError, run

NETNS_DIR = Path("/run/netns")


def netns_list() -> list[str]:
    """Names of the named network namespaces."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    """True if the named network namespace exists."""
    return (NETNS_DIR / name).exists()


def ensure_netns(name: str) -> None:
    """Create the named namespace (with ``lo`` up) unless it exists."""
    if not netns_exists(name):
        run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def delete_netns(name: str) -> None:
    """Delete a named namespace; the veth ends inside it disappear with it."""
    if netns_exists(name):
        run(["ip", "netns", "del", name])


def links(netns: str | None = None) -> dict[str, dict[str, object]]:
    """Interfaces of a namespace (root if None), by name, as ``ip -j -d link`` reports them."""
    cmd = ["ip", "-j", "-d"] + (["-n", netns] if netns else []) + ["link", "show"]
    out = run(cmd).stdout
    return {item["ifname"]: item for item in json.loads(out or "[]")}


def link_exists(name: str, netns: str | None = None) -> bool:
    """True if the interface exists in the namespace (root if None)."""
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return run(cmd, check=False).returncode == 0


def addresses(netns: str | None = None) -> dict[str, str]:
    """IPv4 address -> interface name in a namespace (root if None)."""
    cmd = ["ip", "-j"] + (["-n", netns] if netns else []) + ["-4", "addr", "show"]
    found: dict[str, str] = {}
    for item in json.loads(run(cmd).stdout or "[]"):
        for addr in item.get("addr_info", []):
            found[addr["local"]] = item["ifname"]
    return found


def check_address_free(address: str, owner: str) -> None:
    """Refuse to proceed if ``address`` is already used in the root namespace by another link."""
    holder = addresses().get(address)
    if holder is not None and holder != owner:
        raise LabError(f"{address} is already assigned to {holder} (another lab?)")


def ensure_bridge(name: str, cidr: str) -> None:
    """A bridge in the root namespace with ``cidr`` as its address, up."""
    check_address_free(cidr.split("/")[0], name)
    if not link_exists(name):
        run(["ip", "link", "add", name, "type", "bridge"])
    run(["ip", "addr", "replace", cidr, "dev", name])
    run(["ip", "link", "set", name, "up"])


def ensure_veth(root_end: str, netns: str, inner: str) -> None:
    """A veth pair: ``root_end`` in the root namespace, ``inner`` inside ``netns``."""
    if link_exists(root_end) and not link_exists(inner, netns):
        run(["ip", "link", "del", root_end])
    if not link_exists(root_end):
        if link_exists(inner, netns):
            run(["ip", "-n", netns, "link", "del", inner])
        run(["ip", "link", "add", root_end, "type", "veth", "peer", "name", inner, "netns", netns])


def attach(root_end: str, bridge: str) -> None:
    """Enslave a root-namespace interface to a bridge and bring it up."""
    run(["ip", "link", "set", root_end, "master", bridge, "up"])


def configure_inner(netns: str, dev: str, cidrs: list[str], gateway: str | None) -> None:
    """Addresses (and optionally the default route) of an interface inside a namespace."""
    for cidr in cidrs:
        run(["ip", "-n", netns, "addr", "replace", cidr, "dev", dev])
    run(["ip", "-n", netns, "link", "set", dev, "up"])
    if gateway:
        run(["ip", "-n", netns, "route", "replace", "default", "via", gateway])


def set_link(name: str, up: bool) -> None:
    """Set a root-namespace interface up or down."""
    run(["ip", "link", "set", name, "up" if up else "down"])


def delete_link(name: str) -> None:
    """Delete a root-namespace interface if present."""
    if link_exists(name):
        run(["ip", "link", "del", name], check=False)


def sysctl(netns: str, key: str, value: str) -> None:
    """Set a sysctl inside a namespace."""
    run(["ip", "netns", "exec", netns, "sysctl", "-qw", f"{key}={value}"])


def nft_replace_table(family: str, table: str, body: str, netns: str | None = None) -> None:
    """Atomically (re)load one nftables table, leaving every other table alone."""
    script = f"table {family} {table} {{}}\ndelete table {family} {table}\n{body}\n"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    run([*prefix, "nft", "-f", "-"], input=script)


def nft_delete_table(family: str, table: str, netns: str | None = None) -> None:
    """Delete one nftables table if present."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    if run([*prefix, "nft", "list", "table", family, table], check=False).returncode == 0:
        run([*prefix, "nft", "delete", "table", family, table])


def nft_tables(netns: str | None = None) -> list[str]:
    """``family name`` of every nftables table in a namespace."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    out = run([*prefix, "nft", "list", "tables"], check=False).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()]
