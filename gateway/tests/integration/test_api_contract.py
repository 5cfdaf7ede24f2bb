"""The admin API contract, exercised through the real unix socket of a running daemon."""

from __future__ import annotations

import json
import os
import re
import socket
import stat

import pytest

from support.gateway import GatewayProcess, stored

PEER = {"name": "cl1", "spec": {"gateways": [{"host": "127.0.0.1", "port": 4431}]}}
EXPORT = {"name": "http-echo", "spec": {"host": "127.0.0.1", "port": 8080}}
IMPORT = {"name": "http-echo", "spec": {"port": 0, "sources": [{"peer": "cl1"}]}}
POLICY = {"name": "allow-all", "spec": {"action": "allow", "from": [{}], "to": [{}]}}
OBJECTS = {"peers": PEER, "exports": EXPORT, "imports": IMPORT, "policies": POLICY}


def snapshot(gw: GatewayProcess) -> dict[str, list]:
    return {plural: stored(gw.client, plural) for plural in OBJECTS}


@pytest.mark.parametrize("plural", list(OBJECTS))
def test_crud_status_codes(gateway: GatewayProcess, plural: str) -> None:
    c = gateway.client
    obj = OBJECTS[plural]
    name = obj["name"]
    assert c.raw("GET", f"/v1/{plural}").body == []
    assert c.raw("GET", f"/v1/{plural}/{name}").status == 404
    assert c.raw("DELETE", f"/v1/{plural}/{name}").status == 404
    assert c.raw("PUT", f"/v1/{plural}/{name}", json.dumps(obj).encode()).status == 404

    created = c.raw("POST", f"/v1/{plural}", json.dumps(obj).encode())
    assert created.status == 201
    assert created.headers["location"] == f"/v1/{plural}/{name}"
    assert created.headers["content-type"].startswith("application/json")
    assert created.body["name"] == name and "status" in created.body

    dup = c.raw("POST", f"/v1/{plural}", json.dumps(obj).encode())
    assert dup.status == 409
    assert dup.body["field"] == "name" and "already exists" in dup.body["message"]

    got = c.raw("GET", f"/v1/{plural}/{name}")
    assert got.status == 200
    assert {k: v for k, v in got.body.items() if k != "status"} == {
        k: v for k, v in created.body.items() if k != "status"
    }
    assert [o["name"] for o in c.list(plural)] == [name]

    new = json.loads(json.dumps(obj))
    new["labels"] = {"env": "test"}
    put = c.raw("PUT", f"/v1/{plural}/{name}", json.dumps(new).encode())
    assert put.status == 200 and put.body["labels"] == {"env": "test"}

    deleted = c.raw("DELETE", f"/v1/{plural}/{name}")
    assert deleted.status == 204 and deleted.body is None
    assert c.raw("GET", f"/v1/{plural}/{name}").status == 404


def test_defaults_are_filled_and_status_is_read_only(gateway: GatewayProcess) -> None:
    c = gateway.client
    peer = c.create("peers", {**PEER, "status": {"reachable": True}})
    assert peer["status"]["reachable"] is None  # status from the client is ignored
    imp = c.create("imports", IMPORT)
    assert imp["spec"]["lb_scheme"] == "round-robin"
    assert imp["status"]["port"] >= 41000
    exp = c.create("exports", {"name": "db", "spec": {"port": 5432}})
    assert exp["spec"] == {"host": "127.0.0.1", "port": 5432, "allowed_peers": []}


