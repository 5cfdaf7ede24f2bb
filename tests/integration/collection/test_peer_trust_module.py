"""``clusterlink.fabric.peer`` with ``trust.ca`` against a real gateway: check mode, diff
(fingerprints and subjects, never the PEM), idempotence with a bundle read by
``lookup('file')`` (trailing newline stripped), rotation, removal, and a refused bundle; and the
peering role passing ``clusterlink_peers[].trust`` on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.gateway import GatewayProcess
from support.pki import TestCA

from .conftest import RENDER_PEERS_PLAY, Ansible

MODULE = "clusterlink.fabric.peer"


def _task(name: str, args: dict[str, Any], *, check: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        MODULE: {"name": "partner", "gateways": [{"host": "203.0.113.9"}], **args},
        "check_mode": check,
        "diff": True,
        "ignore_errors": name.startswith("bad"),
    }


def _lookup(path: Path) -> str:
    return "{{ lookup('file', '" + str(path) + "') }}"


@pytest.fixture(scope="module")
def gateway(start_gateway: Any) -> GatewayProcess:
    return start_gateway("site-t")


def test_trust_ca_lifecycle(gateway: GatewayProcess, ansible: Ansible, tmp_path: Path) -> None:
    old = TestCA(tmp_path / "old", "partner-ca")
    new = TestCA(tmp_path / "new", "partner-ca-2")
    both = tmp_path / "both.pem"
    both.write_bytes(old.cert_pem() + new.cert_pem())
    key = tmp_path / "oops.pem"
    key.write_bytes(
        old.cert_pem() + b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
    )
    run = ansible.play(
        [
            {
                "hosts": "localhost",
                "gather_facts": False,
                "module_defaults": {
                    "group/clusterlink.fabric.gateway": {"socket": str(gateway.socket)}
                },
                "tasks": [
                    _task("create (check)", {"trust": {"ca": _lookup(old.ca_path)}}, check=True),
                    _task("create", {"trust": {"ca": _lookup(old.ca_path)}}),
                    _task("create again", {"trust": {"ca": _lookup(old.ca_path)}}),
                    _task("rotate (check)", {"trust": {"ca": _lookup(both)}}, check=True),
                    _task("rotate", {"trust": {"ca": _lookup(both)}}),
                    _task("rotate again", {"trust": {"ca": _lookup(both)}}),
                    _task("bad bundle", {"trust": {"ca": _lookup(key)}}),
                    _task("remove trust", {}),
                    _task("remove trust again", {}),
                ],
            }
        ]
    )
    assert run.returncode == 0, run.output[-4000:]
    old_fp = "sha256:" + old.fingerprint()
    new_fp = "sha256:" + new.fingerprint()

    check = run.result("create (check)")
    assert (check["changed"], check["operation"]) == (True, "create")
    assert check["diff"]["after"]["spec"]["trust"] == {"ca": [f"{old_fp} CN=partner-ca"]}
    assert "BEGIN CERTIFICATE" not in str(check["diff"])
    created = run.result("create")
    assert created["changed"] and created["peer"]["spec"]["trust"]["ca"] == old.cert_pem().decode()
    assert created["peer"]["status"]["trust"][0]["fingerprint_sha256"] == old.fingerprint()
    assert run.result("create again")["changed"] is False  # lookup stripped the newline

    rotate = run.result("rotate (check)")
    assert rotate["operation"] == "update"
    assert rotate["diff"]["before"]["spec"]["trust"]["ca"] == [f"{old_fp} CN=partner-ca"]
    assert rotate["diff"]["after"]["spec"]["trust"]["ca"] == [
        f"{old_fp} CN=partner-ca",
        f"{new_fp} CN=partner-ca-2",
    ]
    assert run.result("rotate")["changed"] is True
    assert run.result("rotate again")["changed"] is False

    bad = run.result("bad bundle")
    assert bad["failed"] and "spec.trust.ca" in bad["msg"] and "PRIVATE KEY" in bad["msg"]
    assert "c2VjcmV0" not in bad["msg"]

    removed = run.result("remove trust")
    assert removed["changed"] and "trust" not in removed["peer"]["spec"]
    assert "trust" not in removed["diff"]["after"]["spec"]
    assert run.result("remove trust again")["changed"] is False


def test_the_peering_role_passes_a_peers_trust_on(ansible: Ansible, tmp_path: Path) -> None:
    partner = TestCA(tmp_path / "partner", "partner-ca")
    item = {
        "name": "partner",
        "gateways": [{"host": "203.0.113.9", "port": 443}],
        "trust": {"ca": _lookup(partner.ca_path)},
    }
    host = {"clusterlink_advertise_address": "127.0.0.1", "clusterlink_port": 4443}
    hosts = {"site-a": {**host, "clusterlink_peers": [item]}, "site-b": host}
    run = ansible.play(
        [RENDER_PEERS_PLAY],
        inventory=ansible.inventory(hosts),
        args=("-e", "ansible_become=false"),
    )
    assert run.returncode == 0, run.output[-4000:]
    rendered = next(t for t in run.tasks if t["name"] == "Rendered peers")["hosts"]
    [peer] = rendered["site-a"]["__clusterlink_peering_peers"]
    assert peer["trust"]["ca"].strip() == partner.cert_pem().decode().strip()
    assert all("trust" not in p for p in rendered["site-b"]["__clusterlink_peering_peers"])
