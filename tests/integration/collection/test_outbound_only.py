# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Outbound-only sites (clusterlink_inbound: false) and site.yml's final reachability wait.

* The peering role's rendering: a site with ``clusterlink_inbound: false`` is a peer with
  ``dial: false`` and no endpoints on every other site, and itself keeps dialing the others.
* site.yml's first play (read-only preflight) stops, before any change, a run where two
  outbound-only sites would peer (full mesh, or clusterlink_peers on one side), naming both,
  and a site whose hosts disagree on clusterlink_inbound.
* site.yml's last play, with real daemons on loopback: passes when every pair is reachable,
  fails naming the pairs that are not (a site whose endpoint has nothing listening), and
  does not wait with ``clusterlink_wait_reachable: 0``. The peering role writes the
  ``dial: false`` peer of an outbound-only site to the real gateways.

Only controller-side tasks and the modules (local connection, the daemons' admin sockets) run.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from support.gateway import GatewayProcess, free_port, stored

from .conftest import RENDER_PEERS_PLAY, REPO, Ansible, Run

LOCAL = ("-e", "ansible_become=false")
SITE = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())


def _sentinel() -> dict[str, Any]:
    return {
        "name": "Sentinel",
        "hosts": "clusterlink_gateways",
        "gather_facts": False,
        "tasks": [{"name": "Reached", "ansible.builtin.debug": {"msg": "past the preflight"}}],
    }


def _first_play() -> dict[str, Any]:
    first = SITE[0]
    assert first["name"].startswith("Preflight on every host")
    assert first["any_errors_fatal"] is True
    assert first["tasks"][0]["ansible.builtin.import_role"] == {
        "name": "clusterlink.fabric.peering",
        "tasks_from": "preflight",
    }
    return first


def _last_play() -> dict[str, Any]:
    last = SITE[-1]
    assert [t["ansible.builtin.import_role"] for t in last["tasks"]] == [
        {"name": "clusterlink.fabric.peering", "tasks_from": "wait_reachable"}
    ]
    return last


def _host(**extra: Any) -> dict[str, Any]:
    return {"clusterlink_advertise_address": "127.0.0.1", "clusterlink_port": 4443, **extra}


# ----- rendering and preflight (no daemon) -----------------------------------------------


def _rendered(ansible: Ansible, hosts: dict[str, dict[str, Any]]) -> dict[str, list[dict]]:
    play = RENDER_PEERS_PLAY
    run = ansible.play([play], inventory=ansible.inventory(hosts), args=LOCAL)
    assert run.returncode == 0, run.output[-4000:]
    rendered = next(t for t in run.tasks if t["name"] == "Rendered peers")["hosts"]
    return {h: r["__clusterlink_peering_peers"] for h, r in rendered.items()}


def test_outbound_only_site_is_a_dial_false_peer_without_endpoints(ansible: Ansible) -> None:
    hosts = {
        "pub-a": _host(clusterlink_port=4441),
        "pub-b": _host(clusterlink_port=4442),
        "edge-1": _host(clusterlink_peer_name="edge", clusterlink_inbound=False),
        "edge-2": _host(clusterlink_peer_name="edge", clusterlink_inbound=False),
    }
    peers = _rendered(ansible, hosts)
    edge = {"name": "edge", "labels": {}, "gateways": [], "dial": False}
    assert peers["pub-a"] == [
        edge,
        {
            "name": "pub-b",
            "labels": {},
            "gateways": [{"host": "127.0.0.1", "port": 4442}],
            "dial": True,
        },
    ]
    assert edge in peers["pub-b"]
    # The outbound-only site keeps dialing the sites it reaches.
    for host in ("edge-1", "edge-2"):
        assert peers[host] == [
            {
                "name": "pub-a",
                "labels": {},
                "gateways": [{"host": "127.0.0.1", "port": 4441}],
                "dial": True,
            },
            {
                "name": "pub-b",
                "labels": {},
                "gateways": [{"host": "127.0.0.1", "port": 4442}],
                "dial": True,
            },
        ]


def test_two_outbound_only_sites_apart_pass(ansible: Ansible) -> None:
    """Two outbound-only sites that each peer only with the public site: no refusal."""
    hosts = {
        "hub": _host(),
        "edge-1": _host(clusterlink_inbound=False, clusterlink_peers=["hub"]),
        "edge-2": _host(clusterlink_inbound=False, clusterlink_peers=["hub"]),
    }
    peers = _rendered(ansible, hosts)
    assert [p["name"] for p in peers["hub"]] == ["edge-1", "edge-2"]
    assert all(p["dial"] is False and p["gateways"] == [] for p in peers["hub"])
    assert [(p["name"], p["dial"]) for p in peers["edge-1"]] == [("hub", True)]


