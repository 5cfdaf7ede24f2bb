# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Platforms proven: the two_hosts example on Debian 12 + 13, and a Debian 11 host refused.

One lab, booted once for the module: ``east`` (Debian 12, Python 3.11), ``west`` (Debian 13,
Python 3.13) and ``old`` (Debian 11, Python 3.9 only). The collection is built and installed
with ``ansible-galaxy collection install`` into an empty collections path, and
``clusterlink.fabric.site`` runs by FQCN from an empty directory (no checkout anywhere on the
path), with ``inventories/two_hosts`` copied as it is: only the addresses, the SSH user and
key are the lab's (and the ``old`` host is added for the first test).

* With ``old`` in the inventory the run fails in preflight, naming ``old``, its Python 3.9 and
  what to do, and no host (nor the controller's CA directory) is touched.
* Without it, the mixed fabric deploys, each host's gateway runs on its own Python, and a
  client on west reaches "PostgreSQL" on east (a TCP echo server on 127.0.0.1:5432) at
  127.0.0.1:5432, as the example's comments promise and its policies allow.
* west runs systemd-resolved (east does not): the role wired the import names into it as a
  split-DNS drop-in, and a client on west reaches the database by name.
* Then, on the same fabric, what an operator relies on after a deploy: the service runs
  hardened as its own user on both releases, a second ``site`` changes nothing,
  ``status`` (strict) passes, ``rotate_certificates`` renews without a restart, and
  ``uninstall`` leaves nothing behind.

Run: ``.venv/bin/python -m pytest -m lab tests/integration/platforms`` (root).
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration.galaxy import BIN, REPO, build_and_install
from tests.integration.lab_e2e.support import RECAP, can_run, create_lab
from tests.lab import Lab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not can_run(), reason="lab tests need root and the lab's packages"),
    pytest.mark.timeout(900),
]

EXAMPLE = REPO / "inventories" / "two_hosts"
FABRIC = ["east", "west"]
UNIT = "clusterlink-gateway"
GWCTL = "/opt/clusterlink/current/venv/bin/gwctl --socket /run/clusterlink/admin.sock"
# systemd-analyze security exposure of the unit (measured 1.2-1.4 on Debian 12's systemd 252
# with the default port 443); the test fails if a change makes it worse.
MAX_EXPOSURE = 1.4
IMAGES = {"east": "bookworm", "west": "trixie", "old": "bullseye"}
PYTHONS = {"east": "3.11", "west": "3.13", "old": "3.9"}
# What the gateway and pki roles put on a host: none of it may exist after a refused run.
FOOTPRINT = (
    "/opt/clusterlink",
    "/etc/clusterlink",
    "/var/lib/clusterlink",
    "/etc/systemd/system/clusterlink-gateway.service",
    "/etc/systemd/system/clusterlink-names.path",
    "/etc/systemd/system/clusterlink-names.service",
    "/etc/systemd/resolved.conf.d/clusterlink.conf",
    "/usr/local/bin/gwctl",
)
ECHO_SERVER = """
import socket, sys
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = srv.accept()
    with conn:
        conn.sendall(b"postgres-stand-in " + conn.recv(4096))
"""
CLIENT = """
import socket, sys
host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
s = socket.create_connection((host, 5432), timeout=5)
s.sendall(sys.argv[1].encode())
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(4096):
    data += chunk
print(data.decode())
"""


