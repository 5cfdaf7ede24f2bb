# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The install path of docs/install.md, for real on this machine (no lab, no network).

``ansible-galaxy collection build`` makes the tarball from the repository,
``ansible-galaxy collection install`` puts it into an empty collections path, and the
playbooks then resolve by FQCN (``clusterlink.fabric.site``) with only that path on
ANSIBLE_COLLECTIONS_PATH: no checkout is involved.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.integration.galaxy import BIN, build_and_install

# Far above the collection's own size (sources, docs, gateway/): catches a .venv, a lab image
# or caches slipping into the tarball.
MAX_TARBALL_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(tarball, collections path, environment) after a build and an install."""
    return build_and_install(tmp_path_factory.mktemp("install"))


def test_tarball_is_small_and_clean(installed: tuple[Path, Path, dict[str, str]]) -> None:
    tarball, _, _ = installed
    assert tarball.stat().st_size < MAX_TARBALL_BYTES, tarball.stat().st_size
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    bad = [
        n
        for n in names
        if any(
            part in (".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "dist")
            or part.endswith((".egg-info", ".pyc", ".tar.gz"))
            for part in Path(n).parts
        )
    ]
    assert not bad, bad[:20]
    for needed in ("playbooks/site.yml", "roles/gateway/tasks/main.yml", "gateway/pyproject.toml",
                   "docs/inventory.md", "docs/install.md", "docs/examples/grafana-dashboard.json",
                   "docs/examples/prometheus.yml"):  # fmt: skip
        assert needed in names, needed


def test_site_playbook_resolves_by_fqcn_without_checkout(
    installed: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    _, collections, env = installed
    root = collections / "ansible_collections" / "clusterlink" / "fabric"
    assert (root / "MANIFEST.json").is_file()
    assert not root.is_symlink()
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    clusterlink_gateways:\n      hosts:\n"
        "        east: {ansible_host: 192.0.2.10}\n        west: {ansible_host: 198.51.100.20}\n",
        encoding="utf-8",
    )
    # Run from an empty directory: no ansible.cfg, no roles/ or playbooks/ next to it.
    for playbook in ("clusterlink.fabric.site", "clusterlink.fabric.status"):
        run = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(inventory), "--syntax-check", playbook],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
    # The role documentation comes from the installed copy as well.
    doc = subprocess.run(
        [str(BIN / "ansible-doc"), "-t", "role", "clusterlink.fabric.gateway"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert doc.returncode == 0, doc.stderr
    assert "clusterlink_admin_socket" in doc.stdout
