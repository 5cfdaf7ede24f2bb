# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``clusterlink.fabric.peer`` with ``via`` (relays) against a real gateway: check mode, diff,
idempotence, the relays' order kept, removal (back to the stored form without ``via``), a
refused list (the peer named as its own relay, naming the field); and the peering role
writing ``via`` for two outbound-only sites that name a hub in ``clusterlink_relays``."""

from __future__ import annotations

from typing import Any

import pytest

from support.gateway import GatewayProcess, stored

from .conftest import Ansible
from .test_outbound_only import LOCAL

MODULE = "clusterlink.fabric.peer"


def _task(name: str, args: dict[str, Any], *, check: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        MODULE: {"name": "spoke-2", "dial": False, **args},
        "check_mode": check,
        "diff": True,
        "ignore_errors": name.startswith("bad"),
    }


@pytest.fixture(scope="module")
def gateway(start_gateway: Any) -> GatewayProcess:
    return start_gateway("spoke-1")


def test_via_lifecycle(gateway: GatewayProcess, ansible: Ansible) -> None:
    run = ansible.play(
        [
            {
                "hosts": "localhost",
                "gather_facts": False,
                "module_defaults": {
                    "group/clusterlink.fabric.gateway": {"socket": str(gateway.socket)}
                },
                "tasks": [
                    {"name": "hub hub-a", MODULE: {"name": "hub-a", "gateways": [{"host": "198.18.0.98"}]}},
                    {"name": "hub hub-b", MODULE: {"name": "hub-b", "gateways": [{"host": "198.18.0.99"}]}},
                    _task("create (check)", {"via": ["hub-a", "hub-b"]}, check=True),
                    _task("create", {"via": ["hub-a", "hub-b"]}),
                    _task("create again", {"via": ["hub-a", "hub-b"]}),
                    _task("reorder (check)", {"via": ["hub-b", "hub-a"]}, check=True),
                    _task("reorder", {"via": ["hub-b", "hub-a"]}),
                    _task("reorder again", {"via": ["hub-b", "hub-a"]}),
                    _task("bad own relay", {"via": ["hub-a", "spoke-2"]}),
                    _task("remove via", {}),
                    _task("remove via again", {"via": []}),
                ],
            }
        ]
    )  # fmt: skip
    assert run.returncode == 0, run.output[-4000:]

    check = run.result("create (check)")
    assert (check["changed"], check["operation"]) == (True, "create")
    assert check["diff"]["after"]["spec"]["via"] == ["hub-a", "hub-b"]
    created = run.result("create")
    assert created["changed"] and created["peer"]["spec"]["via"] == ["hub-a", "hub-b"]
    assert run.result("create again")["changed"] is False

    reorder = run.result("reorder (check)")
    assert reorder["operation"] == "update"
    assert reorder["diff"]["before"]["spec"]["via"] == ["hub-a", "hub-b"]
    assert reorder["diff"]["after"]["spec"]["via"] == ["hub-b", "hub-a"]
    assert run.result("reorder")["changed"] is True
    assert run.result("reorder")["peer"]["spec"]["via"] == ["hub-b", "hub-a"]
    assert run.result("reorder again")["changed"] is False

    bad = run.result("bad own relay")
    assert bad["failed"] and "via" in bad["msg"], bad
    # nothing half-applied: the next task still finds the reordered relays to remove

    removed = run.result("remove via")
    assert removed["diff"]["before"]["spec"]["via"] == ["hub-b", "hub-a"]
    assert removed["changed"] and "via" not in removed["peer"]["spec"]
    assert "via" not in removed["diff"]["after"]["spec"]
    assert run.result("remove via again")["changed"] is False
    [peer] = [p for p in stored(gateway.client, "peers") if p["name"] == "spoke-2"]
    assert peer["spec"] == {"dial": False, "gateways": []}


def test_the_peering_role_writes_via(start_gateway: Any, ansible: Ansible) -> None:
    """Two outbound-only sites and a hub, real daemons: the spokes' Peers of each other
    carry via: [hub] (the hub's own entry dropped); a second run changes nothing."""
    gws = {n: start_gateway(n) for n in ("hub", "edge-1", "edge-2")}
    hosts = {
        name: {
            "clusterlink_admin_socket": str(gw.socket),
            "clusterlink_advertise_address": "127.0.0.1",
            "clusterlink_port": gw.config["listen"]["port"],
            "clusterlink_relays": ["hub"],
            "clusterlink_wait_reachable": 0,
            **({"clusterlink_relay": True} if name == "hub" else {"clusterlink_inbound": False}),
        }
        for name, gw in gws.items()
    }
    play = {
        "name": "Peering",
        "hosts": "clusterlink_gateways",
        "gather_facts": False,
        "roles": ["clusterlink.fabric.peering"],
    }
    inventory = ansible.inventory(hosts)
    run = ansible.play([play], inventory=inventory, args=LOCAL)
    assert run.returncode == 0, run.output[-4000:]
    for own, other in (("edge-1", "edge-2"), ("edge-2", "edge-1")):
        peers = {p["name"]: p["spec"] for p in stored(gws[own].client, "peers")}
        assert peers[other] == {"dial": False, "gateways": [], "via": ["hub"]}
        assert "via" not in peers["hub"]
    assert all("via" not in p["spec"] for p in stored(gws["hub"].client, "peers"))
    again = ansible.play([play], inventory=inventory, args=LOCAL)
    assert again.returncode == 0 and again.changed() == 0, again.output[-4000:]
