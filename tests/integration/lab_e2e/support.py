# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared helpers of the lab end-to-end tests: a lab, an inventory of our own, playbook runs.

The inventory is a directory written by the test (``hosts.yml`` from the lab's addresses and
key, ``group_vars``/``host_vars`` as JSON, which is YAML), so that a scenario can change the
inventory and re-run a playbook as an operator would. Only Ansible and real clients on the
hosts (curl, python3) are used to act and observe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.lab import Lab, create_when_free

REPO = Path(__file__).resolve().parents[3]
NEEDS = ("systemd-nspawn", "debootstrap", "nft", "ip", "ssh")
UNIT = "clusterlink-gateway"
GWCTL = "/opt/clusterlink/current/venv/bin/gwctl --socket /run/clusterlink/admin.sock"
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def can_run() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in NEEDS)


def create_lab(name: str, hosts: list[str], wait: float = 900, **kw: Any) -> Lab:
    """Create the lab, waiting while another flat lab holds the shared subnet. The name gets
    the prefix CLUSTERLINK_LAB_NAME_PREFIX (if set), so parallel runs can tell their labs apart."""
    name = os.environ.get("CLUSTERLINK_LAB_NAME_PREFIX", "") + name
    return create_when_free(name, wait, hosts=hosts, **kw)