REFUSED = {
    # full mesh: the two outbound-only sites would peer with each other
    "mesh": (
        {
            "hub": _host(),
            "edge-1": _host(clusterlink_inbound=False),
            "edge-2": _host(clusterlink_inbound=False),
        },
        "Outbound-only sites cannot peer directly: edge-1 and edge-2",
    ),
    # only one of them lists the other
    "listed": (
        {
            "hub": _host(),
            "edge-1": _host(clusterlink_inbound=False, clusterlink_peers=["hub", "edge-2"]),
            "edge-2": _host(clusterlink_inbound=False, clusterlink_peers=["hub"]),
        },
        "Outbound-only sites cannot peer directly: edge-1 and edge-2",
    ),
    # an outbound-only site and a site outside the inventory declared dial: false
    "external": (
        {
            "hub": _host(),
            "edge-1": _host(
                clusterlink_inbound=False,
                clusterlink_peers=["hub", {"name": "far", "dial": False}],
            ),
        },
        "Outbound-only sites cannot peer directly: edge-1 and far",
    ),
    # the hosts of one site disagree
    "mixed": (
        {
            "hub": _host(),
            "edge-1": _host(clusterlink_peer_name="edge", clusterlink_inbound=False),
            "edge-2": _host(clusterlink_peer_name="edge"),
        },
        "The hosts of site(s) edge disagree on clusterlink_inbound",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize("limit", [None, "hub"])
def test_preflight_refuses_outbound_only_pairs(
    case: str, limit: str | None, ansible: Ansible
) -> None:
    """site.yml's first play fails on every host before the sentinel play, naming the sites."""
    hosts, expected = REFUSED[case]
    messages = _refused(ansible, hosts, limit)
    assert any(expected in m for m in messages), messages


def _refused(ansible: Ansible, hosts: dict[str, dict[str, Any]], limit: str | None) -> list[str]:
    """site.yml's first play (with ``--limit limit``) on ``hosts``: it fails before the
    sentinel play, saying nothing was changed; the failure messages."""
    args = (*LOCAL, "--limit", limit) if limit else LOCAL
    run = ansible.play([_first_play(), _sentinel()], inventory=ansible.inventory(hosts), args=args)
    assert run.returncode != 0, run.output[-4000:]
    assert not any(t["name"] == "Reached" for t in run.tasks), run.output[-4000:]
    messages = [
        r["msg"] for t in run.tasks for r in t["hosts"].values() if r.get("failed") and "msg" in r
    ]
    assert any("Nothing was changed" in m for m in messages), messages
    return messages


# ----- site.yml's last play against real daemons ------------------------------------------


@pytest.fixture(scope="module")
def sites(start_gateway: Any) -> dict[str, GatewayProcess]:
    return {"site-a": start_gateway("site-a"), "site-b": start_gateway("site-b")}


DEAD_PORT = free_port()  # site-c's endpoint: nothing listens there


def _daemon_host(gw: GatewayProcess) -> dict[str, Any]:
    return {
        "clusterlink_admin_socket": str(gw.socket),
        "clusterlink_advertise_address": "127.0.0.1",
        "clusterlink_port": gw.config["listen"]["port"],
    }


def _deploy(ansible: Ansible, hosts: dict[str, dict[str, Any]], *args: str) -> Run:
    """The peering role, then site.yml's last play, on site-a and site-b only."""
    peering = {
        "name": "Peering",
        "hosts": "clusterlink_gateways",
        "gather_facts": False,
        "roles": ["clusterlink.fabric.peering"],
    }
    run = ansible.play(
        [peering, _last_play()],
        inventory=ansible.inventory(hosts),
        args=(*LOCAL, "--limit", "site-a,site-b", *args),
    )
    print(f"peering + wait: {run.seconds:.1f}s, rc {run.returncode}")
    return run


WAIT = "clusterlink.fabric.peering : Read the peers' status until every one is reachable"
FAIL = "clusterlink.fabric.peering : Fail naming the pairs that are not reachable"


def test_site_waits_until_reachable_and_names_unreachable_pairs(
    sites: dict[str, GatewayProcess], ansible: Ansible
) -> None:
    a, b = sites["site-a"], sites["site-b"]
    hosts = {h: _daemon_host(gw) for h, gw in sites.items()}

    # Both sites reach each other: the run passes once both peers are reachable.
    run = _deploy(ansible, hosts)
    assert run.returncode == 0, run.output[-5000:]
    for host in ("site-a", "site-b"):
        assert not run.result(WAIT, host).get("failed"), run.result(WAIT, host)
    assert run.result(FAIL, "site-a").get("failed") is not True
    assert [p["name"] for p in a.client.list("peers") if p["status"]["reachable"]] == ["site-b"]
    assert [p["name"] for p in b.client.list("peers") if p["status"]["reachable"]] == ["site-a"]

    # site-c's endpoint has nothing listening: the run fails, naming both pairs towards it
    # and not the pair that works.
    hosts["site-c"] = {
        "clusterlink_admin_socket": "/nonexistent/admin.sock",
        "clusterlink_advertise_address": "127.0.0.1",
        "clusterlink_port": DEAD_PORT,
    }
    run = _deploy(ansible, hosts, "-e", "clusterlink_wait_reachable=8")
    assert run.returncode != 0, run.output[-5000:]
    failed = next(t for t in run.tasks if t["name"] == FAIL)["hosts"]
    message = next(r["msg"] for r in failed.values() if r.get("failed"))
    print(message)
    assert "Not reachable after 8 s" in message
    assert "site-a (site-a) -> site-c" in message
    assert "site-b (site-b) -> site-c" in message
    assert "-> site-b" not in message and "-> site-a" not in message
    assert "clusterlink_inbound: false" in message  # the hint for a site behind NAT

    # site-c outbound-only: the others hold it with dial false and no endpoints; with
    # clusterlink_wait_reachable 0 the run does not wait.
    hosts["site-c"]["clusterlink_inbound"] = False
    run = _deploy(ansible, hosts, "-e", "clusterlink_wait_reachable=0")
    assert run.returncode == 0, run.output[-5000:]
    assert run.result(WAIT, "site-a").get("skipped"), run.result(WAIT, "site-a")
    for gw in (a, b):
        edge = next(p for p in stored(gw.client, "peers") if p["name"] == "site-c")
        assert edge["spec"] == {"dial": False, "gateways": []}