@dataclass
class Controller:
    """The lab, the installed collection and a fresh controller home (its CA directory)."""

    lab: Lab
    env: dict[str, str]
    home: Path
    workdir: Path
    timings: dict[str, float]

    def inventory(self, hosts: list[str]) -> Path:
        """inventories/two_hosts copied as it is, with the lab's addresses, user and key."""
        inv = self.workdir / f"inventory-{'-'.join(hosts)}"
        shutil.rmtree(inv, ignore_errors=True)
        shutil.copytree(EXAMPLE, inv)
        doc = yaml.safe_load((inv / "hosts.yml").read_text())
        group = doc["all"]["children"]["clusterlink_gateways"]
        st = self.lab.status()
        group["hosts"] = {
            h: {**(group["hosts"].get(h) or {}), "ansible_host": st["hosts"][h]["address"]}
            for h in hosts
        }
        group["vars"].update(
            ansible_user="root",
            ansible_ssh_private_key_file=st["key"],
            ansible_ssh_common_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        )
        (inv / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
        return inv

    def site(
        self, inventory: Path, label: str, playbook: str = "site", *args: str
    ) -> subprocess.CompletedProcess[str]:
        """``ansible-playbook clusterlink.fabric.<playbook>`` by FQCN, from an empty directory."""
        cwd = self.workdir / "empty"
        cwd.mkdir(exist_ok=True)
        started = time.monotonic()
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(inventory),
             f"clusterlink.fabric.{playbook}", *args],
            cwd=cwd, env=self.env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        self.timings[label] = time.monotonic() - started
        return proc

    def sh(self, host: str, command: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.lab.run(host, command, timeout=60, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    lab = create_lab(f"platforms-{secrets.token_hex(2)}", list(IMAGES), images=IMAGES)
    timings["lab"] = time.monotonic() - started
    try:
        work = tmp_path_factory.mktemp("platforms")
        started = time.monotonic()
        _, _, env = build_and_install(work)
        timings["build+install"] = time.monotonic() - started
        # A controller home of its own: the fabric CA goes to ~/.clusterlink/pki/<fabric> and
        # must not touch the real one; the wheel cache is shared (downloads are slow).
        home = work / "home"
        (home / ".cache").mkdir(parents=True)
        real_cache = Path.home() / ".cache" / "clusterlink"
        real_cache.mkdir(parents=True, exist_ok=True)
        (home / ".cache" / "clusterlink").symlink_to(real_cache, target_is_directory=True)
        env.update(HOME=str(home), ANSIBLE_FORKS="10", ANSIBLE_PIPELINING="1")
        yield Controller(lab, env, home, work, timings)
    finally:
        lab.destroy()
        print("\nplatforms timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))


def footprint(controller: Controller, host: str) -> str:
    """What the roles left on ``host`` (files, user, group); empty if nothing."""
    return controller.sh(
        host,
        " ; ".join(f"test -e {p} && echo {p}" for p in FOOTPRINT)
        + " ; getent passwd clusterlink ; getent group clusterlink ; true",
    ).stdout.strip()


def test_hosts_are_the_releases_we_claim(controller: Controller) -> None:
    for host, python in PYTHONS.items():
        out = controller.sh(
            host, "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"
        )
        assert out.stdout.strip() == python, (host, out)


def test_unfit_host_fails_preflight_and_nothing_is_touched(controller: Controller) -> None:
    proc = controller.site(controller.inventory(["east", "west", "old"]), "site with old")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-6000:]
    failed = {m["host"]: int(m["failed"]) for m in RECAP.finditer(proc.stdout)}
    assert failed.get("old") == 1, out[-6000:]
    # The message names the host, the Python found and what to do.
    line = next((x for x in out.splitlines() if "fatal: [old]" in x), "")
    assert "old (Debian 11" in line and "found Python 3.9 (/usr/bin/python3)" in line, out[-6000:]
    assert "python3.11" in line and "clusterlink_gateway_system_python" in line, line
    # It failed up front: no later play started, on any host.
    assert "Deploy the ClusterLink gateways" not in out, out[-6000:]
    for host in IMAGES:
        assert footprint(controller, host) == "", host
    assert not (controller.home / ".clusterlink").exists(), "a fabric CA was made"


def test_debian_12_and_13_fabric_carries_the_example_traffic(controller: Controller) -> None:
    proc = controller.site(controller.inventory(["east", "west"]), "site east+west")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-12000:]
    # Each gateway runs from a virtualenv of its host's own Python (3.11 on 12, 3.13 on 13).
    for host in ("east", "west"):
        python = controller.sh(host, "readlink -f /opt/clusterlink/current/venv/bin/python")
        assert python.stdout.strip() == f"/usr/bin/python{PYTHONS[host]}", (host, python)
        assert controller.sh(host, "systemctl is-active clusterlink-gateway").returncode == 0
    assert (controller.home / ".clusterlink" / "pki" / "clusterlink").is_dir()

    # "PostgreSQL" on east (host_vars/east.yml: export db at 127.0.0.1:5432).
    controller.sh("east", "cat > /root/echo.py", input=ECHO_SERVER)
    started = controller.sh("east", "systemd-run -q --unit=pg-standin python3 /root/echo.py 5432")
    assert started.returncode == 0, started.stderr
    # An application on west connects to 127.0.0.1:5432 (host_vars/west.yml).
    controller.sh("west", "cat > /root/client.py", input=CLIENT)
    token = secrets.token_hex(6)
    deadline = time.monotonic() + 90
    last = None
    while time.monotonic() < deadline:
        last = controller.sh("west", f"python3 /root/client.py {token}")
        if last.returncode == 0 and last.stdout.strip() == f"postgres-stand-in {token}":
            break
        time.sleep(2)
    else:
        journal = controller.sh("west", "journalctl -u clusterlink-gateway --no-pager -n 40")
        raise AssertionError(f"west -> east db failed: {last}\n{journal.stdout}")


def test_import_name_through_systemd_resolved_on_debian_13(controller: Controller) -> None:
    """west (Debian 13) runs systemd-resolved: the role chose its split-DNS drop-in, not the
    /etc/hosts block; an application there reaches the database by name, through the stub
    resolver (127.0.0.53) asking the gateway for ``~clusterlink.internal``. east (Debian 12,
    no systemd-resolved) got the /etc/hosts way."""
    assert controller.sh("west", "systemctl is-active systemd-resolved").stdout.strip() == "active"
    dropin = controller.sh("west", "cat /etc/systemd/resolved.conf.d/clusterlink.conf").stdout
    assert "Domains=~clusterlink.internal" in dropin and "DNS=127.0.0.1:" in dropin, dropin
    assert "clusterlink" not in controller.sh("west", "cat /etc/hosts").stdout
    assert controller.sh("west", "systemctl is-enabled clusterlink-names.path").returncode != 0
    status = controller.sh("west", "resolvectl status").stdout
    assert "~clusterlink.internal" in status, status
    found = controller.sh("west", "getent hosts db.clusterlink.internal")
    assert found.returncode == 0 and found.stdout.split()[0] == "127.0.0.1", found
    token = secrets.token_hex(6)
    by_name = controller.sh("west", f"python3 /root/client.py {token} db.clusterlink.internal")
    assert by_name.stdout.strip() == f"postgres-stand-in {token}", by_name
    assert controller.sh("west", "getent hosts nope.clusterlink.internal").returncode != 0
    assert controller.sh("east", "systemctl is-active systemd-resolved").stdout.strip() != "active"
    assert controller.sh("east", "systemctl is-enabled clusterlink-names.path").returncode == 0


def recap(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of a successful run: {host: {ok, changed, unreachable, failed}}."""
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-12000:]
    return {
        m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
        for m in RECAP.finditer(proc.stdout)
    }


def db_round_trip(controller: Controller) -> str:
    """One request from west's client to east's "database"; its answer."""
    token = secrets.token_hex(6)
    out = controller.sh("west", f"python3 /root/client.py {token}")
    return "ok" if out.stdout.strip() == f"postgres-stand-in {token}" else repr(out)


@pytest.mark.parametrize("host", FABRIC)
def test_service_runs_hardened_as_clusterlink(controller: Controller, host: str) -> None:
    def sh(command: str) -> str:
        out = controller.sh(host, command)
        assert out.returncode == 0, (command, out.stderr)
        return out.stdout

    assert sh(f"systemctl is-active {UNIT}").strip() == "active"
    assert sh(f"systemctl is-enabled {UNIT}").strip() == "enabled"
    pid = sh(f"systemctl show -p MainPID --value {UNIT}").strip()
    assert sh(f"ps -o user:32= -o group:32= -p {pid}").split() == ["clusterlink", "clusterlink"]
    # Only CAP_NET_BIND_SERVICE (bit 10), ambient and effective; bounding set the same.
    status = sh(f"cat /proc/{pid}/status")
    caps = dict(re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", status, re.MULTILINE))
    assert int(caps["CapBnd"], 16) == 1 << 10, caps
    assert int(caps["CapEff"], 16) == 1 << 10, caps
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE)
    assert re.search(r"^Seccomp:\s+2$", status, re.MULTILINE)
    security = sh(f"systemd-analyze security --no-pager {UNIT}")
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security)[1])
    print(f"\n{host} ({IMAGES[host]}): systemd-analyze security exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, security
    verify = controller.sh(host, f"systemd-analyze verify /etc/systemd/system/{UNIT}.service")
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr

    passwd = sh("getent passwd clusterlink").strip().split(":")
    assert passwd[6] == "/usr/sbin/nologin"
    assert controller.sh(host, f"test -e '{passwd[5]}'").returncode != 0  # no home directory

    def stat(path: str) -> list[str]:
        return sh(f"stat -c '%a %U %G' {path}").split()

    assert stat("/etc/clusterlink/tls/gateway.key") == ["600", "clusterlink", "clusterlink"]
    assert stat("/etc/clusterlink/gateway.yaml") == ["640", "root", "clusterlink"]
    assert stat("/etc/clusterlink") == ["750", "root", "clusterlink"]
    assert stat("/var/lib/clusterlink") == ["750", "clusterlink", "clusterlink"]
    assert stat("/run/clusterlink/admin.sock") == ["660", "clusterlink", "clusterlink"]
    assert stat("/etc/systemd/system/clusterlink-gateway.service") == ["644", "root", "root"]

    out = sh(f"{GWCTL} status")
    assert f"gateway {host}" in out and "ready yes" in out, out
    # gwctl as a member of the group clusterlink, without root, and from the PATH.
    out = sh(f"setpriv --reuid=nobody --regid=clusterlink --clear-groups {GWCTL} status")
    assert "ready yes" in out, out
    assert "ready yes" in sh("cd / && PATH=/usr/local/bin:/usr/bin:/bin gwctl status")


def test_second_site_run_changes_nothing(controller: Controller) -> None:
    counts = recap(controller.site(controller.inventory(FABRIC), "site again"))
    assert {h: c["changed"] for h, c in counts.items()} == dict.fromkeys(FABRIC, 0), counts


def test_status_playbook_strict(controller: Controller) -> None:
    proc = controller.site(
        controller.inventory(FABRIC), "status", "status", "-e", "clusterlink_status_strict=true"
    )
    assert all(c["changed"] == 0 for c in recap(proc).values())


def test_rotate_certificates_without_restart(controller: Controller) -> None:
    def sh(host: str, command: str) -> str:
        return controller.sh(host, command).stdout.strip()

    before = {h: sh(h, "sha256sum /etc/clusterlink/tls/gateway.crt") for h in FABRIC}
    pids = {h: sh(h, f"systemctl show -p MainPID --value {UNIT}") for h in FABRIC}
    recap(controller.site(controller.inventory(FABRIC), "rotate", "rotate_certificates"))
    for h in FABRIC:
        assert sh(h, "sha256sum /etc/clusterlink/tls/gateway.crt") != before[h], h
        assert sh(h, f"systemctl show -p MainPID --value {UNIT}") == pids[h], h
        assert "configuration reloaded" in sh(h, f"journalctl -u {UNIT} --no-pager -n 50")
    assert db_round_trip(controller) == "ok"


def test_uninstall_leaves_nothing_on_either_release(controller: Controller) -> None:
    """uninstall switches back to the host's own Python (discovered again, as
    clusterlink_gateway_system_python is empty) before the virtualenv goes."""
    controller.sh("east", "systemctl stop pg-standin")
    proc = controller.site(
        controller.inventory(FABRIC), "uninstall", "uninstall",
        "-e", "clusterlink_uninstall_all=true",
    )  # fmt: skip
    recap(proc)
    for host in FABRIC:
        assert footprint(controller, host) == "", host
        units = controller.sh(host, f"systemctl list-unit-files --no-legend {UNIT}.service")
        assert UNIT not in units.stdout
        assert "could not be found" in controller.sh(host, f"systemctl status {UNIT}").stderr
        left = controller.sh(
            host, "ls -d /run/clusterlink /etc/systemd/system/*/clusterlink* 2>/dev/null"
        )
        assert left.stdout.strip() == "", left.stdout
        hosts = controller.sh(host, "cat /etc/hosts 2>/dev/null").stdout
        assert "clusterlink.fabric import names" not in hosts, hosts
        # Nothing listens any more on the peer port (443) or the import port (5432).
        listening = controller.sh(host, "cat /proc/net/tcp /proc/net/tcp6").stdout
        assert not re.search(r":(01BB|1538) 00000000:0000 0A", listening), listening
