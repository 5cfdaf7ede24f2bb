# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`molecule test` of extensions/molecule/default (lab hosts, converge, idempotence, testinfra).

Run: ``.venv/bin/python -m pytest -m lab tests/integration/lab_e2e/test_molecule.py`` (root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import Lab

from .support import REPO, can_run

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        not can_run() or shutil.which("molecule", path=str(Path(sys.executable).parent)) is None,
        reason="needs root, the lab's packages and molecule in the venv",
    ),
    pytest.mark.timeout(1200),
]


def test_molecule_default_scenario(tmp_path):
    bindir = Path(sys.executable).parent
    collections = tmp_path / "collections"
    (collections / "ansible_collections" / "clusterlink").mkdir(parents=True)
    (collections / "ansible_collections" / "clusterlink" / "fabric").symlink_to(REPO)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        PATH=f"{bindir}:{env.get('PATH', '')}",
        MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule"),
    )
    # The scenario's flat lab shares 198.18.0.0/24 with every other flat lab: wait for it.
    deadline = time.monotonic() + 900
    try:
        while True:
            proc = subprocess.run(
                [str(bindir / "molecule"), "test"],
                cwd=REPO / "extensions", env=env, capture_output=True, text=True,
                timeout=1100, check=False,
            )  # fmt: skip
            out = proc.stdout + proc.stderr
            if proc.returncode == 0 or "already assigned" not in out:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(10)
        assert proc.returncode == 0, out[-15000:]
        for step in ("converge", "idempotence", "verify"):
            assert step in out, out[-5000:]
        assert " passed" in out, out[-5000:]
    finally:
        Lab("molecule").destroy()
