# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Relays in the inventory (``clusterlink_relays``, ``clusterlink_relay``), issue [7] point 4.

* The peering role's rendering: on an outbound-only site, a peer that is itself outbound-only
  (no direct path either way) gets ``via`` = ``clusterlink_relays`` minus the two ends, in
  order; peers with a direct path (the hubs, and every peer of a hub) are unchanged. Checked
  on a two-outbound-only + hub inventory and on the hub-and-spoke shape (two hubs, three
  spokes).
* site.yml's first play (read-only preflight) stops, before any change, a run with a relay
  that is not a site of the inventory, an outbound-only relay, a relay without
  ``clusterlink_relay: true``, two outbound-only sites without relays, and a relay that does
  not peer with both ends (or an end that does not peer with its relay), naming the
  variable and the host.

Only controller-side tasks run (connection local, no gateway).
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from .conftest import RENDER_PEERS_PLAY, REPO, Ansible
from .test_outbound_only import LOCAL, _host, _refused


def _rendered(ansible: Ansible, hosts: dict[str, dict[str, Any]]) -> dict[str, list[dict]]:
    run = ansible.play([RENDER_PEERS_PLAY], inventory=ansible.inventory(hosts), args=LOCAL)
    assert run.returncode == 0, run.output[-4000:]
    rendered = next(t for t in run.tasks if t["name"] == "Rendered peers")["hosts"]
    return {h: r["__clusterlink_peering_peers"] for h, r in rendered.items()}


def _hub(**extra: Any) -> dict[str, Any]:
    return _host(clusterlink_relay=True, **extra)


def _edge(**extra: Any) -> dict[str, Any]:
    return _host(clusterlink_inbound=False, **extra)


def _by_name(peers: list[dict]) -> dict[str, dict]:
    return {p["name"]: p for p in peers}


def test_two_outbound_only_sites_peer_via_the_hub(ansible: Ansible) -> None:
    relays = {"clusterlink_relays": ["hub"]}
    hosts = {
        "hub": _hub(clusterlink_port=4441, **relays),  # a shared list names the hub itself
        "edge-1": _edge(**relays),
        "edge-2": _edge(**relays),
    }
    peers = _rendered(ansible, hosts)
    hub = {"name": "hub", "labels": {}, "gateways": [{"host": "127.0.0.1", "port": 4441}]}
    assert peers["edge-1"] == [
        {"name": "edge-2", "labels": {}, "gateways": [], "dial": False, "via": ["hub"]},
        {**hub, "dial": True},
    ]
    assert peers["edge-2"] == [
        {"name": "edge-1", "labels": {}, "gateways": [], "dial": False, "via": ["hub"]},
        {**hub, "dial": True},
    ]
    # The hub reaches both over their reverse links: nothing relayed there.
    assert peers["hub"] == [
        {"name": "edge-1", "labels": {}, "gateways": [], "dial": False},
        {"name": "edge-2", "labels": {}, "gateways": [], "dial": False},
    ]


def test_hub_and_spoke_shape(ansible: Ansible) -> None:
    """Two hubs, three outbound-only spokes, one shared relay list (in its order)."""
    relays = {"clusterlink_relays": ["hub-b", "hub-a"]}
    hosts = {
        "hub-a": _hub(clusterlink_port=4441, **relays),
        "hub-b": _hub(clusterlink_port=4442, **relays),
        **{f"spoke-{i}": _edge(**relays) for i in (1, 2, 3)},
        # an ordinary public site next to them: reached directly, never relayed
        "plain": _host(clusterlink_port=4443, **relays),
    }
    peers = {h: _by_name(p) for h, p in _rendered(ansible, hosts).items()}
    for i in (1, 2, 3):
        mine = peers[f"spoke-{i}"]
        assert sorted(mine) == sorted(
            {"hub-a", "hub-b", "plain", "spoke-1", "spoke-2", "spoke-3"} - {f"spoke-{i}"}
        )
        for other in (j for j in (1, 2, 3) if j != i):
            assert mine[f"spoke-{other}"]["via"] == ["hub-b", "hub-a"]
            assert mine[f"spoke-{other}"]["dial"] is False
        for direct in ("hub-a", "hub-b", "plain"):
            assert "via" not in mine[direct] and mine[direct]["dial"] is True
    for site in ("hub-a", "hub-b", "plain"):
        assert all("via" not in p for p in peers[site].values()), peers[site]
    # A hub's own name leaves its list: hub-a's peers come without via, hub-b is direct.
    assert peers["hub-a"]["hub-b"]["dial"] is True


def test_relays_on_listed_peers_and_an_outside_site(ansible: Ansible) -> None:
    """clusterlink_peers lists: only the relayed pairs get via; a site outside the inventory
    with dial: false is relayed too (the relay lists it as well)."""
    far = {"name": "far", "dial": False}
    hosts = {
        "hub": _hub(clusterlink_peers=["edge-1", "edge-2", far]),
        "edge-1": _edge(clusterlink_relays=["hub"], clusterlink_peers=["hub", "edge-2", far]),
        "edge-2": _edge(clusterlink_relays=["hub"], clusterlink_peers=["hub", "edge-1"]),
    }
    peers = {h: _by_name(p) for h, p in _rendered(ansible, hosts).items()}
    assert peers["edge-1"]["far"] == {
        "name": "far", "labels": {}, "gateways": [], "dial": False, "via": ["hub"],
    }  # fmt: skip
    assert peers["edge-1"]["edge-2"]["via"] == ["hub"]
    assert "via" not in peers["edge-1"]["hub"]
    assert "via" not in peers["hub"]["far"]


