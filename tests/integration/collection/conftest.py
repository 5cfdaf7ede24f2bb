# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real gateway daemons and real ansible-playbook runs for the admin-API modules and roles.

Nothing is mocked: each test module starts ``clusterlink-gateway`` processes (certificates
from a throwaway CA, admin socket and state in a temporary directory), writes playbooks and
inventories into ``tmp_path`` and runs ``ansible-playbook`` against localhost (connection
local, this interpreter) with the collection on ANSIBLE_COLLECTIONS_PATH. A small stdout
callback prints every task result as JSON, so tests assert on what the modules returned and,
independently, on what the daemon stored (through its own client, ``AdminClient``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
GATEWAY_TESTS = REPO / "gateway" / "tests"
if str(GATEWAY_TESTS) not in sys.path:
    sys.path.insert(0, str(GATEWAY_TESTS))

from support.gateway import GatewayProcess  # noqa: E402
from support.pki import TestCA  # noqa: E402

BIN = Path(sys.executable).parent

# The stdout callback: one JSON document with every task's per-host result, in order.
CALLBACK = """
from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "clusterlink_json"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.results.append({"name": task.get_name(), "hosts": {}})

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _add(self, result, **flags):
        data = dict(result._result)
        data.pop("_ansible_no_log", None)
        data.update(flags)
        self.results[-1]["hosts"][result._host.get_name()] = data

    def v2_runner_on_ok(self, result, **kwargs):
        self._add(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._add(result, failed=True)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._add(result, skipped=True)

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._add(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        totals = {h: stats.summarize(h) for h in sorted(stats.processed)}
        self._display.display(json.dumps({"tasks": self.results, "stats": totals}, default=str))
"""


# A play that runs the peering role's preflight, then shows the Peer objects it would write
# to each gateway (``__clusterlink_peering_peers``, from its vars/main.yml) in a task named
# "Rendered peers".
RENDER_PEERS_PLAY: dict[str, Any] = {
    "hosts": "clusterlink_gateways",
    "gather_facts": False,
    "tasks": [
        {
            "name": "Preflight",
            "ansible.builtin.import_role": {
                "name": "clusterlink.fabric.peering",
                "tasks_from": "preflight",
            },
        },
        {
            "name": "Rendered peers",
            "ansible.builtin.debug": {"var": "__clusterlink_peering_peers"},
        },
    ],
}


class Run:
    """The outcome of one ansible-playbook run."""

    def __init__(self, proc: subprocess.CompletedProcess[str], doc: dict[str, Any] | None):
        self.returncode = proc.returncode
        self.output = proc.stdout + proc.stderr
        self.tasks: list[dict[str, Any]] = (doc or {}).get("tasks", [])
        self.stats: dict[str, dict[str, int]] = (doc or {}).get("stats", {})

    def result(self, name: str, host: str = "localhost") -> dict[str, Any]:
        """The result of the task called ``name`` on ``host``."""
        for task in self.tasks:
            if task["name"] == name and host in task["hosts"]:
                return task["hosts"][host]
        raise KeyError(f"no result for task {name!r} on {host}:\n{self.output[-3000:]}")

    def changed(self, host: str | None = None) -> int:
        return sum(s["changed"] for h, s in self.stats.items() if host in (None, h))


class Ansible:
    """Writes playbooks and inventories into a directory and runs ansible-playbook on them."""

    def __init__(self, workdir: Path, collections: Path) -> None:
        self.workdir = workdir
        self.collections = collections
        self.count = 0
        self.config = workdir / "ansible.cfg"
        self.config.write_text("[defaults]\n")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(self.collections),
            ANSIBLE_CALLBACK_PLUGINS=str(self.collections / "callbacks"),
            ANSIBLE_STDOUT_CALLBACK="clusterlink_json",
            ANSIBLE_HOME=str(self.workdir / ".ansible"),
            ANSIBLE_LOCAL_TEMP=str(self.workdir / ".ansible" / "tmp"),
            ANSIBLE_REMOTE_TMP=str(self.workdir / ".ansible" / "remote"),
            ANSIBLE_CONFIG=str(self.config),
            ANSIBLE_PIPELINING="1",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_HOST_KEY_CHECKING="0",
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        return env

    def write(self, stem: str, data: Any) -> Path:
        self.count += 1
        path = self.workdir / f"{self.count:02d}-{stem}.json"
        path.write_text(json.dumps(data, indent=1))
        return path

    def inventory(self, hosts: dict[str, dict[str, Any]] | None = None) -> Path:
        base = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        hosts = hosts or {"localhost": {}}
        return self.write(
            "inventory",
            {
                "all": {
                    "vars": base,
                    "children": {"clusterlink_gateways": {"hosts": hosts}},
                }
            },
        )

    def play(
        self,
        plays: list[dict[str, Any]],
        *,
        inventory: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> Run:
        """Run plays; a list of tasks (no ``hosts`` key) becomes one play on localhost."""
        if plays and "hosts" not in plays[0]:
            plays = [{"hosts": "localhost", "gather_facts": False, "tasks": plays}]
        playbook = self.write("playbook", plays)
        command = [
            str(BIN / "ansible-playbook"),
            "-i",
            str(inventory or self.inventory()),
            str(playbook),
            *args,
        ]
        started = time.monotonic()
        proc = subprocess.run(
            command,
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        try:
            doc = json.loads(proc.stdout)
        except json.JSONDecodeError:
            doc = None
        run = Run(proc, doc)
        run.seconds = time.monotonic() - started
        if os.environ.get("CLUSTERLINK_TEST_TIMINGS"):
            print(f"ansible-playbook {playbook.name}: {run.seconds:.1f}s", file=sys.stderr)
        if doc is None:
            raise AssertionError(
                f"ansible-playbook printed no JSON (rc {proc.returncode}):\n{run.output[-5000:]}"
            )
        return run


@pytest.fixture(scope="session")
def collections_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ansible_collections/clusterlink/fabric -> this repository, plus the JSON callback."""
    root = tmp_path_factory.mktemp("collections")
    namespace = root / "ansible_collections" / "clusterlink"
    namespace.mkdir(parents=True)
    (namespace / "fabric").symlink_to(REPO, target_is_directory=True)
    (root / "callbacks").mkdir()
    (root / "callbacks" / "clusterlink_json.py").write_text(CALLBACK)
    return root


@pytest.fixture
def ansible(tmp_path: Path, collections_root: Path) -> Ansible:
    return Ansible(tmp_path, collections_root)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def start_gateway(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[Any]:
    """Start real gateway daemons (one per call) that are stopped when the module ends."""
    started: list[GatewayProcess] = []
    root = tmp_path_factory.mktemp("gateways")

    def start(
        name: str, peer_name: str | None = None, extra: dict[str, Any] | None = None
    ) -> GatewayProcess:
        config = {"log": {"level": "info"}, **(extra or {})}
        gw = GatewayProcess(root, name, ca, peer_name=peer_name, extra=config)
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.stop()