@pytest.mark.parametrize(
    ("plural", "body", "field"),
    [
        ("peers", {"name": "cl1", "spec": {"gateways": []}}, "spec.gateways"),
        ("peers", {"name": "cl1", "spec": {"dial": True}}, "spec.gateways"),
        ("peers", {"name": "cl1", "spec": {"dial": 0, "gateways": []}}, "spec.dial"),
        (
            "peers",
            {"name": "cl1", "spec": {"gateways": [{"host": "h", "port": 0}]}},
            "spec.gateways[0].port",
        ),
        (
            "peers",
            {"name": "cl1", "spec": {"gateways": [{"host": "h", "port": 65536}]}},
            "spec.gateways[0].port",
        ),
        (
            "peers",
            {"name": "cl1", "spec": {"gateways": [{"host": "h", "port": "443"}]}},
            "spec.gateways[0].port",
        ),
        (
            "peers",
            {"name": "cl1", "spec": {"gateways": [{"host": "bad host!", "port": 1}]}},
            "spec.gateways[0].host",
        ),
        ("peers", {"name": "Cl_1", "spec": {"gateways": [{"host": "h", "port": 1}]}}, "name"),
        ("peers", {"name": "a" * 64, "spec": {"gateways": [{"host": "h", "port": 1}]}}, "name"),
        ("peers", {"spec": {"gateways": [{"host": "h", "port": 1}]}}, "name"),
        ("peers", {"name": "cl1", "spec": {"gateways": [{"host": "h"}]}, "extra": 1}, "extra"),
        (
            "peers",
            {"name": "cl1", "spec": {"gateways": [{"host": "h", "prot": 1}]}},
            "spec.gateways[0].prot",
        ),
        (
            "peers",
            {"name": "cl1", "labels": {"bad key!": "v"}, "spec": {"gateways": [{"host": "h"}]}},
            "labels",
        ),
        ("exports", {"name": "e", "spec": {}}, "spec.port"),
        (
            "exports",
            {"name": "e", "spec": {"port": 80, "allowed_peers": ["NO"]}},
            "spec.allowed_peers[0]",
        ),
        ("imports", {"name": "i", "spec": {"sources": []}}, "spec.sources"),
        (
            "imports",
            {"name": "i", "spec": {"sources": [{"peer": "p"}], "lb_scheme": "ecmp"}},
            "spec.lb_scheme",
        ),
        (
            "imports",
            {"name": "i", "spec": {"sources": [{"peer": "p"}], "bind": "nowhere"}},
            "spec.bind",
        ),
        ("imports", {"name": "i", "spec": {"sources": [{"peer": "p"}], "port": -1}}, "spec.port"),
        (
            "policies",
            {"name": "p", "spec": {"action": "maybe", "from": [{}], "to": [{}]}},
            "spec.action",
        ),
        (
            "policies",
            {"name": "p", "spec": {"action": "allow", "from": [], "to": [{}]}},
            "spec.from",
        ),
        (
            "policies",
            {
                "name": "p",
                "spec": {
                    "action": "allow",
                    "from": [{"matchExpressions": [{"key": "k", "operator": "Near"}]}],
                    "to": [{}],
                },
            },
            "spec.from[0].matchExpressions[0].operator",
        ),
        (
            "policies",
            {
                "name": "p",
                "spec": {"action": "allow", "from": [{"clientCIDRs": ["10.0.0.0/33"]}], "to": [{}]},
            },
            "spec.from[0].clientCIDRs",
        ),
        (
            "policies",
            {"kind": "Peer", "name": "p", "spec": {"action": "allow", "from": [{}], "to": [{}]}},
            "kind",
        ),
    ],
)
def test_validation_names_the_field(
    gateway: GatewayProcess, plural: str, body: dict, field: str
) -> None:
    before = snapshot(gateway)
    resp = gateway.client.raw("POST", f"/v1/{plural}", json.dumps(body).encode())
    assert resp.status == 422, resp.body
    fields = [d["field"] for d in resp.body["details"]]
    assert any(f.startswith(field) for f in fields), (field, resp.body)
    assert resp.body["field"] in fields and resp.body["message"]
    assert snapshot(gateway) == before


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'"a string"', b"", b"\xff\xfe", b"null", b'{"name": "x", "spec": '],
)
def test_malformed_bodies_are_4xx_and_change_nothing(gateway: GatewayProcess, raw: bytes) -> None:
    gateway.client.create("peers", PEER)
    before = snapshot(gateway)
    for method, path in (("POST", "/v1/peers"), ("PUT", "/v1/peers/cl1")):
        resp = gateway.client.raw(method, path, raw)
        assert resp.status in (400, 422), (method, raw, resp.status)
        assert isinstance(resp.body, dict) and resp.body["message"]
    assert snapshot(gateway) == before


def test_oversize_body_is_413(gateway: GatewayProcess) -> None:
    before = snapshot(gateway)
    body = json.dumps({**PEER, "labels": {f"k{i}": "v" * 60 for i in range(30000)}}).encode()
    assert len(body) > 1 << 20
    resp = gateway.client.raw("POST", "/v1/peers", body)
    assert resp.status == 413 and "too large" in resp.body["message"]
    assert snapshot(gateway) == before


