# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The peering role on two sites with two real daemons.

Inventory: hosts site-a and site-b, local-connection hosts whose clusterlink_admin_socket points
at their own daemon, plus site-b-2, a second (redundant) gateway of site b that is in the group
but not in the play (--limit; its endpoint has no daemon). The default full mesh gives site-a
one peer site-b with the endpoints of both site-b hosts, and site-b one peer site-a; the
exports, imports and policies from the inventory then carry real traffic.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.gateway import GatewayProcess, free_port, stored

from .conftest import Ansible, Run

ECHO_IMPORT_PORT = free_port()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    """A TCP echo service on 127.0.0.1 (the service site-b exports)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sites(start_gateway: Any) -> dict[str, GatewayProcess]:
    return {"site-a": start_gateway("site-a"), "site-b": start_gateway("site-b")}


DEAD_PORT = free_port()  # site-b-2's endpoint: nothing listens there


def host_vars(sites: dict[str, GatewayProcess], echo: int) -> dict[str, dict[str, Any]]:
    def base(host: str) -> dict[str, Any]:
        gw = sites.get(host)
        return {
            "clusterlink_admin_socket": str(gw.socket) if gw else "/nonexistent/admin.sock",
            "clusterlink_advertise_address": "127.0.0.1",
            "clusterlink_port": gw.config["listen"]["port"] if gw else DEAD_PORT,
        }

    site_b = {
        "clusterlink_peer_name": "site-b",
        "clusterlink_peer_labels": {"env": "prod", "region": "us"},
        "clusterlink_exports": [
            {"name": "echo", "port": echo, "allowed_peers": ["site-a"], "labels": {"proto": "tcp"}}
        ],
        "clusterlink_policies": [
            {
                "name": "from-site-a-eu",
                "action": "allow",
                "from": [
                    {
                        "matchLabels": {
                            "peer.clusterlink.net/name": "site-a",
                            "peer.clusterlink.net/labels.region": "eu",
                        }
                    }
                ],
            }
        ],
    }
    return {
        "site-a": {
            **base("site-a"),
            "clusterlink_peer_labels": {"env": "prod", "region": "eu"},
            "clusterlink_imports": [
                {
                    "name": "echo",
                    "port": ECHO_IMPORT_PORT,
                    "bind": "127.0.0.1",
                    "sources": [{"peer": "site-b"}],
                },
                {
                    "name": "extra",
                    "sources": [{"peer": "site-b", "export": "echo"}],
                    "lb_scheme": "static",
                },
            ],
            "clusterlink_policies": [
                {
                    "name": "to-site-b",
                    "action": "allow",
                    "to": [{"matchLabels": {"peer.clusterlink.net/name": "site-b"}}],
                }
            ],
        },
        "site-b": {**base("site-b"), **site_b},
        "site-b-2": {**base("site-b-2"), **site_b},
    }


def play(ansible: Ansible, hosts: dict[str, dict[str, Any]], *args: str) -> Run:
    run = ansible.play(
        [
            {
                "hosts": "clusterlink_gateways",
                "gather_facts": False,
                "roles": ["clusterlink.fabric.peering"],
            }
        ],
        inventory=ansible.inventory(hosts),
        args=args,
    )
    assert run.returncode == 0, run.output[-5000:]
    assert all(s["failures"] == 0 and s["unreachable"] == 0 for s in run.stats.values())
    return run


def names(gw: GatewayProcess, plural: str) -> list[str]:
    return [o["name"] for o in gw.client.list(plural)]


def everything(sites: dict[str, GatewayProcess]) -> dict[str, dict[str, list[Any]]]:
    """Every stored object (without status) of every gateway."""
    kinds = ("peers", "exports", "imports", "policies")
    return {h: {k: stored(gw.client, k) for k in kinds} for h, gw in sites.items()}


def relay(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_peering_role(sites: dict[str, GatewayProcess], echo: int, ansible: Ansible) -> None:
    a, b = sites["site-a"], sites["site-b"]
    hosts = host_vars(sites, echo)
    limit = ("--limit", "site-a,site-b")
    # Made by hand: pruned by the first real run (the inventory is the source of truth).
    a.client.create("exports", {"name": "by-hand", "spec": {"port": 9}})
    a.client.create(
        "peers", {"name": "stray", "spec": {"gateways": [{"host": "127.0.0.9", "port": 9}]}}
    )
    # Made by a peering grant (another party's site, never in this inventory): kept.
    grant_label = {"clusterlink.io/grant": "g-0123456789abcdef"}
    a.client.create("peers", {"name": "partner", "labels": grant_label, "spec": {"dial": False}})

    # Check mode: changes predicted on every host, nothing written. The gateway of site-b-2
    # does not run (no admin socket): in check mode that host is skipped, not failed.
    before = everything(sites)
    run = play(ansible, hosts, "--check", "--diff")
    assert set(run.stats) == {"site-a", "site-b", "site-b-2"}
    assert all(run.changed(h) > 0 for h in sites), run.stats
    assert everything(sites) == before
    skipped = run.result(
        "clusterlink.fabric.peering : Skip this gateway in check mode, as it does not run yet",
        "site-b-2",
    )
    assert "cannot reach the gateway admin API at /nonexistent/admin.sock" in skipped["msg"]
    assert run.result("clusterlink.fabric.peering : Peers", "site-b-2")["skipped"]

    # Real run: the full mesh and the inventory's objects.
    run = play(ansible, hosts, *limit)
    assert all(run.changed(h) > 0 for h in sites), run.stats
    assert names(a, "peers") == ["partner", "site-b"]  # "stray" pruned, the grant's kept
    a.client.delete("peers", "partner")
    assert stored(a.client, "peers") == [
        {
            "kind": "Peer",
            "name": "site-b",
            "labels": {"env": "prod", "region": "us"},
            "spec": {
                "dial": True,
                "gateways": [  # both gateways of site b, in inventory order
                    {"host": "127.0.0.1", "port": b.config["listen"]["port"]},
                    {"host": "127.0.0.1", "port": DEAD_PORT},
                ],
            },
        }
    ]
    assert stored(b.client, "peers") == [
        {
            "kind": "Peer",
            "name": "site-a",
            "labels": {"env": "prod", "region": "eu"},
            "spec": {
                "dial": True,
                "gateways": [{"host": "127.0.0.1", "port": a.config["listen"]["port"]}],
            },
        }
    ]
    assert stored(b.client, "exports") == [
        {
            "kind": "Export",
            "name": "echo",
            "labels": {"proto": "tcp"},
            "spec": {"host": "127.0.0.1", "port": echo, "allowed_peers": ["site-a"]},
        }
    ]
    assert names(b, "policies") == ["from-site-a-eu"] and names(b, "imports") == []
    assert names(a, "exports") == []  # "by-hand" was pruned
    assert names(a, "imports") == ["echo", "extra"]
    assert a.client.get("imports", "echo")["spec"]["port"] == ECHO_IMPORT_PORT
    assert a.client.get("imports", "extra")["spec"]["lb_scheme"] == "static"
    assert names(a, "policies") == ["to-site-b"]

    # A re-run changes nothing, anywhere.
    run = play(ansible, hosts, *limit)
    assert run.changed() == 0, run.stats

    # The objects carry traffic: site-a's import reaches site-b's export (site-b's policy
    # matches the peer labels that the role put on its peer object for site-a).
    deadline = time.monotonic() + 20
    while True:
        try:
            if relay(ECHO_IMPORT_PORT, b"hello across sites") == b"hello across sites":
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, (a.client.status(), a.log_tail())
        time.sleep(0.3)

    # An import removed from the inventory is pruned; with prune off, a removed export stays.
    hosts["site-a"]["clusterlink_imports"] = hosts["site-a"]["clusterlink_imports"][:1]
    hosts["site-b"] = {**hosts["site-b"], "clusterlink_exports": [], "clusterlink_prune": False}
    run = play(ansible, hosts, *limit, "--diff")
    assert run.changed("site-a") == 1 and run.changed("site-b") == 0, run.stats
    assert names(a, "imports") == ["echo"]
    assert names(b, "exports") == ["echo"]
    pruned = run.result(
        "clusterlink.fabric.peering : Remove imported services that are not in the inventory",
        "site-a",
    )
    assert [r["item"] for r in pruned["results"]] == ["extra"]
    assert pruned["results"][0]["diff"]["before"]["name"] == "extra"

    # client_attributes on one peer (site-b, as exporter, ignores the client addresses that
    # site-a asserts): check mode predicts it, the run writes it, a re-run changes nothing.
    hosts["site-b"] = {
        **hosts["site-b"],
        "clusterlink_peers": [{"name": "site-a", "client_attributes": "ignore"}],
    }
    run = play(ansible, hosts, *limit, "--check", "--diff")
    assert run.changed("site-b") == 1 and run.changed("site-a") == 0, run.stats
    assert "client_attributes" not in b.client.get("peers", "site-a")["spec"]
    run = play(ansible, hosts, *limit, "--diff")
    assert run.changed("site-b") == 1, run.stats
    peer = b.client.get("peers", "site-a")
    assert peer["spec"]["client_attributes"] == "ignore"
    assert peer["labels"] == {"env": "prod", "region": "eu"}  # still from the inventory
    assert play(ansible, hosts, *limit).changed() == 0
