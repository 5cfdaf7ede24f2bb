"""Peering grants between two independent parties, with real gateways, real TLS and TWO CAs.

Site A (party A's CA) grants, site B (party B's CA) redeems through its admin API; the
redemption runs over A's peer port (SNI ``clusterlink-grant.invalid``, ALPN
``clusterlink-grant/1``, no client certificate). Then each side holds a Peer for the other with
the other party's bundle in ``spec.trust.ca``. A second redemption, an expired, a tampered and a
revoked grant are refused with their reason in the API answer and in
``clusterlink_grant_redemptions_total``; the secret is in no log and no listing.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from clusterlink_gateway.peering import grants as core
from clusterlink_gateway.peering.grantwire import redeem
from clusterlink_gateway.peering.tls import GRANT_ALPN, GRANT_SNI
from support.fabric import ALLOW_ALL
from support.gateway import GatewayProcess
from support.pki import TestCA
from support.traffic import EchoServer, get


@pytest.fixture
def parties(tmp_path: Path):
    ca_a, ca_b = TestCA(tmp_path / "pki-a", "party-a"), TestCA(tmp_path / "pki-b", "party-b")
    a = GatewayProcess(tmp_path, "site-a", ca_a).start()
    b = GatewayProcess(tmp_path, "site-b", ca_b).start()
    try:
        yield a, b, ca_a, ca_b
    finally:
        for gw in (a, b):
            gw.stop()


def call(gw: GatewayProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = gw.client.raw(method, path, None if body is None else json.dumps(body).encode())
    return resp.status, resp.body


def create(gw: GatewayProcess, **body: Any) -> dict[str, Any]:
    status, doc = call(gw, "POST", "/v1/grants", {"peer_name": "site-b", **body})
    assert status == 201, doc
    return doc


def redemptions(gw: GatewayProcess) -> dict[tuple[str, str], float]:
    out = {}
    for line in gw.client.raw("GET", "/metrics").body.splitlines():
        if line.startswith("clusterlink_grant_redemptions_total{"):
            labels, _, value = line.rpartition("} ")
            parts = dict(p.split("=") for p in labels.split("{", 1)[1].split(","))
            out[(parts["side"].strip('"'), parts["result"].strip('"'))] = float(value)
    return out


def peer(gw: GatewayProcess, name: str) -> dict[str, Any] | None:
    status, doc = call(gw, "GET", f"/v1/peers/{name}")
    return doc if status == 200 else None


def wire(a: GatewayProcess, b: GatewayProcess, text: str) -> dict[str, Any]:
    """Redeem ``text`` at A straight over the wire with B's material (the granting side's
    decision, without B's own checks in front)."""
    import asyncio

    return asyncio.run(awire(a, b, text))


async def awire(a: GatewayProcess, b: GatewayProcess, text: str) -> dict[str, Any]:
    tls = b.tls_dir
    ca_a = (a.tls_dir / "ca-bundle.pem").read_text()

    def request(binding: str) -> bytes:
        r = core.Redemption(
            "".join(text.split()),
            (core.Site("site-b", (f"127.0.0.1:{b.config['listen']['port']}",)),),
            (tls / "ca-bundle.pem").read_text(),
            (tls / "gateway.crt").read_text(),
            binding,
        )
        return core.redemption_request(r, (tls / "gateway.key").read_bytes())

    port = a.config["listen"]["port"]
    return await redeem("127.0.0.1", port, ca_a, ["site-a"], request)


def test_concurrent_redemptions_use_a_grant_once(parties) -> None:
    import asyncio

    a, b, _, _ = parties
    text = create(a, uses=1)["grant"]

    async def both() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(awire(a, b, text) for _ in range(4))))

    results = sorted(answer["result"] for answer in asyncio.run(both()))
    assert results == ["accepted", "used-up", "used-up", "used-up"], results
    assert redemptions(a)[("granter", "accepted")] == 1


