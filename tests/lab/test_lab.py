"""Tests of the lab tool itself: real hosts, real namespaces, real teardown (root only)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.lab import Lab, LabError, net
from tests.lab.lab import FLAT_NET, _cgroup_mounts, _nspawn_root
from tests.lab.util import mounts_under

F = TypeVar("F", bound=Callable[..., Any])
NET = FLAT_NET  # CLUSTERLINK_LAB_FLAT_NET: parallel runs on one machine use their own /24
# Prefix of this module's lab names (CLUSTERLINK_LAB_TEST_PREFIX), for parallel runs.
P = os.environ.get("CLUSTERLINK_LAB_TEST_PREFIX", "lt")
REPO = Path(__file__).resolve().parents[2]
NEEDS = ("systemd-nspawn", "debootstrap", "nft", "ip", "ssh")
root_only = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in NEEDS),
    reason=f"lab tests need root and {', '.join(NEEDS)}",
)


def lab_test(fn: F) -> F:
    """Mark a test that boots real hosts."""
    return pytest.mark.lab(root_only(fn))


# ----- helpers ---------------------------------------------------------------------------
def listen(lab: Lab, host: str, port: int) -> None:
    """Start an HTTP server on ``host`` as a transient systemd unit and wait until it answers."""
    lab.run(
        host, f"systemd-run -q --unit=lab-http-{port} python3 -m http.server {port}", check=True
    )
    for _ in range(50):
        if http_code(lab, host, f"http://127.0.0.1:{port}/") == "200":
            return
        time.sleep(0.2)
    raise AssertionError(f"{host}: nothing listens on {port}")


def http_code(lab: Lab, src: str, url: str, timeout: float = 2) -> str:
    """HTTP status of ``url`` fetched from host ``src``; ``000`` if unreachable."""
    cmd = f"curl -s -o /dev/null -m {timeout} -w '%{{http_code}}' {url}"
    return lab.run(src, cmd, timeout=timeout + 15).stdout.strip()


def assert_gone(lab: Lab) -> None:
    """Nothing of ``lab`` is left: processes, mounts, namespaces, links, nft table, state dir."""
    assert not lab.dir.exists()
    assert mounts_under(lab.dir) == []
    prefix = str(lab.dir) + "/"
    nspawns = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and (_nspawn_root(int(p)) or "").startswith(prefix)
    ]
    assert nspawns == []
    assert [n for n in net.netns_list() if n.startswith(f"cl.{lab.name}.")] == []
    assert lab.router_netns not in net.netns_list()
    assert [n for n in net.links() if lab.tag in n] == []
    assert f"inet {lab.nft_table}" not in net.nft_tables()
    assert [d for m in _cgroup_mounts() for d in m.glob(f"clusterlink-lab/cl.{lab.name}.*")] == []
    assert Lab(lab.name).hosts == {}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python3 -m tests.lab ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "tests.lab", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ----- pure planning (no root needed) ------------------------------------------------------
def test_plan_flat_addresses_follow_host_name_order() -> None:
    plan = Lab(f"{P}-plan")._plan(["c", "a", "b"], "flat", None, 443)
    assert {h: x.address for h, x in plan.hosts.items()} == {
        "a": f"{NET}.10",
        "b": f"{NET}.11",
        "c": f"{NET}.12",
    }
    assert {x.gateway for x in plan.hosts.values()} == {f"{NET}.1"}
    assert all(len(x.veth) <= 15 and len(x.bridge) <= 15 for x in plan.hosts.values())


def test_plan_cloud_sites() -> None:
    lab = Lab(f"{P}-plan")
    plan = lab._plan(["a", "b", "c"], "cloud", {"a": "east", "b": "west", "c": "east"}, 443)
    assert plan.hosts["a"].address == "198.18.1.10"
    assert plan.hosts["c"].address == "198.18.1.11"
    assert plan.hosts["b"].address == "198.18.2.10"
    assert plan.hosts["b"].gateway == "198.18.2.254"
    assert plan.sites["east"].public_address == "198.19.0.11"
    assert plan.sites["east"].first_host == "a"
    assert plan.sites["west"].public_address == "198.19.0.12"
    with pytest.raises(LabError):
        lab._plan(["a"], "cloud", {"zz": "east"}, 443)
    with pytest.raises(LabError):
        lab._plan(["Bad_Name"], "flat", None, 443)


def test_plan_outbound_only_sites() -> None:
    lab = Lab(f"{P}-plan")
    plan = lab._plan(["a", "b"], "cloud", {"a": "east", "b": "west"}, 443, None, {"west"})
    assert {s.name: s.outbound_only for s in plan.sites.values()} == {
        "east": False,
        "west": True,
    }
    with pytest.raises(LabError, match="unknown sites: \\['north'\\]"):
        lab._plan(["a"], "cloud", {"a": "east"}, 443, None, {"north"})
    with pytest.raises(LabError, match="only applies to the cloud topology"):
        lab._plan(["a"], "flat", None, 443, None, {"site1"})


def test_plan_images_per_host() -> None:
    lab = Lab(f"{P}-plan")
    plan = lab._plan(["a", "b", "c"], "flat", None, 443, {"b": "trixie", "c": "bullseye"})
    assert {h: x.image for h, x in plan.hosts.items()} == {
        "a": "bookworm",
        "b": "trixie",
        "c": "bullseye",
    }
    with pytest.raises(LabError, match="unknown image 'sid'"):
        lab._plan(["a"], "flat", None, 443, {"a": "sid"})
    with pytest.raises(LabError, match="unknown hosts"):
        lab._plan(["a"], "flat", None, 443, {"zz": "trixie"})


# ----- flat lab -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flat() -> Iterator[Lab]:
    lab = Lab(f"{P}-flat")
    lab.destroy()
    try:
        yield lab.create(["a", "b"], topology="flat")
    finally:
        lab.destroy()


@lab_test
@pytest.mark.parametrize("host", ["a", "b"])
def test_flat_hosts_boot_with_ssh_and_systemd(flat: Lab, host: str) -> None:
    assert flat.run(host, "systemctl is-system-running").stdout.strip() == "running"
    assert flat.run(host, "hostname").stdout.strip() == host
    assert flat.run(host, "systemctl is-active ssh").stdout.strip() == "active"


@lab_test
def test_flat_hosts_have_their_own_identity(flat: Lab) -> None:
    ids = {
        flat.run(h, "cat /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub").stdout
        for h in flat.hosts
    }
    assert len(ids) == len(flat.hosts) == 2


@lab_test
def test_flat_hosts_do_not_share_services(flat: Lab) -> None:
    # Same unit name on both hosts; stopping it on one must not touch the other (own cgroups).
    for h in ("a", "b"):
        flat.run(h, "systemd-run -q --unit=lab-twin sleep 600", check=True)
    flat.run("a", "systemctl stop lab-twin", check=True)
    assert flat.run("b", "systemctl is-active lab-twin").stdout.strip() == "active"
    flat.run("b", "systemctl stop lab-twin", check=True)


@lab_test
def test_flat_hosts_reach_each_other(flat: Lab) -> None:
    assert flat.hosts["a"].address == f"{NET}.10"
    assert flat.hosts["b"].address == f"{NET}.11"
    listen(flat, "a", 8080)
    listen(flat, "b", 8080)
    assert http_code(flat, "a", f"http://{NET}.11:8080/") == "200"
    assert http_code(flat, "b", f"http://{NET}.10:8080/") == "200"


@lab_test
def test_flat_inventory_and_cli(flat: Lab) -> None:
    text = flat.inventory_path.read_text()
    assert "clusterlink_gateways:" in text
    assert f'ansible_host: "{NET}.10"' in text
    assert f'ansible_ssh_private_key_file: "{flat.key_path}"' in text
    status = cli("status", "--name", f"{P}-flat", "--json")
    assert status.returncode == 0, status.stderr
    desc = json.loads(status.stdout)
    assert desc["inventory"] == str(flat.inventory_path)
    assert {h: x["address"] for h, x in desc["hosts"].items()} == {
        "a": f"{NET}.10",
        "b": f"{NET}.11",
    }
    assert all(x["running"] and x["pid"] for x in desc["hosts"].values())
    out = cli("ssh", "--name", f"{P}-flat", "b", "--", "hostname")
    assert out.stdout.strip() == "b", out.stderr
    ansible = Path(sys.executable).parent / "ansible"
    if ansible.exists():
        ping = subprocess.run(
            [str(ansible), "-i", str(flat.inventory_path), "clusterlink_gateways", "-m", "ping"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert ping.stdout.count("SUCCESS") == 2


@lab_test
def test_flat_create_again_is_idempotent_and_repairs(flat: Lab) -> None:
    before = {h: (x.address, x.pid) for h, x in flat.hosts.items()}
    flat.create(["b", "a"], topology="flat")
    assert {h: (x.address, x.pid) for h, x in flat.hosts.items()} == before
    assert all(flat.is_running(h) for h in flat.hosts)
    # A host whose container died is started again by create (its disk survives).
    flat.run("b", "echo kept > /root/marker", check=True)
    pid = flat.hosts["b"].pid
    assert pid is not None and flat.is_running("b")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while flat.is_running("b") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not flat.is_running("b")
    flat.create(["a", "b"])
    assert flat.hosts["b"].pid != pid and flat.is_running("b")
    assert flat.hosts["a"].pid == before["a"][1]
    assert flat.run("b", "cat /root/marker").stdout.strip() == "kept"
    assert flat.run("b", "systemctl is-system-running").stdout.strip() == "running"
    with pytest.raises(LabError):
        flat.create(["a", "b", "c"])


@lab_test
def test_flat_link_down_partitions_a_host(flat: Lab) -> None:
    listen(flat, "b", 8081)
    flat.link_down("b")
    try:
        assert http_code(flat, "a", f"http://{NET}.11:8081/") == "000"
    finally:
        flat.link_up("b")
    assert http_code(flat, "a", f"http://{NET}.11:8081/", timeout=5) == "200"


@lab_test
def test_flat_poweroff_and_start(flat: Lab) -> None:
    flat.run("a", "echo persisted > /root/disk", check=True)
    flat.poweroff("a")
    assert not flat.is_running("a")
    assert flat.run("a", "true", timeout=10).returncode != 0
    assert flat.start("a") == []
    assert flat.run("a", "cat /root/disk").stdout.strip() == "persisted"
    assert flat.run("a", "systemctl is-system-running").stdout.strip() == "running"


def _ssh_client_port(lab: Lab, host: str) -> str:
    """The controller-side port of the SSH connection a command runs over."""
    out = lab.run(host, "echo $SSH_CONNECTION", check=True, timeout=30).stdout.split()
    return out[1]


@lab_test
def test_remote_commands_stream_concurrently_on_two_hosts(flat: Lab) -> None:
    """Two long commands on two hosts at once: each one's output streams while both still
    run (each waits for a file only a third command creates), then both end with rc 0."""
    script = (
        "rm -f /tmp/go; echo ready; n=0; "
        "while [ ! -e /tmp/go ]; do sleep 0.1; n=$((n+1)); [ $n -lt 600 ] || exit 9; done; "
        "echo done-$(hostname)"
    )
    cmds = {h: flat.start_command(h, script) for h in ("a", "b")}
    for cmd in cmds.values():
        assert next(cmd.lines(timeout=60)) == "ready\n"
        assert cmd.running and cmd.exit_status is None
    assert all(c.running for c in cmds.values())  # both are running at the same time
    for h in cmds:
        flat.run(h, "touch /tmp/go", check=True)
    for h, cmd in cmds.items():
        assert [line.strip() for line in cmd.lines(timeout=60)] == [f"done-{h}"]
        proc = cmd.wait(60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"ready\ndone-{h}\n", "")
        assert cmd.exit_status == 0


@lab_test
def test_remote_exit_status_output_input_and_async(flat: Lab) -> None:
    proc = flat.run("a", "echo out; echo err >&2; exit 7")
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "out\n", "err\n")
    with pytest.raises(LabError, match="rc=7"):
        flat.run("a", "exit 7", check=True)
    assert flat.run("a", "tr a-z A-Z", input="hello\n").stdout == "HELLO\n"
    assert flat.run("a", ["printf", "%s|", "two words", "$HOME"]).stdout == "two words|$HOME|"
    assert flat.run("a", "cat").stdout == ""  # no input: stdin is at EOF, nothing hangs

    async def both() -> list[subprocess.CompletedProcess[str]]:
        return list(await asyncio.gather(flat.arun("a", "hostname"), flat.arun("b", "hostname")))

    assert [p.stdout.strip() for p in asyncio.run(both())] == ["a", "b"]
    many = [flat.start_command("a", f"sleep 1; echo {i}") for i in range(16)]  # > sshd's 10
    assert [c.wait(60).stdout for c in many] == [f"{i}\n" for i in range(16)]
    src = Path(flat.dir) / "put-test"
    (src / "sub").mkdir(parents=True, exist_ok=True)
    (src / "sub" / "run.sh").write_text("#!/bin/sh\necho copied\n")
    (src / "sub" / "run.sh").chmod(0o755)
    flat.put("a", src, "/root/")
    assert flat.run("a", "/root/put-test/sub/run.sh").stdout == "copied\n"


@lab_test
def test_remote_timeout_and_stop_end_the_remote_command(flat: Lab) -> None:
    """A timed-out or stopped command is ended on the host too (its whole process group),
    not merely abandoned by the controller."""
    started = time.monotonic()
    proc = flat.run("a", "sleep 301; echo never", timeout=2)
    assert proc.returncode == 124 and "timed out" in proc.stderr and proc.stdout == ""
    assert time.monotonic() - started < 60
    with pytest.raises(LabError, match="timed out"):
        flat.run("a", "sleep 302", timeout=1, check=True)
    loop = flat.start_command("a", "while true; do sleep 303; done")
    time.sleep(1)
    loop.stop()
    assert loop.wait(30).returncode != 0
    assert not loop.running
    left = flat.run("a", "pgrep -f 'sleep 30[123]' || echo none").stdout.strip()
    assert left == "none"


@lab_test
def test_remote_connection_is_kept_and_comes_back(flat: Lab) -> None:
    """One connection serves consecutive commands; after the host's cable is pulled (commands
    fail meanwhile) and replugged, and after a poweroff and start, commands work again."""
    port = _ssh_client_port(flat, "b")
    assert _ssh_client_port(flat, "b") == port  # the same connection, not one per command
    running = flat.start_command("b", "sleep 2; echo survived")
    flat.link_down("b")
    try:
        assert flat.run("b", "true", timeout=3).returncode != 0
        time.sleep(1)
    finally:
        flat.link_up("b")
    assert running.wait(60).stdout == "survived\n"  # a short cable pull: TCP carries on
    assert flat.run("b", "hostname", timeout=60).stdout.strip() == "b"
    flat.poweroff("b")
    assert flat.run("b", "true", timeout=10).returncode == 255
    assert flat.start("b") == []
    assert flat.run("b", "hostname", timeout=60).stdout.strip() == "b"
    assert _ssh_client_port(flat, "b") == _ssh_client_port(flat, "b")
    # A host restarted behind the controller's back (container killed, booted again by
    # create): its old connection is dead; the next command runs on a new one.
    # (The killed container must not live on orphaned, still serving the old connection.)
    init_started = "awk '{print $22}' /proc/1/stat"  # the container's init: once per boot
    boot = flat.run("b", init_started, check=True).stdout
    pid = flat.hosts["b"].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while flat.is_running("b") and time.monotonic() < deadline:
        time.sleep(0.1)
    flat.create(["a", "b"])
    assert flat.run("b", "systemctl is-system-running", timeout=60).stdout.strip() == "running"
    assert flat.run("b", init_started, check=True).stdout != boot


@lab_test
def test_flat_destroy_leaves_nothing(flat: Lab) -> None:
    assert flat.hosts
    out = cli("destroy", "--name", f"{P}-flat")
    assert out.returncode == 0, out.stderr
    assert_gone(Lab(f"{P}-flat"))
    again = cli("destroy", "--name", f"{P}-flat")
    assert again.returncode == 0, again.stderr
    assert f"{P}-flat" not in cli("list").stdout


@lab_test
def test_flat_stale_lab_is_reclaimed_live_one_is_not() -> None:
    """A flat lab left by a killed run (creator gone, hosts down) must not block the shared
    subnet forever (a CI run once lost 36 tests to one); a live lab is never taken."""
    stale, nxt = Lab(f"{P}-stale"), Lab(f"{P}-next")
    try:
        stale.destroy()
        stale.create(["a"], topology="flat")
        assert not stale.is_stale()  # this process created it
        with pytest.raises(LabError, match="already assigned"):
            nxt.create(["a"], topology="flat")
        nxt.destroy()
        stale.poweroff("a")
        assert not stale.is_stale()  # creator still alive
        state = json.loads((stale.dir / "state.json").read_text())
        state["owner"] = [state["owner"][0], state["owner"][1] + 1]  # a process now gone
        (stale.dir / "state.json").write_text(json.dumps(state))
        stale = Lab(f"{P}-stale")
        assert stale.is_stale()
        nxt.create(["a"], topology="flat")
        assert_gone(Lab(f"{P}-stale"))
        assert nxt.run("a", "true").returncode == 0
    finally:
        nxt.destroy()
        stale.destroy()


@lab_test
def test_hosts_boot_the_debian_release_they_choose() -> None:
    """``--images``: one lab mixing Debian 12 (default), 13 and 11, each from its own cached
    image; a second create with other images is refused (a different shape)."""
    name = f"{P}-images"
    try:
        out = cli("create", "--name", name, "--hosts", "a,b,c", "--images", "b=trixie,c=bullseye")
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        assert {h: x["image"] for h, x in status["hosts"].items()} == {
            "a": "bookworm",
            "b": "trixie",
            "c": "bullseye",
        }
        lab = Lab(name)
        want = {"a": ("bookworm", "3.11"), "b": ("trixie", "3.13"), "c": ("bullseye", "3.9")}
        for host, (codename, python) in want.items():
            out = lab.run(
                host,
                ". /etc/os-release; echo $VERSION_CODENAME; systemctl is-system-running; "
                "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'",
            )
            assert out.stdout.split() == [codename, "running", python], (host, out)
        with pytest.raises(LabError, match="different shape"):
            Lab(name).create(["a", "b", "c"], images={"b": "bullseye"})
        bad = cli("create", "--name", f"{P}-bad", "--hosts", "a", "--images", "a=sid")
        assert bad.returncode != 0 and "unknown image 'sid'" in bad.stderr
    finally:
        Lab(name).destroy()
        Lab(f"{P}-bad").destroy()
    assert_gone(Lab(name))


# ----- cloud lab ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cloud() -> Iterator[Lab]:
    lab = Lab(f"{P}-cloud")
    lab.destroy()
    try:
        yield lab.create(
            ["a", "b", "c"],
            topology="cloud",
            sites={"a": "site1", "b": "site2", "c": "site3"},
            outbound_only={"site3"},
        )
    finally:
        lab.destroy()


@lab_test
def test_cloud_addresses_and_inventory(cloud: Lab) -> None:
    assert cloud.hosts["a"].address == "198.18.1.10"
    assert cloud.hosts["b"].address == "198.18.2.10"
    assert cloud.sites["site1"].public_address == "198.19.0.11"
    assert cloud.sites["site2"].public_address == "198.19.0.12"
    for h in ("a", "b"):
        assert cloud.run(h, "systemctl is-system-running").stdout.strip() == "running"
    text = cloud.inventory_path.read_text()
    assert 'clusterlink_peer_name: "site1"' in text
    assert 'clusterlink_advertise_address: "198.19.0.12"' in text
    with pytest.raises(LabError):
        Lab(f"{P}-cloud").create(["a", "b"], topology="flat")


@lab_test
def test_cloud_only_peer_port_crosses_sites(cloud: Lab) -> None:
    port = cloud.public_port
    assert port == 443
    listen(cloud, "b", port)
    listen(cloud, "b", 8080)
    pub_b = cloud.sites["site2"].public_address
    # site1 -> site2: the public address on the peer port works, seen as site1's public address
    assert http_code(cloud, "a", f"http://{pub_b}:{port}/") == "200"
    log = cloud.run("b", f"journalctl -q -u lab-http-{port} --no-pager").stdout
    assert cloud.sites["site1"].public_address in log
    assert cloud.hosts["a"].address not in log
    # ... but neither the private address nor another port on the public address
    assert http_code(cloud, "a", f"http://{cloud.hosts['b'].address}:{port}/") == "000"
    assert http_code(cloud, "a", f"http://{pub_b}:8080/") == "000"
    # ... not even when a site1 host tries to route through the controller's namespace
    b_net = "198.18.2.0/24"
    cloud.run("a", f"ip route add {b_net} via {cloud.sites['site1'].controller_address}")
    try:
        assert http_code(cloud, "a", f"http://{cloud.hosts['b'].address}:8080/") == "000"
    finally:
        cloud.run("a", f"ip route del {b_net}")
    # The controller reaches hosts by management address and sites by public address.
    assert _curl_local(f"http://{cloud.hosts['b'].address}:8080/") == "200"
    assert _curl_local(f"http://{pub_b}:{port}/") == "200"
    assert _curl_local(f"http://{pub_b}:8080/") == "000"


def _curl_local(url: str) -> str:
    """HTTP status of ``url`` fetched from the controller (root namespace); ``000`` if none."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.status)
    except (urllib.error.URLError, OSError):
        return "000"


