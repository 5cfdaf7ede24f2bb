# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deploy the collection to real hosts of the lab with its playbooks, as an operator would.

One flat lab with hosts a and b (``tests/lab``), the inventory the lab writes plus
``inventories/lab`` (b exports ``web``, a imports it on port 8080, a policy allows lab
sites). The tests run in file order on the same lab: site.yml from bare hosts, the result
on the hosts (service, user, hardening, modes, gwctl), traffic from a to b through the
gateways, a second site.yml that changes nothing, status.yml, rotate_certificates.yml, and
uninstall.yml that leaves nothing behind. The lab is destroyed at the end, whatever happens.

Run: ``.venv/bin/python -m pytest -m lab tests/integration/deploy`` (root; the lab's Debian
packages). The controller needs PyPI (or pip's configured index) the first time, to
download the gateway's dependencies for the hosts; later runs use the wheel cache.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import Lab, create_when_free

from ..lab_e2e.support import ansible_env

REPO = Path(__file__).resolve().parents[3]
NEEDS = ("systemd-nspawn", "debootstrap", "nft", "ip", "ssh")

# systemd-analyze security exposure measured for the unit on the lab's Debian 12 (systemd
# 252) with the default port 443; the test fails if a change makes it worse.
MAX_EXPOSURE = 1.4

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        os.geteuid() != 0 or any(shutil.which(t) is None for t in NEEDS),
        reason=f"deploy tests need root and {', '.join(NEEDS)}",
    ),
    pytest.mark.timeout(900),
]

RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)
HOSTS = ("a", "b")
UNIT = "clusterlink-gateway"
GWCTL = "/opt/clusterlink/current/venv/bin/gwctl --socket /run/clusterlink/admin.sock"