def test_grant_redeem_and_every_refusal(parties) -> None:
    a, b, ca_a, ca_b = parties
    doc = create(a, expires="1h", uses=1)
    text = doc["grant"]
    assert doc["state"] == "active" and doc["uses_left"] == 1
    secret = core.decode(text).grant.secret
    status, listed = call(a, "GET", "/v1/grants")
    assert status == 200 and [g["id"] for g in listed] == [doc["id"]]
    assert "grant" not in listed[0] and secret not in json.dumps(listed)

    # B redeems: Peer site-a with A's bundle on B, Peer site-b with B's bundle on A
    started = time.perf_counter()
    status, answer = call(b, "POST", "/v1/grants/redeem", {"grant": text})
    print(f"grants: redemption through B's admin API took {time.perf_counter() - started:.3f} s")
    assert status == 200, answer
    assert answer["result"] == "accepted" and answer["peers"] == ["site-a"]
    on_b, on_a = peer(b, "site-a"), peer(a, "site-b")
    assert on_b is not None and on_a is not None
    assert on_b["spec"]["trust"]["ca"] == ca_a.ca_path.read_text()
    assert on_b["spec"]["gateways"] == [{"host": "127.0.0.1", "port": a.config["listen"]["port"]}]
    assert on_a["spec"]["trust"]["ca"] == ca_b.ca_path.read_text()
    assert on_a["spec"]["gateways"] == [{"host": "127.0.0.1", "port": b.config["listen"]["port"]}]
    assert redemptions(a)[("granter", "accepted")] == 1
    assert redemptions(b)[("redeemer", "accepted")] == 1
    _, listed = call(a, "GET", "/v1/grants")
    assert listed[0]["uses_left"] == 0 and listed[0]["redemptions"][0]["sites"] == ["site-b"]

    # idempotent on B: the same grant again changes nothing (no dial)
    status, again = call(b, "POST", "/v1/grants/redeem", {"grant": text})
    assert (status, again["result"], again["changed"]) == (200, "already-redeemed", False)

    # a second real redemption (B forgot it): used-up at A, nothing left behind at B
    assert call(b, "DELETE", "/v1/peers/site-a")[0] == 204
    status, refused = call(b, "POST", "/v1/grants/redeem", {"grant": text})
    assert (status, refused["result"]) == (409, "used-up"), refused
    assert peer(b, "site-a") is None
    assert redemptions(a)[("granter", "used-up")] == 1
    assert redemptions(b)[("redeemer", "used-up")] == 1

    # revoked
    revoked = create(a, peer_name="site-c", uses=1)
    assert call(a, "DELETE", f"/v1/grants/{revoked['id']}")[1]["state"] == "revoked"
    assert wire(a, b, revoked["grant"])["result"] == "revoked"
    assert redemptions(a)[("granter", "revoked")] == 1

    # expired: refused by B itself, and at A when presented anyway
    short = create(a, peer_name="site-c", expires=1)
    time.sleep(1.5)
    status, refused = call(b, "POST", "/v1/grants/redeem", {"grant": short["grant"]})
    assert (status, refused["result"]) == (409, "expired"), refused
    assert wire(a, b, short["grant"])["result"] == "expired"
    assert redemptions(a)[("granter", "expired")] == 1

    # tampered: a changed body is refused by B; a grant B re-signed is refused by A
    fresh = create(a, peer_name="site-c", uses=1)
    body, _, sig = fresh["grant"][len(core.PREFIX) :].partition(".")
    changed = json.loads(core.b64d(body))
    changed["sites"][0]["endpoints"] = ["203.0.113.9:443"]
    bad = core.PREFIX + core.b64e(core.canonical(changed)) + "." + sig
    status, refused = call(b, "POST", "/v1/grants/redeem", {"grant": bad})
    assert (status, refused["result"]) == (409, "tampered"), refused
    forged_cert = ca_b.issue("site-a")
    decoded = core.decode(fresh["grant"]).grant
    forged = core.Grant(
        **{**decoded.__dict__, "ca": ca_b.ca_path.read_text(), "cert": forged_cert.cert.read_text()}
    )
    forged_text = core.encode(forged, forged_cert.key.read_bytes())
    assert wire(a, b, forged_text)["result"] == "tampered"
    assert redemptions(a)[("granter", "tampered")] == 1
    assert redemptions(b)[("redeemer", "tampered")] == 1

    # unknown, and B is not the peer the grant names (site-c)
    _, listed = call(a, "GET", "/v1/grants")
    assert {g["state"] for g in listed} == {"used-up", "revoked", "expired", "active"}
    status, refused = call(b, "POST", "/v1/grants/redeem", {"grant": fresh["grant"]})
    assert (status, refused["result"]) == (409, "bad-request"), refused

    # secrets never in a log; the grant log lines name ids only
    for gw in (a, b):
        text_log = gw.log_text()
        assert secret not in text_log and "PRIVATE KEY" not in text_log
    lines = [json.loads(x) for x in a.log_text().splitlines() if "grant redemption refused" in x]
    assert {line["reason"] for line in lines} >= {"used-up", "revoked", "expired", "tampered"}