def test_unknown_kind_and_path(gateway: GatewayProcess) -> None:
    c = gateway.client
    for method, path, body in (
        ("GET", "/v1/widgets", None),
        ("POST", "/v1/widgets", json.dumps(PEER).encode()),
        ("GET", "/v1/widgets/x", None),
        ("DELETE", "/v1/widgets/x", None),
        ("GET", "/v2/peers", None),
    ):
        resp = c.raw(method, path, body)
        assert resp.status == 404, (method, path)
        assert resp.body["message"]
    resp = c.raw("PATCH", "/v1/peers/x", b"{}")
    assert resp.status == 405 and resp.body["status"] == 405
    assert snapshot(gateway) == {p: [] for p in OBJECTS}


def test_put_name_mismatch_and_name_from_url(gateway: GatewayProcess) -> None:
    c = gateway.client
    c.create("peers", PEER)
    resp = c.raw("PUT", "/v1/peers/cl1", json.dumps({**PEER, "name": "cl2"}).encode())
    assert resp.status == 422 and resp.body["field"] == "name"
    body = {"spec": {"gateways": [{"host": "10.1.1.1", "port": 443}]}}
    assert c.replace("peers", "cl1", body)["spec"]["gateways"][0]["host"] == "10.1.1.1"


def test_offers_of_a_silent_peer_is_502_with_a_reason(gateway: GatewayProcess) -> None:
    c = gateway.client
    silent = socket.create_server(("127.0.0.1", 0))  # completes TCP handshakes, never speaks TLS
    port = silent.getsockname()[1]
    c.create("peers", {"name": "gone", "spec": {"gateways": [{"host": "127.0.0.1", "port": port}]}})
    with silent:
        resp = c.raw("GET", "/v1/peers/gone/offers", None)
    assert resp.status == 502, resp.body
    message = resp.body["message"]
    assert message.startswith("peer 'gone' did not answer: "), message
    assert not re.search(r": ($|\))", message), f"a reason is empty: {message}"
    assert c.raw("GET", "/v1/peers/other/offers", None).status == 404


def test_import_port_allocation_is_kept(gateway: GatewayProcess) -> None:
    c = gateway.client
    a = c.create("imports", {"name": "a", "spec": {"sources": [{"peer": "p"}]}})
    b = c.create("imports", {"name": "b", "spec": {"sources": [{"peer": "p"}]}})
    assert a["status"]["port"] != b["status"]["port"]
    updated = c.replace("imports", "a", {"name": "a", "spec": {"sources": [{"peer": "q"}]}})
    assert updated["status"]["port"] == a["status"]["port"]
    explicit = c.replace(
        "imports", "a", {"name": "a", "spec": {"port": 1234, "sources": [{"peer": "q"}]}}
    )
    assert explicit["status"]["port"] == 1234 and explicit["status"]["listen"] == "127.0.0.1:1234"


def test_import_pinned_then_port_0_keeps_its_port_in_range(gateway: GatewayProcess) -> None:
    """A restored backup pins each allocated port; the inventory's ``port: 0`` that follows
    must not move the import (its clients use that port). Out of the range: allocated."""
    c = gateway.client
    first = c.create("imports", {"name": "first", "spec": {"sources": [{"peer": "p"}]}})
    low = first["status"]["port"]  # the lowest port of the range, where "b" would go next
    c.delete("imports", "first")
    pinned = low + 7
    spec = {"sources": [{"peer": "p"}]}
    c.create("imports", {"name": "b", "spec": {**spec, "port": pinned}})
    back = c.replace("imports", "b", {"name": "b", "spec": {**spec, "port": 0}})
    assert back["spec"]["port"] == 0 and back["status"]["port"] == pinned, back
    assert back["status"]["listening"] is True
    assert c.replace("imports", "b", {"name": "b", "spec": spec})["status"]["port"] == pinned
    c.replace("imports", "b", {"name": "b", "spec": {**spec, "port": 1234}})
    moved = c.replace("imports", "b", {"name": "b", "spec": {**spec, "port": 0}})
    assert moved["status"]["port"] == low, moved  # 1234 is outside the range


def test_status_health_ready(gateway: GatewayProcess) -> None:
    c = gateway.client
    c.create("peers", PEER)
    c.create("imports", IMPORT)
    status = c.status()
    assert status["peer_name"] == "cl0" and status["ready"] is True
    assert [p["name"] for p in status["peers"]] == ["cl1"]
    assert status["imports"][0]["listen"].startswith("127.0.0.1:")
    assert status["invalid"] == []
    assert c.raw("GET", "/healthz").status == 200
    assert c.raw("GET", "/readyz").body == {"ready": True}


def test_admin_socket_mode(gateway: GatewayProcess) -> None:
    st = os.stat(gateway.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