def _tcp_connects(address: str, port: int, timeout: float = 2) -> bool:
    """True if a TCP connection from the controller (root namespace) to address:port opens."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tcp_connects_from(lab: Lab, host: str, address: str, port: int) -> bool:
    """True if a TCP connection from ``host`` to address:port opens (bash's /dev/tcp)."""
    cmd = f"timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port}' && echo open"
    return lab.run(host, cmd, timeout=20).stdout.strip() == "open"


@lab_test
def test_cloud_outbound_only_site_accepts_nothing_but_dials_out(cloud: Lab) -> None:
    """site3 is outbound-only: no inbound TCP from "the internet" (the root namespace) or
    another site reaches its host, not even the peer port; it dials out, seen as its public
    (SNAT) address; the controller still manages it over SSH."""
    port = cloud.public_port
    assert port is not None
    site3 = cloud.sites["site3"]
    c = cloud.hosts["c"]
    assert site3.outbound_only and not cloud.sites["site1"].outbound_only
    listen(cloud, "c", port)  # something does listen on the peer port
    listen(cloud, "a", port)
    probe = "timeout 3 bash -c 'exec 3<>/dev/tcp/{}/{}' && echo open"
    probes = {  # from the other sites, all at once (each waits out its timeout)
        (src, target): cloud.start_command(src, probe.format(target, port))
        for src in ("a", "b")
        for target in (site3.public_address, c.address)
    }
    for target in (site3.public_address, c.address):
        assert not _tcp_connects(target, port), target
    for (src, target), cmd in probes.items():
        assert cmd.wait(30).stdout.strip() == "", (src, target)
    assert not _tcp_connects(site3.public_address, 22)
    # A public site's peer port is still reachable, from the controller and from site3.
    pub_a = cloud.sites["site1"].public_address
    assert _tcp_connects(pub_a, port)
    assert _tcp_connects_from(cloud, "c", pub_a, port)
    assert http_code(cloud, "c", f"http://{pub_a}:{port}/") == "200"
    log = cloud.run("a", f"journalctl -q -u lab-http-{port} --no-pager").stdout
    assert site3.public_address in log
    assert c.address not in log
    # The controller's management path stays (SSH), the lab describes the site.
    assert cloud.run("c", "systemctl is-system-running").stdout.strip() == "running"
    desc = cloud.status()
    assert desc["hosts"]["c"]["outbound_only"] is True
    assert desc["hosts"]["a"]["outbound_only"] is False
    assert desc["sites"]["site3"]["outbound_only"] is True
    state = json.loads((cloud.dir / "state.json").read_text())
    assert state["outbound_only"] == ["site3"]
    assert all("outbound_only" not in s for s in state["sites"])  # older lab code loads these
    inv = cloud.inventory_path.read_text()
    c_vars = inv.split("        c:\n", 1)[1]
    assert "clusterlink_inbound: false" in c_vars
    assert "clusterlink_advertise_address" not in c_vars
    assert 'clusterlink_peer_name: "site3"' in c_vars
    assert "clusterlink_inbound" not in inv.split("        c:\n", 1)[0]
    nft = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            cloud.router_netns,
            "nft",
            "list",
            "table",
            "ip",
            "clusterlink_lab",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"ip daddr {site3.public_address}" not in nft  # nothing DNATed to site3
    assert f"snat to {site3.public_address}" in nft


@lab_test
def test_cloud_destroy_leaves_nothing(cloud: Lab) -> None:
    cloud.destroy()
    assert_gone(cloud)