def test_grant_survives_restart_and_bad_input(parties) -> None:
    a, b, _, _ = parties
    doc = create(a, expires="2h", uses=2)
    a.stop()
    a.start()
    _, listed = call(a, "GET", "/v1/grants")
    assert [(g["id"], g["uses_left"]) for g in listed] == [(doc["id"], 2)]
    for body, field in (
        ({"peer_name": "Not A Label"}, "peer_name"),
        ({"peer_name": "site-b", "expires": "soon"}, "expires"),
        ({"peer_name": "site-b", "uses": 0}, "uses"),
        ({"peer_name": "site-b", "endpoints": ["nohost:1"]}, "endpoints"),
        ({"peer_name": "site-b", "endpoints": [{"host": "a b"}]}, "endpoints"),
        ({"peer_name": "site-b", "expires": "31d"}, "expires"),
        ({"peer_name": "site-b", "colour": "red"}, "colour"),
    ):
        status, answer = call(a, "POST", "/v1/grants", body)
        assert status == 422 and answer["field"] == field, (body, answer)
    status, answer = call(a, "POST", "/v1/grants", {"peer_name": "site-a"})  # its own name
    assert (status, answer["field"]) == (409, "peer_name")
    status, answer = call(b, "POST", "/v1/grants/redeem", {"grant": "not a grant"})
    assert (status, answer["result"]) == (409, "bad-request")
    assert call(a, "DELETE", "/v1/grants/g-nope")[0] == 404
    assert peer(b, "site-a") is None


