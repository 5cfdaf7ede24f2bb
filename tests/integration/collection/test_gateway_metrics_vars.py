# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway role's metrics variables, rendered for real into gateway.yaml (connection local,
no host changed) and loaded by the gateway's own config loader: off by default; enabled, the
config has ``metrics: {address, port}`` and nothing else new (no TLS, no admin listener)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterlink_gateway.config import load_config

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
ROLE = REPO / "roles" / "gateway"
PLAYBOOK = f"""
- hosts: all
  gather_facts: false
  vars_files:
    - {ROLE}/defaults/main.yml
    - {ROLE}/vars/main.yml
  tasks:
    - ansible.builtin.template:
        src: {ROLE}/templates/gateway.yaml.j2
        dest: "{{{{ out }}}}"
        mode: "0600"
    - ansible.builtin.debug:
        msg: "CAPS[{{{{ __clusterlink_gateway_capabilities }}}}]"
"""


def render(tmp_path: Path, **extra: Any) -> tuple[dict[str, Any], str]:
    (tmp_path / "pb.yml").write_text(PLAYBOOK)
    out = tmp_path / "gateway.yaml"
    (tmp_path / "vars.json").write_text(json.dumps({"out": str(out), **extra}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "gw1,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", f"@{tmp_path / 'vars.json'}", str(tmp_path / "pb.yml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    caps = next(line for line in proc.stdout.splitlines() if '"msg": "CAPS' in line)
    return yaml.safe_load(out.read_text()), caps.split("CAPS[", 1)[1].rsplit("]", 1)[0]


def test_metrics_listener_is_off_by_default(tmp_path: Path) -> None:
    config, _ = render(tmp_path)
    assert "metrics" not in config
    assert load_config(tmp_path / "gateway.yaml").metrics is None


@pytest.mark.parametrize(
    ("extra", "address", "port"),
    [
        ({"clusterlink_metrics_enabled": True, "clusterlink_port": 8443}, "127.0.0.1", 9469),
        (
            {
                "clusterlink_metrics_enabled": True,
                "clusterlink_metrics_address": "10.0.0.5",
                "clusterlink_metrics_port": "9100",
                "clusterlink_port": 8443,
            },
            "10.0.0.5",
            9100,
        ),
    ],
)
def test_enabled_metrics_listener_is_address_and_port_only(
    tmp_path: Path, extra: dict[str, Any], address: str, port: int
) -> None:
    config, caps = render(tmp_path, **extra)
    assert config["metrics"] == {"address": address, "port": port}
    assert "tcp" not in config["admin"]
    loaded = load_config(tmp_path / "gateway.yaml")
    assert loaded.metrics is not None and loaded.metrics.tls is None
    assert (loaded.metrics.address, loaded.metrics.port) == (address, port)
    assert caps == ""  # no capability for ports above 1024 (and none left as whitespace)


def test_privileged_metrics_port_gets_the_bind_capability(tmp_path: Path) -> None:
    _, caps = render(
        tmp_path,
        clusterlink_port=8443,
        clusterlink_metrics_enabled=True,
        clusterlink_metrics_port=443,
        clusterlink_metrics_address="10.0.0.5",
    )
    assert caps == "CAP_NET_BIND_SERVICE"
