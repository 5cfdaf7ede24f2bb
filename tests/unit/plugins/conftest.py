# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the collection's modules and roles for real, through ansible-playbook on localhost.

Nothing is mocked: every test writes a playbook, runs ``ansible-playbook`` (connection local,
the interpreter of this test run) with the collection on ANSIBLE_COLLECTIONS_PATH, and looks
at the JSON callback's per-task results and at the files the modules wrote.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# Interpreter that runs the modules. Default: this one. Point it at another environment to
# check the modules with another Python or cryptography, e.g. Debian bookworm's 38.0.4.
TARGET_PYTHON = os.environ.get("CLUSTERLINK_TEST_TARGET_PYTHON") or sys.executable

# ansible-core has no JSON stdout callback (that one is in ansible.posix), so the tests bring a
# small one: every task result of every host, in order, plus the stats, as one JSON document.
CALLBACK = """
from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase
from ansible.vars.clean import strip_internal_keys


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'results_json'

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tasks = []

    def _start(self, task):
        self.tasks.append({'task': {'name': task.get_name()}, 'hosts': {}})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task)

    def _record(self, result, **extra):
        data = getattr(result, 'result', None)
        if data is None:
            data = result._result
        data = strip_internal_keys(dict(data))
        data.update(extra)
        self.tasks[-1]['hosts'][result._host.get_name()] = data

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        doc = {'plays': [{'tasks': self.tasks}], 'stats': summary}
        self._display.display(json.dumps(doc, default=str))
"""


def _ansible_playbook():
    script = Path(sys.executable).parent / "ansible-playbook"
    if script.exists():
        return [str(script)]
    found = shutil.which("ansible-playbook")
    if found:
        return [found]
    return [sys.executable, "-m", "ansible.cli.playbook"]


@pytest.fixture(scope="session")
def collections_path(tmp_path_factory):
    """A collections tree whose clusterlink/fabric is this repository (a symlink)."""
    root = tmp_path_factory.mktemp("collections")
    namespace = root / "ansible_collections" / "clusterlink"
    namespace.mkdir(parents=True)
    (namespace / "fabric").symlink_to(REPO, target_is_directory=True)
    callbacks = root / "callback_plugins"
    callbacks.mkdir()
    (callbacks / "results_json.py").write_text(CALLBACK)
    return root


