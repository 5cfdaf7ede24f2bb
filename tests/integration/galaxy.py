# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The install path of docs/install.md, shared by the tests that use it.

``ansible-galaxy collection build`` makes the tarball from this checkout and
``ansible-galaxy collection install`` puts it into an empty collections path; the returned
environment has only that path on ANSIBLE_COLLECTIONS_PATH (no checkout, no user config).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def galaxy_env(work: Path) -> dict[str, str]:
    """This process's environment without ANSIBLE_* settings, Ansible confined to ``work``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(work / "collections"),
        ANSIBLE_LOCAL_TEMP=str(work / "tmp"),
        ANSIBLE_HOME=str(work / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
    )
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def build_and_install(work: Path) -> tuple[Path, Path, dict[str, str]]:
    """(tarball, collections path, environment) after a build and an install into ``work``."""
    env = galaxy_env(work)
    subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work), str(REPO)],
        cwd=work, env=env, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    tarballs = sorted(work.glob("clusterlink-fabric-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(work / "collections"),
         str(tarballs[0])],
        cwd=work, env=env, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    root = work / "collections" / "ansible_collections" / "clusterlink" / "fabric"
    assert (root / "MANIFEST.json").is_file() and not root.is_symlink(), root
    return tarballs[0], work / "collections", env
