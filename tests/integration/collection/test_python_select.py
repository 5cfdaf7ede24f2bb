# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway role's choice of the host's Python (tasks/python_select.yml), run for real.

The role's preflight entry point runs against localhost (connection local). The candidate
interpreters are small scripts that answer the role's probe like a Python of a given version
would (with or without venv), so every branch is exercised on one machine: the system Python
first, then the newest installed one, a distribution package where the platform has one, and
the refusals naming the host, the Python found and what to do. The lab test
tests/integration/platforms runs the same code against real Debian 11, 12 and 13 hosts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: clusterlink.fabric.gateway
        tasks_from: preflight
    - ansible.builtin.debug:
        msg: "CHOICE {{ {'python': __clusterlink_gateway_system_python,
                         'install': __clusterlink_gateway_python_install} | to_json }}"
"""


def fake_python(directory: Path, name: str, version: str, venv: bool) -> str:
    """A script answering the probe ("<path> <version> <venv>") like that Python would."""
    path = directory / name
    path.write_text(f'#!/bin/sh\necho "$3 {version} {int(venv)}"\n')
    path.chmod(0o755)
    return str(path)


def run(tmp_path: Path, **extra: object) -> tuple[dict[str, object] | None, str]:
    """Run the preflight with ``extra`` vars; (the choice, or None if it failed; output)."""
    (tmp_path / "pb.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    collections = tmp_path / "collections"
    link = collections / "ansible_collections" / "clusterlink" / "fabric"
    if not link.exists():
        link.parent.mkdir(parents=True)
        link.symlink_to(REPO, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", "clusterlink_gateway_manage_service=false",
         "-e", f"@{tmp_path / 'vars.json'}", str(tmp_path / "pb.yml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    for line in out.splitlines():
        if '"msg": "CHOICE ' in line:
            raw = json.loads("{" + line.strip().rstrip(",") + "}")["msg"][len("CHOICE ") :]
            assert proc.returncode == 0, out
            return json.loads(raw), out
    assert proc.returncode != 0, out
    return None, out


@pytest.fixture
def pythons(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "bin"
    d.mkdir()
    return {
        "py39": fake_python(d, "python3.9", "3.9", True),
        "py312-novenv": fake_python(d, "python3.12", "3.12", False),
        "py313": fake_python(d, "python3.13", "3.13", True),
        "py311": fake_python(d, "python3.11", "3.11", True),
    }


def test_system_python_first_when_new_enough(tmp_path: Path, pythons: dict[str, str]) -> None:
    cands = [pythons["py311"], pythons["py313"]]
    choice, _ = run(tmp_path, __clusterlink_gateway_python_auto_candidates=cands)
    assert choice == {"python": pythons["py311"], "install": []}


def test_old_system_python_falls_back_to_an_installed_newer_one(
    tmp_path: Path, pythons: dict[str, str]
) -> None:
    cands = [pythons["py39"], "/nonexistent/python3.13", pythons["py313"]]
    choice, _ = run(tmp_path, __clusterlink_gateway_python_auto_candidates=cands)
    assert choice == {"python": pythons["py313"], "install": []}


def test_missing_venv_installs_the_venv_package(tmp_path: Path, pythons: dict[str, str]) -> None:
    if not Path("/etc/debian_version").exists():
        pytest.skip("the venv package name is Debian's")
    cands = [pythons["py39"], pythons["py312-novenv"]]
    choice, _ = run(tmp_path, __clusterlink_gateway_python_auto_candidates=cands)
    assert choice == {"python": pythons["py312-novenv"], "install": ["python3.12-venv"]}


def test_distribution_package_when_no_python_is_new_enough(
    tmp_path: Path, pythons: dict[str, str]
) -> None:
    """The platform table is keyed by distribution (EL family) and major version; here every
    Debian, Ubuntu and EL key carries a package, as Ubuntu 22.04's does."""
    table = {
        key: {"python": "/usr/bin/python3.11", "packages": ["python3.11", "python3.11-venv"]}
        for key in (f"{d}-{v}" for d in ("Debian", "Ubuntu", "RedHat") for v in range(8, 30))
    }
    choice, _ = run(
        tmp_path,
        __clusterlink_gateway_python_auto_candidates=[pythons["py39"]],
        __clusterlink_gateway_python_packages_by_platform=table,
    )
    assert choice == {
        "python": "/usr/bin/python3.11",
        "install": ["python3.11", "python3.11-venv"],
    }


def test_no_usable_python_is_refused_with_the_fix(tmp_path: Path, pythons: dict[str, str]) -> None:
    choice, out = run(
        tmp_path,
        __clusterlink_gateway_python_auto_candidates=[pythons["py39"]],
        __clusterlink_gateway_python_packages_by_platform={},
    )
    assert choice is None
    line = next(x for x in out.splitlines() if x.startswith("fatal: [localhost]"))
    assert f"found Python 3.9 ({pythons['py39']})" in line, line
    assert "localhost (" in line and "Python >= 3.11" in line, line
    assert "python3.11" in line and "set clusterlink_gateway_system_python" in line, line


def test_explicit_python_is_used_or_refused(tmp_path: Path, pythons: dict[str, str]) -> None:
    choice, _ = run(tmp_path, clusterlink_gateway_system_python=pythons["py313"])
    assert choice == {"python": pythons["py313"], "install": []}
    choice, out = run(tmp_path, clusterlink_gateway_system_python=pythons["py39"])
    assert choice is None
    assert f"clusterlink_gateway_system_python={pythons['py39']} is not such a Python" in out
    choice, out = run(tmp_path, clusterlink_gateway_system_python="/nonexistent/python3")
    assert choice is None
    assert "found no Python at /nonexistent/python3" in out