def ansible_env(workdir: Path) -> dict[str, str]:
    """This process's environment with Ansible confined to ``workdir`` (no user config) and
    this checkout installed there as the collection clusterlink.fabric."""
    collections = workdir / "collections"
    namespace = collections / "ansible_collections" / "clusterlink"
    namespace.mkdir(parents=True)
    (namespace / "fabric").symlink_to(REPO, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_CONFIG=str(workdir / "ansible.cfg"),
        ANSIBLE_HOME=str(workdir / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-local"),
        ANSIBLE_PIPELINING="1",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_FORKS="10",
    )
    (workdir / "ansible.cfg").touch()
    return env


class Fabric:
    """A lab plus an inventory directory and ansible-playbook runs with the collection."""

    def __init__(self, lab: Lab, workdir: Path, fabric_name: str) -> None:
        self.lab = lab
        self.workdir = workdir
        self.inventory = workdir / "inventory"
        (self.inventory / "group_vars").mkdir(parents=True)
        (self.inventory / "host_vars").mkdir()
        self.pki_dir = workdir / "pki"
        self.env = ansible_env(workdir)
        self.group_vars: dict[str, Any] = {
            "clusterlink_fabric_name": fabric_name,
            "clusterlink_pki_dir": str(self.pki_dir),
            "clusterlink_log_format": "text",
        }
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.members: list[str] = list(lab.hosts)
        self.timings: list[str] = []

    # ----- inventory ---------------------------------------------------------------------
    def write_inventory(self) -> None:
        st = self.lab.status()
        hosts = {}
        for name in self.members:
            h = st["hosts"][name]
            hv = {
                "ansible_host": h["address"],
                "ansible_user": "root",
                "ansible_ssh_private_key_file": st["key"],
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                "-o UserKnownHostsFile=/dev/null",
                "ansible_python_interpreter": "/usr/bin/python3",
            }
            if h.get("site"):
                hv["clusterlink_peer_name"] = h["site"]
                if h.get("outbound_only"):  # nobody can dial it: it needs no address
                    hv["clusterlink_inbound"] = False
                else:
                    hv["clusterlink_advertise_address"] = h["public_address"]
            hosts[name] = hv
        doc = {"all": {"children": {"clusterlink_gateways": {"hosts": hosts}}}}
        (self.inventory / "hosts.yml").write_text(json.dumps(doc, indent=1))
        (self.inventory / "group_vars" / "clusterlink_gateways.yml").write_text(
            json.dumps(self.group_vars, indent=1)
        )
        for f in (self.inventory / "host_vars").iterdir():
            f.unlink()
        for name, hv in self.host_vars.items():
            (self.inventory / "host_vars" / f"{name}.yml").write_text(json.dumps(hv, indent=1))

    # ----- ansible ------------------------------------------------------------------------
    def playbook(
        self, playbook: str | Path, *args: str, timeout: float = 900, check: bool = True
    ) -> tuple[dict[str, dict[str, int]], str]:
        """Run a playbook (a name under playbooks/ or a path); return (recap, output)."""
        self.write_inventory()
        path = Path(playbook)
        if not path.is_absolute():
            path = REPO / "playbooks" / f"{playbook}.yml"
        command = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(self.inventory), str(path), *args,
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.run(
            command, cwd=REPO, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        output = proc.stdout + proc.stderr
        self.timings.append(f"{path.name} {' '.join(args)}: {time.monotonic() - started:.0f}s")
        recap = {
            m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
            for m in RECAP.finditer(proc.stdout)
        }
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ansible-playbook {path.name} failed (rc={proc.returncode}):\n"
                f"{output[-12000:]}\n{self.journal()}"
            )
        return recap, output

    # ----- hosts ----------------------------------------------------------------------------
    def sh(self, host: str, command: str, check: bool = True, timeout: float = 60) -> str:
        proc = self.lab.run(host, command, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{host}: {command}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    def gwctl(self, host: str, args: str) -> str:
        return self.sh(host, f"{GWCTL} {args}")

    def peers(self, host: str) -> dict[str, dict[str, Any]]:
        """Peer objects of a host's gateway, by name (from gwctl -o json)."""
        data = json.loads(self.gwctl(host, "-o json get peers"))
        items = data if isinstance(data, list) else data.get("items", data.get("peers", []))
        return {p["name"]: p for p in items}

    def reachable(self, host: str) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for name, p in self.peers(host).items():
            status = p.get("status") or {}
            out[name] = bool(status.get("reachable"))
        return out

    def start_web(self, host: str, text: str, port: int = 8080) -> None:
        """A web server on 127.0.0.1:port of host whose index says ``text``."""
        self.sh(host, f"mkdir -p /srv/web && printf '%s\\n' {text} > /srv/web/index.html")
        self.sh(host, f"systemctl stop web-{port} 2>/dev/null; true", check=False)
        self.sh(
            host,
            f"systemd-run -q --unit=web-{port} python3 -m http.server {port} "
            f"--bind 127.0.0.1 --directory /srv/web",
        )

    def get(self, host: str, port: int, path: str = "/index.html", timeout: float = 5) -> str:
        """One HTTP GET from host to 127.0.0.1:port; the body, or 'ERR <curl exit> <msg>'."""
        proc = self.lab.run(
            host, f"curl -sS -m {timeout} http://127.0.0.1:{port}{path}", timeout=timeout + 30
        )
        if proc.returncode != 0:
            return f"ERR {proc.returncode} {proc.stderr.strip()}"
        return proc.stdout.strip()

    def denied(self, host: str, port: int) -> str:
        """A GET through an import whose connection the gateways refuse by policy (at either
        end): the importer accepts, then resets the client. curl reports that as exit 56, or as
        exit 7 when the reset arrives before it has seen its own connect complete (a busy
        host); the import's listener must be up, so that a missing listener never passes for
        a denial. Returns the curl result."""
        got = self.get(host, port)
        listening = self.sh(host, f"ss -Htln 'sport = :{port}'", check=False)
        assert f":{port} " in listening, (got, listening)
        assert got.startswith(("ERR 56", "ERR 7")), got
        return got

    def gets(self, host: str, port: int, n: int) -> list[str]:
        """n sequential GETs (a new connection each) from a Python client on the host."""
        script = (
            "import socket,sys\n"
            f"for _ in range({n}):\n"
            "    try:\n"
            f"        s=socket.create_connection(('127.0.0.1',{port}),timeout=5)\n"
            "        s.sendall(b'GET /index.html HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')\n"
            "        data=b''\n"
            "        while True:\n"
            "            c=s.recv(65536)\n"
            "            if not c: break\n"
            "            data+=c\n"
            "        s.close()\n"
            "        body=data.split(b'\\r\\n\\r\\n',1)[1].decode().strip() if data else 'EMPTY'\n"
            "        print(body or 'EMPTY')\n"
            "    except Exception as e:\n"
            "        print('ERR',type(e).__name__)\n"
            "    sys.stdout.flush()\n"
        )
        proc = self.lab.run(host, "python3 -", input=script, timeout=n * 6 + 30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split("\n")[:-1]

    def wait(self, what: str, fn: Callable[[], Any], timeout: float = 60, every: float = 1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = fn()
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")

    def journal(self, hosts: Iterable[str] | None = None, lines: int = 30) -> str:
        parts = []
        for host in hosts or self.members:
            out = self.lab.run(host, f"journalctl -u {UNIT} --no-pager -n {lines}", timeout=30)
            parts.append(f"--- journal of {UNIT} on {host}:\n{out.stdout}")
        return "\n".join(parts)


LOOP_SCRIPT = """
import socket, sys, time
port, out, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
end = time.time() + seconds
with open(out, "w", buffering=1) as f:
    while time.time() < end:
        t = time.time()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /index.html HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
            data = b""
            while c := s.recv(65536):
                data += c
            s.close()
            body = data.partition(b"\\r\\n\\r\\n")[2].decode().strip()
            result = body or "ERR empty"
        except Exception as e:
            result = f"ERR {type(e).__name__}"
        f.write(f"{t:.3f} {result}\\n")
        time.sleep(0.1)
"""


class ClientLoop:
    """A client on a lab host looping GETs (a new connection each, 10 s timeout) to a local
    port in a transient unit; every request is logged with its start time (host clock)."""

    def __init__(self, fab: Fabric, host: str, port: int, name: str = "loop") -> None:
        self.fab, self.host, self.port, self.name = fab, host, port, name

    def start(self, seconds: float = 900) -> ClientLoop:
        lab, unit = self.fab.lab, self.name
        lab.run(self.host, f"cat > /root/{unit}.py", input=LOOP_SCRIPT, timeout=30)
        self.fab.sh(
            self.host,
            f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null; rm -f /root/{unit}.txt; true",
        )
        self.fab.sh(
            self.host,
            f"systemd-run -q --unit={unit} python3 /root/{unit}.py {self.port} /root/{unit}.txt {seconds}",
        )
        return self

    def results(self) -> list[tuple[float, str]]:
        """(start time, body or 'ERR ...') of every finished request so far."""
        out = self.fab.sh(self.host, f"cat /root/{self.name}.txt", check=False)
        return [(float(t), r) for t, _, r in (line.partition(" ") for line in out.splitlines())]

    def stop(self) -> list[tuple[float, str]]:
        self.fab.sh(self.host, f"systemctl stop {self.name}", check=False)
        return self.results()


def no_failures(counts: Mapping[str, Mapping[str, int]]) -> bool:
    return all(c["failed"] == 0 and c["unreachable"] == 0 for c in counts.values())


def key_body_lines(pem: str) -> list[str]:
    """The base64 lines of every PRIVATE KEY block in a PEM text."""
    lines, inside = [], False
    for line in pem.splitlines():
        if line.startswith("-----BEGIN") and "PRIVATE KEY" in line:
            inside = True
        elif line.startswith("-----END"):
            inside = False
        elif inside and line.strip() and ":" not in line:
            lines.append(line.strip())
    return lines


def assert_no_private_key(fab: Fabric, hosts: Iterable[str], output: str) -> None:
    """Neither a PEM private-key marker nor any line of the real keys' base64 bodies (each
    gateway's key on its host, every key in the controller's PKI directory, the CA's
    included) appears in ``output`` (a playbook's ``-vvv --diff`` output)."""
    assert len(output) > 100_000, "expected -vvv output"
    keys: dict[str, list[str]] = {}
    for h in hosts:
        keys[f"{h}:gateway.key"] = key_body_lines(fab.sh(h, "cat /etc/clusterlink/tls/gateway.key"))
    for path in sorted(fab.pki_dir.rglob("*")):
        if path.is_file() and "PRIVATE KEY" in path.read_text(errors="replace"):
            keys[str(path)] = key_body_lines(path.read_text())
    assert any("ca" in name.lower() for name in keys if name.startswith("/")), keys.keys()
    assert all(len(v) >= 2 for v in keys.values()), keys
    assert "PRIVATE KEY" not in output
    leaks = [
        (name, line)
        for name, lines in keys.items()
        for line in lines
        if len(line) >= 16 and line in output
    ]
    assert not leaks, leaks