class Runner:
    """Writes and runs playbooks in one work directory."""

    def __init__(self, workdir, collections_path):
        self.workdir = Path(workdir)
        self.collections_path = collections_path
        self.count = 0
        self.last_output = ""

    def env(self, json_output):
        env = dict(os.environ)
        for key in [k for k in env if k.startswith("ANSIBLE_")]:
            del env[key]
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(self.collections_path),
            ANSIBLE_LOCAL_TEMP=str(self.workdir / ".ansible-local"),
            ANSIBLE_REMOTE_TMP=str(self.workdir / ".ansible-remote"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_DEPRECATION_WARNINGS="0",
            ANSIBLE_CONFIG=str(self.workdir / "ansible.cfg"),
            ANSIBLE_HOME=str(self.workdir / ".ansible-home"),
            ANSIBLE_PIPELINING="1",
        )
        if json_output:
            env["ANSIBLE_CALLBACK_PLUGINS"] = str(self.collections_path / "callback_plugins")
            env["ANSIBLE_STDOUT_CALLBACK"] = "results_json"
        return env

    def inventory(self, hosts=None, group_vars=None):
        """Inventory of local hosts (default: one host, localhost)."""
        hosts = hosts or {"localhost": {}}
        data = {
            "all": {
                "children": {
                    "clusterlink_gateways": {
                        "hosts": hosts,
                        "vars": dict(
                            {
                                "ansible_connection": "local",
                                "ansible_python_interpreter": TARGET_PYTHON,
                            },
                            **(group_vars or {}),
                        ),
                    }
                }
            }
        }
        self.count += 1
        path = self.workdir / f"inventory-{self.count}.json"
        path.write_text(json.dumps(data))
        return path

    def run(
        self, plays, *args, hosts=None, group_vars=None, json_output=True, check=None, env=None
    ):
        """Run plays (a list of play dicts, or a list of tasks for one play on all hosts).

        Returns the completed process; with json_output, ``.tasks`` is a list of
        (task name, {host: result}) and ``.stats`` the per-host totals.
        """
        if plays and "tasks" not in plays[0] and "roles" not in plays[0]:
            plays = [{"hosts": "all", "gather_facts": False, "tasks": plays}]
        self.count += 1
        playbook = self.workdir / f"playbook-{self.count}.json"
        playbook.write_text(json.dumps(plays))
        (self.workdir / "ansible.cfg").touch()
        command = [
            *_ansible_playbook(),
            "-i",
            str(self.inventory(hosts, group_vars)),
            str(playbook),
            *args,
        ]
        if check:
            command.append("--check")
        proc = subprocess.run(
            command,
            cwd=self.workdir,
            env=dict(self.env(json_output), **(env or {})),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.last_output = proc.stdout + proc.stderr
        proc.tasks, proc.stats = [], {}
        if json_output:
            try:
                doc = json.loads(proc.stdout)
            except json.JSONDecodeError as exc:
                raise AssertionError(f"no JSON from ansible-playbook:\n{self.last_output}") from exc
            for play in doc["plays"]:
                for task in play["tasks"]:
                    proc.tasks.append((task["task"]["name"], task["hosts"]))
            proc.stats = doc["stats"]
        return proc

    def ok(self, plays, *args, **kwargs):
        """Run and require success; return {task name: result of the first host} plus the proc."""
        proc = self.run(plays, *args, **kwargs)
        assert proc.returncode == 0, self.last_output
        return proc

    @staticmethod
    def four_steps(task, name):
        """The community.crypto pattern: the same task in check mode, real, check mode, real."""
        return [
            dict(task, name=f"{name} {i}", check_mode=check)
            for i, check in enumerate([True, False, True, False], start=1)
        ]

    def changes(self, proc, name, host="localhost", steps=4):
        return [self.result(proc, f"{name} {i}", host)["changed"] for i in range(1, steps + 1)]

    def assert_four_steps(self, proc, name, host="localhost"):
        assert self.changes(proc, name, host) == [True, True, False, False], self.last_output

    @staticmethod
    def result(proc, name, host="localhost"):
        for task_name, hosts in proc.tasks:
            if task_name == name:
                return hosts[host]
        raise KeyError(f"no task {name!r} in {[task for task, _hosts in proc.tasks]}")


@pytest.fixture(scope="session")
def new_runner(collections_path):
    """Factory: a Runner working in a given directory (for fixtures wider than a test)."""
    return lambda workdir: Runner(workdir, collections_path)


@pytest.fixture
def runner(tmp_path, collections_path):
    return Runner(tmp_path, collections_path)


@pytest.fixture(scope="session")
def unprivileged_user():
    """(user, group) of an unprivileged account that exists here, for ownership tests."""
    if os.geteuid() != 0:
        pytest.skip("changing file owners needs root")
    for user in ("nobody", "daemon"):
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            continue
        return entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name
    pytest.skip("no unprivileged user on this machine")
    return None


def _handshake(directory, server, client, server_ca="ca.crt", client_ca="ca.crt", server_name=None):
    """One loopback connection with mutual TLS 1.3: ``server`` serves, ``client`` connects.

    Certificates and keys are ``<name>.crt`` / ``<name>.key`` in ``directory`` (or absolute
    paths). Both sides require and verify the other's certificate; the client sends SNI and
    checks the server's name (``server_name``, default ``server``). Returns (server side,
    client side) dicts, each with ``error`` or the peer certificate and TLS version.
    """
    directory = Path(directory)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_cert_chain(directory / f"{server}.crt", directory / f"{server}.key")
    server_ctx.load_verify_locations(directory / server_ca)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    client_ctx.load_cert_chain(directory / f"{client}.crt", directory / f"{client}.key")
    client_ctx.load_verify_locations(directory / client_ca)

    server_side = {}

    def sni(_sslobj, name, _ctx):
        server_side["sni"] = name

    server_ctx.sni_callback = sni
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        try:
            conn = listener.accept()[0]
            conn.settimeout(10)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                server_side.update(peer=tls.getpeercert(), version=tls.version())
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            server_side["error"] = str(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_side = {}
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as sock,
            client_ctx.wrap_socket(sock, server_hostname=server_name or Path(server).name) as tls,
        ):
            client_side.update(peer=tls.getpeercert(), version=tls.version(), data=tls.recv(2))
    except (OSError, ssl.SSLError) as exc:
        client_side["error"] = str(exc)
    thread.join(10)
    listener.close()
    return server_side, client_side


@pytest.fixture(scope="session")
def tls_handshake():
    return _handshake