RELAYS = {"clusterlink_relays": ["hub"]}
REFUSED = {
    "unknown relay": (
        {
            "hub": _hub(**RELAYS),
            "edge-1": _edge(clusterlink_relays=["hub", "nowhere"]),
            "edge-2": _edge(**RELAYS),
        },
        "clusterlink_relays of host edge-1 names nowhere, which is not a site of the group "
        "clusterlink_gateways",
    ),
    "outbound-only relay": (
        {
            "hub": _hub(**RELAYS),
            "edge-0": _edge(clusterlink_relay=True, clusterlink_peers=["hub"]),
            "edge-1": _edge(clusterlink_relays=["edge-0"], clusterlink_peers=["hub", "edge-2"]),
            "edge-2": _edge(**RELAYS, clusterlink_peers=["hub"]),
        },
        "clusterlink_relays of host edge-1 names edge-0, an outbound-only site "
        "(clusterlink_inbound: false)",
    ),
    "relay not enabled": (
        {
            "hub-1": _hub(clusterlink_peer_name="hub"),
            "hub-2": _host(clusterlink_peer_name="hub"),  # one host of the hub site lacks it
            "edge-1": _edge(**RELAYS),
            "edge-2": _edge(**RELAYS),
        },
        "clusterlink_relays of host edge-1 names hub, whose host(s) hub-2 do not set "
        "clusterlink_relay: true",
    ),
    "no relays": (
        {"hub": _hub(), "edge-1": _edge(), "edge-2": _edge(**RELAYS)},
        "Outbound-only sites cannot peer directly: edge-1 and edge-2",
    ),
    "relay only its own end": (
        # the shared list names only the hub ... on the hub: the spokes have none left
        {"hub": _hub(**RELAYS), "edge-1": _edge(), "edge-2": _edge()},
        "clusterlink_relays of host(s) edge-1, edge-2 names no relay",
    ),
    "relay misses an end": (
        {
            "hub": _hub(clusterlink_peers=["edge-1"]),
            "edge-1": _edge(**RELAYS),
            "edge-2": _edge(**RELAYS),
        },
        "relay hub of edge-1 -> edge-2: its host hub does not peer with edge-2 "
        "(clusterlink_peers of hub)",
    ),
    "end misses its relay": (
        {
            "hub": _hub(),
            "edge-1": _edge(**RELAYS, clusterlink_peers=["edge-2"]),
            "edge-2": _edge(**RELAYS),
        },
        "host edge-1 (site edge-1) would reach edge-2 through relay hub but does not peer "
        "with hub (its clusterlink_peers)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize("limit", [None, "hub"])
def test_preflight_refuses_bad_relays(case: str, limit: str | None, ansible: Ansible) -> None:
    """site.yml's first play fails before the sentinel play, naming the variable and host."""
    hosts, expected = REFUSED[case]
    if limit == "hub" and "hub" not in hosts:
        limit = "hub-1"
    messages = _refused(ansible, hosts, limit)
    assert any(expected in m for m in messages), messages
    if case in ("no relays", "relay only its own end"):
        assert any("clusterlink_relays" in m for m in messages), messages


def test_the_hub_and_spoke_example_inventory(ansible: Ansible) -> None:
    """inventories/hub_and_spoke/ passes the preflight; each spoke dials the two hubs and
    reaches the other spokes via [hub-a, hub-b]; the hubs render a relay section."""
    inventory = REPO / "inventories" / "hub_and_spoke"
    play = {
        **RENDER_PEERS_PLAY,
        "tasks": [
            *RENDER_PEERS_PLAY["tasks"],
            {
                "name": "Relay settings",
                "ansible.builtin.debug": {
                    "msg": "{{ clusterlink_relay | default(false) }} "
                    "{{ clusterlink_relay_policies | default([]) | map(attribute='name') | list }}"
                },
            },
        ],
    }
    args = (
        *LOCAL,
        "-e",
        "ansible_connection=local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
    )
    run = ansible.play([play], inventory=inventory, args=args)
    assert run.returncode == 0, run.output[-4000:]
    rendered = next(t for t in run.tasks if t["name"] == "Rendered peers")["hosts"]
    peers = {h: _by_name(r["__clusterlink_peering_peers"]) for h, r in rendered.items()}
    assert sorted(peers) == ["hub-a", "hub-b", "spoke-1", "spoke-2", "spoke-3"]
    for spoke in ("spoke-1", "spoke-2", "spoke-3"):
        mine = peers[spoke]
        for hub in ("hub-a", "hub-b"):
            assert mine[hub]["dial"] is True and "via" not in mine[hub]
        others = [s for s in ("spoke-1", "spoke-2", "spoke-3") if s != spoke]
        assert all(mine[o]["via"] == ["hub-a", "hub-b"] for o in others), mine
    for hub in ("hub-a", "hub-b"):
        assert all("via" not in p for p in peers[hub].values())
    relay = next(t for t in run.tasks if t["name"] == "Relay settings")["hosts"]
    assert relay["hub-a"]["msg"] == "True ['spoke-to-spoke']"
    assert relay["spoke-1"]["msg"].startswith("False")
