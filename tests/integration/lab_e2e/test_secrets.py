# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""No private key material in Ansible's output, even with -vvv --diff.

site.yml runs twice on a two-host lab (from bare hosts, then again) with ``-vvv --diff``;
afterwards the real keys are read (each gateway's key on its host, every key in the
controller's PKI directory, the CA key included) and neither the PEM marker nor any line of
their base64 bodies may appear in the output.

Run: ``.venv/bin/python -m pytest -m lab tests/integration/lab_e2e/test_secrets.py`` (root).
"""

from __future__ import annotations

import secrets

import pytest

from .support import Fabric, can_run, create_lab, no_failures

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not can_run(), reason="lab tests need root and the lab's packages"),
    pytest.mark.timeout(900),
]

HOSTS = ["a", "b"]


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


def test_no_private_key_in_verbose_diff_output(tmp_path):
    lab = create_lab(f"sec-{secrets.token_hex(3)}", HOSTS)
    try:
        fab = Fabric(lab, tmp_path, f"sec-{secrets.token_hex(3)}")
        fab.group_vars.update(
            clusterlink_peer_labels={"env": "lab"},
            clusterlink_policies=[{"name": "allow-all", "action": "allow"}],
        )
        fab.host_vars["b"] = {"clusterlink_exports": [{"name": "web", "port": 8080}]}
        fab.host_vars["a"] = {
            "clusterlink_imports": [{"name": "web", "port": 8080, "sources": [{"peer": "b"}]}]
        }
        outputs = []
        for _ in range(2):
            recap, out = fab.playbook("site", "-vvv", "--diff")
            assert set(recap) == set(HOSTS) and no_failures(recap), recap
            outputs.append(out)
        # rotate_certificates makes new keys? It re-issues certificates; run it too.
        recap, out = fab.playbook("rotate_certificates", "-vvv", "--diff")
        assert no_failures(recap), recap
        outputs.append(out)
        output = "\n".join(outputs)
        assert len(output) > 100_000, "expected -vvv output"

        keys: dict[str, list[str]] = {}
        for h in HOSTS:
            pem = fab.sh(h, "cat /etc/clusterlink/tls/gateway.key")
            keys[f"{h}:gateway.key"] = key_body_lines(pem)
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
    finally:
        lab.destroy()