def _tls(port: int, ca: Path, server_name: str, alpn: str) -> str | None:
    """Handshake without a client certificate; the negotiated ALPN, None if refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(ca))
    ctx.set_alpn_protocols([alpn])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=server_name) as sock:
                chosen = sock.selected_alpn_protocol()
                sock.sendall(b"\x00\x00\x00\x02{}")
                data = sock.recv(65536)
                return chosen if data else None
        except (ssl.SSLError, ConnectionResetError):
            return None


def test_grant_connection_serves_nothing_else(parties) -> None:
    """Without a client certificate only a grant redemption is answered: h2 under our name, h2
    under the grant name, the grant ALPN under our name are all refused."""
    a, _, ca_a, _ = parties
    port = a.config["listen"]["port"]
    assert _tls(port, ca_a.ca_path, GRANT_SNI, GRANT_ALPN) == GRANT_ALPN
    assert _tls(port, ca_a.ca_path, "site-a", "h2") is None
    assert _tls(port, ca_a.ca_path, GRANT_SNI, "h2") is None
    assert _tls(port, ca_a.ca_path, "site-a", GRANT_ALPN) is None
    assert hashlib.sha256(b"").hexdigest() not in a.log_text()


def _until(fn: Any, want: Any, timeout: float = 30.0) -> Any:
    """Poll ``fn()`` until it returns ``want`` (generous: the machine is shared)."""
    deadline = time.monotonic() + timeout
    while (got := fn()) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def test_after_redemption_each_party_keeps_its_authority(parties) -> None:
    """Issue [6] point 3 on loopback: after the redemption, links come up with each side's own
    certificate (both reachable); A decides what B may see and reach (``allowed_peers``, its
    ingress policy), B decides what it imports and its egress policy; offers show B exactly
    what A lets it see; traffic flows only where both allow it."""
    a, b, _, _ = parties
    text = create(a)["grant"]
    assert call(b, "POST", "/v1/grants/redeem", {"grant": text})[0] == 200
    reachable = lambda gw, name: bool((peer(gw, name) or {}).get("status", {}).get("reachable"))  # noqa: E731
    assert _until(lambda: reachable(b, "site-a"), True) and _until(
        lambda: reachable(a, "site-b"), True
    )

    web, private = EchoServer("site-a"), EchoServer("site-a-private")
    try:
        a.client.create(
            "exports", {"name": "web", "spec": {"port": web.port, "allowed_peers": ["site-b"]}}
        )
        a.client.create(
            "exports",
            {"name": "private", "spec": {"port": private.port, "allowed_peers": ["site-c"]}},
        )
        for gw in (a, b):
            gw.client.create("policies", ALLOW_ALL)
        # B sees exactly what A lets it see.
        status, offers = call(b, "GET", "/v1/peers/site-a/offers")
        assert status == 200 and [o["name"] for o in offers] == ["web"], offers
        for name in ("web", "private"):
            b.client.create(
                "imports", {"name": name, "spec": {"sources": [{"peer": "site-a", "export": name}]}}
            )
        port = {n: int(b.client.get("imports", n)["status"]["port"]) for n in ("web", "private")}
        assert _until(lambda: get(port["web"]), "site-a") == "site-a"
        assert get(port["private"]) != "site-a-private"  # allowed_peers holds on CONNECT too
        # A's authority: without its ingress allow, B is refused.
        a.client.delete("policies", ALLOW_ALL["name"])
        assert _until(lambda: get(port["web"]) != "site-a", True)
        a.client.create("policies", ALLOW_ALL)
        assert _until(lambda: get(port["web"]), "site-a") == "site-a"
        # B's authority: without its egress allow, its own client is refused.
        b.client.delete("policies", ALLOW_ALL["name"])
        assert _until(lambda: get(port["web"]) != "site-a", True)
        b.client.create("policies", ALLOW_ALL)
        assert _until(lambda: get(port["web"]), "site-a") == "site-a"
        # Nothing flows the other way unless B exports: A's import of B stays refused.
        a.client.create(
            "imports", {"name": "back", "spec": {"sources": [{"peer": "site-b", "export": "web"}]}}
        )
        back = int(a.client.get("imports", "back")["status"]["port"])
        assert get(back) in ("reset", "closed", "refused"), get(back)
    finally:
        web.close()
        private.close()


def test_gwctl_grant_commands(parties, tmp_path: Path) -> None:
    """``gwctl grant create`` prints only the text on stdout; ``redeem FILE`` uses it."""
    import subprocess
    import sys

    a, b, _, _ = parties
    gwctl = str(Path(sys.executable).parent / "gwctl")

    def run(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [gwctl, "--socket", str(gw.socket), "grant", *args],
            capture_output=True,
            text=True,
            timeout=60,
            input="",  # redeem - reads an empty stdin
        )

    created = run(a, "create", "--peer-name", "site-b", "--expires", "2h", "--uses", "1")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(core.PREFIX) and "shown once" in created.stderr
    grant_file = tmp_path / "grant.txt"
    grant_file.write_text(created.stdout)
    redeemed = run(b, "redeem", str(grant_file))
    assert redeemed.returncode == 0 and "peers site-a created" in redeemed.stdout, redeemed
    again = run(b, "redeem", str(grant_file))
    assert again.returncode == 0 and "already redeemed" in again.stdout
    listed = run(a, "list")
    assert "site-b" in listed.stdout and "used-up" in listed.stdout
    grant_id = core.decode(created.stdout).grant.id
    assert run(a, "revoke", grant_id).stdout.strip() == f"grant {grant_id} revoked"
    other = run(a, "create", "--peer-name", "site-b", "--endpoint", "nohost")
    assert other.returncode == 2 and "HOST:PORT" in other.stderr
    refused = run(b, "redeem", "-")
    assert refused.returncode == 1 and "grant refused (bad-request)" in refused.stderr


def test_redemption_reaches_the_main_process_with_workers(tmp_path: Path) -> None:
    """With ``workers: 2`` a redemption may land on a data-plane worker, which answers
    ``elsewhere``; the redeemer dials again until the main process (the store's writer) serves
    it."""
    ca_a, ca_b = TestCA(tmp_path / "pki-a", "party-a"), TestCA(tmp_path / "pki-b", "party-b")
    a = GatewayProcess(tmp_path, "site-a", ca_a, extra={"workers": 2}).start()
    b = GatewayProcess(tmp_path, "site-b", ca_b).start()
    try:
        text = create(a)["grant"]
        status, answer = call(b, "POST", "/v1/grants/redeem", {"grant": text})
        assert (status, answer["result"]) == (200, "accepted"), answer
        assert peer(a, "site-b")["spec"]["trust"]["ca"] == ca_b.ca_path.read_text()
        # single attempts land on either process: the main one decides, a worker defers
        results = {wire(a, b, text)["result"] for _ in range(8)}
        assert results <= {"used-up", "elsewhere"} and results, results
        print(f"workers: 8 single attempts answered {sorted(results)}")
    finally:
        for gw in (a, b):
            gw.stop()


def test_removing_one_of_a_partys_sites_closes_only_its_links(parties) -> None:
    """Party B has two sites (one CA), each redeems its own grant from A; A removes one of
    them (``DELETE /v1/peers/site-b``): that site's links close and it loses A, the other
    site stays linked and reachable."""
    a, b, _, ca_b = parties
    b2 = GatewayProcess(a.root.parent, "site-b2", ca_b).start()
    try:
        for gw, name in ((b, "site-b"), (b2, "site-b2")):
            text = create(a, peer_name=name)["grant"]
            status, answer = call(gw, "POST", "/v1/grants/redeem", {"grant": text})
            assert (status, answer["result"]) == (200, "accepted"), answer
        reachable = lambda gw, name: bool((peer(gw, name) or {}).get("status", {}).get("reachable"))  # noqa: E731
        for gw in (b, b2):
            assert _until(lambda gw=gw: reachable(gw, "site-a"), True), gw.name
        assert _until(lambda: reachable(a, "site-b2"), True)
        assert call(a, "DELETE", "/v1/peers/site-b")[0] in (200, 204)
        assert _until(lambda: reachable(b, "site-a"), False) is False  # its links closed
        assert _until(lambda: peer(b, "site-a")["status"]["links"], 0) == 0
        assert reachable(b2, "site-a") and reachable(a, "site-b2")  # the other site untouched
        assert peer(a, "site-b2")["status"]["links"] >= 1
    finally:
        b2.stop()