class Deployment:
    """The lab, and ansible-playbook runs against it with the collection on the path."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        # A snapshot of the gateway's source, so that every run of this file builds the same
        # release even if the working tree changes meanwhile.
        self.source = workdir / "gateway"
        shutil.copytree(
            REPO / "gateway",
            self.source,
            ignore=shutil.ignore_patterns(
                "build", "dist", "tests", "*.egg-info", "__pycache__", ".pytest_cache"
            ),
        )
        self.env = ansible_env(workdir)
        self.extra_vars = [
            "-e", f"clusterlink_pki_dir={workdir / 'pki'}",
            "-e", f"clusterlink_gateway_source={self.source}",
        ]  # fmt: skip
        self.log: list[str] = []

    def playbook(self, name: str, *args: str, timeout: float = 600) -> dict[str, dict[str, int]]:
        """Run playbooks/NAME.yml; return the recap {host: {ok, changed, failed, ...}}."""
        command = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(self.lab.inventory_path),
            "-i", str(REPO / "inventories" / "lab"),
            str(REPO / "playbooks" / f"{name}.yml"),
            *self.extra_vars,
            *args,
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.run(
            command,
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = proc.stdout + proc.stderr
        self.log.append(f"{name} {' '.join(args)}: {time.monotonic() - started:.0f}s")
        recap = {
            m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
            for m in RECAP.finditer(proc.stdout)
        }
        if proc.returncode != 0 or set(recap) != set(HOSTS):
            raise AssertionError(
                f"ansible-playbook {name} failed (rc={proc.returncode}):\n{output[-12000:]}"
                f"\n{self.journal()}"
            )
        return recap

    def sh(self, host: str, command: str, check: bool = True) -> str:
        proc = self.lab.run(host, command, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {command}: rc={proc.returncode}\n{proc.stderr}")
        return proc.stdout

    def journal(self) -> str:
        parts = []
        for host in HOSTS:
            out = self.lab.run(host, f"journalctl -u {UNIT} --no-pager -n 40", timeout=30)
            parts.append(f"--- journal of {UNIT} on {host}:\n{out.stdout}")
        return "\n".join(parts)


def create_lab(name: str, wait: float = 600) -> Lab:
    """Create the lab, waiting while another flat lab holds the shared subnet."""
    return create_when_free(name, wait, hosts=list(HOSTS), topology="flat")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    lab = create_lab(f"dep-{secrets.token_hex(3)}")
    try:
        yield Deployment(lab, tmp_path_factory.mktemp("deploy"))
    finally:
        lab.destroy()


# ----- from bare hosts to connectivity ---------------------------------------------------
def test_site_from_bare_hosts(deployment):
    recap = deployment.playbook("site")
    for host, counts in recap.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, (host, counts)
        assert counts["changed"] > 0, (host, counts)


@pytest.mark.parametrize("host", HOSTS)
def test_service_runs_hardened_as_clusterlink(deployment, host):
    d = deployment
    assert d.sh(host, f"systemctl is-active {UNIT}").strip() == "active"
    assert d.sh(host, f"systemctl is-enabled {UNIT}").strip() == "enabled"
    pid = d.sh(host, f"systemctl show -p MainPID --value {UNIT}").strip()
    owner = d.sh(host, f"ps -o user:32= -o group:32= -p {pid}").split()
    assert owner == ["clusterlink", "clusterlink"], owner
    # Only CAP_NET_BIND_SERVICE (bit 10), ambient and effective; bounding set the same.
    status = d.sh(host, f"cat /proc/{pid}/status")
    caps = dict(re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", status, re.MULTILINE))
    assert int(caps["CapBnd"], 16) == 1 << 10, caps
    assert int(caps["CapEff"], 16) == 1 << 10, caps
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE)
    assert re.search(r"^Seccomp:\s+2$", status, re.MULTILINE)

    security = d.sh(host, f"systemd-analyze security --no-pager {UNIT}")
    exposure = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security)[1])
    assert exposure <= MAX_EXPOSURE, security
    verify = d.lab.run(host, f"systemd-analyze verify /etc/systemd/system/{UNIT}.service")
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr

    passwd = d.sh(host, "getent passwd clusterlink").strip().split(":")
    assert passwd[6] == "/usr/sbin/nologin"
    assert d.lab.run(host, f"test -e '{passwd[5]}'").returncode != 0  # no home directory

    def stat(path):
        return d.sh(host, f"stat -c '%a %U %G' {path}").split()

    assert stat("/etc/clusterlink/tls/gateway.key") == ["600", "clusterlink", "clusterlink"]
    assert stat("/etc/clusterlink/gateway.yaml") == ["640", "root", "clusterlink"]
    assert stat("/etc/clusterlink") == ["750", "root", "clusterlink"]
    assert stat("/var/lib/clusterlink") == ["750", "clusterlink", "clusterlink"]
    assert stat("/run/clusterlink/admin.sock") == ["660", "clusterlink", "clusterlink"]
    assert stat("/etc/systemd/system/clusterlink-gateway.service") == ["644", "root", "root"]

    out = d.sh(host, f"{GWCTL} status")
    assert f"gateway {host}" in out and "ready yes" in out, out
    # gwctl as a member of the group clusterlink, without root.
    out = d.sh(host, f"setpriv --reuid=nobody --regid=clusterlink --clear-groups {GWCTL} status")
    assert "ready yes" in out, out
    # ... and from the PATH: the role links it to the current release.
    assert "ready yes" in d.sh(host, "cd / && PATH=/usr/local/bin:/usr/bin:/bin gwctl status")


def test_traffic_from_a_to_b_through_the_gateways(deployment):
    d = deployment
    token = secrets.token_hex(8)
    d.sh("b", f"mkdir -p /srv/web && echo {token} > /srv/web/index.html")
    d.sh(
        "b",
        "systemd-run -q --unit=demo-web python3 -m http.server 8080 "
        "--bind 127.0.0.1 --directory /srv/web",
    )
    got, deadline = "", time.monotonic() + 60
    while time.monotonic() < deadline:
        got = d.lab.run("a", "curl -s -m 5 http://127.0.0.1:8080/index.html", timeout=30).stdout
        if got.strip() == token:
            break
        time.sleep(1)
    assert got.strip() == token, f"{got!r}\n{d.sh('a', f'{GWCTL} status')}"


def test_second_site_run_changes_nothing(deployment):
    recap = deployment.playbook("site")
    assert {h: c["changed"] for h, c in recap.items()} == dict.fromkeys(HOSTS, 0), recap


def test_status_playbook(deployment):
    recap = deployment.playbook("status", "-e", "clusterlink_status_strict=true")
    assert all(c["changed"] == 0 for c in recap.values()), recap


def test_rotate_certificates_without_restart(deployment):
    d = deployment
    before = {h: d.sh(h, "sha256sum /etc/clusterlink/tls/gateway.crt").split()[0] for h in HOSTS}
    pids = {h: d.sh(h, f"systemctl show -p MainPID --value {UNIT}").strip() for h in HOSTS}
    deployment.playbook("rotate_certificates")
    for h in HOSTS:
        assert d.sh(h, "sha256sum /etc/clusterlink/tls/gateway.crt").split()[0] != before[h]
        assert d.sh(h, f"systemctl show -p MainPID --value {UNIT}").strip() == pids[h]
        assert "configuration reloaded" in d.sh(h, f"journalctl -u {UNIT} --no-pager -n 50")
    out = d.lab.run("a", "curl -s -m 5 http://127.0.0.1:8080/index.html", timeout=30).stdout
    assert out.strip(), "no traffic after the rotation"


def test_uninstall_leaves_no_trace(deployment):
    d = deployment
    d.sh("b", "systemctl stop demo-web", check=False)
    deployment.playbook("uninstall", "-e", "clusterlink_uninstall_all=true")
    for host in HOSTS:
        assert d.lab.run(host, "getent passwd clusterlink").returncode != 0
        assert d.lab.run(host, "getent group clusterlink").returncode != 0
        units = d.sh(host, f"systemctl list-unit-files --no-legend {UNIT}.service", check=False)
        assert UNIT not in units
        assert "could not be found" in d.lab.run(host, f"systemctl status {UNIT}").stderr
        left = d.sh(
            host,
            "ls -d /opt/clusterlink /etc/clusterlink /var/lib/clusterlink /run/clusterlink "
            "/etc/systemd/system/clusterlink* /etc/systemd/system/*/clusterlink* "
            "/usr/local/bin/gwctl 2>/dev/null",
            check=False,
        )
        assert left.strip() == "", left
        # Nothing listens any more on the peer port or the import port.
        listening = d.sh(host, "cat /proc/net/tcp /proc/net/tcp6")
        assert not re.search(r":(01BB|1F90) 00000000:0000 0A", listening), listening
    print("\n".join(deployment.log))
