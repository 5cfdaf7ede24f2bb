# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tools/check_role_variables.py on small fake roles, and on the repository's own roles."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / "tools" / "check_role_variables.py"
_spec = importlib.util.spec_from_file_location("check_role_variables", TOOL)
checker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checker)

SPECS = """\
argument_specs:
  main:
    options:
      demo_used: {type: str, default: a}
      demo_unused: {type: str, default: b}
      demo_in_playbook: {type: str, default: c}
"""
DEFAULTS = "demo_used: a\ndemo_unused: b\ndemo_in_playbook: c\n"
TASKS = """\
- name: Use variables
  ansible.builtin.debug:
    msg: "{{ demo_used }} {{ clusterlink_undocumented }} {{ clusterlink_shared }}"
  register: clusterlink_registered
  tags: [clusterlink_some_tag]
- name: Set a fact
  ansible.builtin.set_fact:
    clusterlink_fact: 1
- name: Use them
  ansible.builtin.debug:
    msg: "{{ clusterlink_registered }} {{ clusterlink_fact }} {{ __clusterlink_internal }}"
"""
DOCS = """\
# Inventory
## Inventory contract
| `clusterlink_shared` | shared |
## Role demo
| `clusterlink_undocumented` | not the contract section: does not count |
"""


def make_role(tmp_path: Path, specs: str = SPECS) -> tuple[Path, Path, Path]:
    roles = tmp_path / "roles"
    role = roles / "demo"
    for name, text in {
        "meta/argument_specs.yml": specs,
        "defaults/main.yml": DEFAULTS,
        "tasks/main.yml": TASKS,
    }.items():
        path = role / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "use.yml").write_text(
        "- hosts: all\n  tasks:\n    - ansible.builtin.import_role:\n"
        "        name: clusterlink.fabric.demo\n      vars:\n        demo_in_playbook: x\n",
        encoding="utf-8",
    )
    docs = tmp_path / "inventory.md"
    docs.write_text(DOCS, encoding="utf-8")
    return roles, playbooks, docs


def test_unused_and_undocumented_variables_are_reported(tmp_path: Path) -> None:
    roles, playbooks, docs = make_role(tmp_path)
    problems = checker.check_role(roles / "demo", checker.documented_names(docs), playbooks)
    assert problems == [
        "demo: demo_unused is documented in roles/demo/meta/argument_specs.yml "
        "but the role never uses it",
        "demo: clusterlink_undocumented is used in roles/demo/tasks/main.yml but is not in "
        "the role's argument specs nor in docs/inventory.md",
    ]


def test_command_line_exit_status(tmp_path: Path) -> None:
    roles, playbooks, docs = make_role(tmp_path)
    args = [sys.executable, str(TOOL), "--docs", str(docs), "--playbooks", str(playbooks)]
    bad = subprocess.run([*args, str(roles)], capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "demo_unused" in bad.stderr and "clusterlink_undocumented" in bad.stderr
    # Documented in the spec and used: clean.
    (roles / "demo" / "meta" / "argument_specs.yml").write_text(
        SPECS.replace("demo_unused: {type: str, default: b}", "clusterlink_undocumented: {}"),
        encoding="utf-8",
    )
    (roles / "demo" / "defaults" / "main.yml").write_text(
        "demo_used: a\ndemo_in_playbook: c\n", encoding="utf-8"
    )
    good = subprocess.run([*args, str(roles)], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stderr
    assert "0 problem(s)" in good.stdout


def test_repository_roles_are_clean() -> None:
    run = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
