"""Trust per peer, with real gateways on loopback: cl0 and cl1 share the fabric CA; partner is
another party's site with its own CA. cl0 holds Peer partner with ``spec.trust.ca`` = partner's
CA, partner holds Peer cl0 with ``spec.trust.ca`` = our fabric CA.

* partner is admitted as partner, traffic flows both ways (an import on each side);
* a partner-CA certificate named cl1 or cl0, and a fabric-CA certificate named partner, are
  refused at cl0 (``wrong-anchor``: counted, logged once per name);
* rotation: with old and new partner CA in the bundle, both are accepted; partner moves to its
  new certificate without a gap;
* trust removed: partner's links (both directions) close within seconds and it shows
  unreachable.
"""

from __future__ import annotations

import subprocess
import time

from test_admission import HEALTHZ, connect_refused, eventually_get, wait_for
from test_peer_port import counters, h2_request, handshake_failures, log_lines, tls_client

from support.fabric import FAST_HEARTBEAT, Fabric
from support.gateway import BIN, GatewayProcess
from support.pki import TestCA
from support.traffic import EchoServer, get

DEADLINE = 30.0  # generous: the machine is shared


def _partner(fabric: Fabric, ca: TestCA) -> GatewayProcess:
    """Gateway partner with its own CA (its bundle is that CA only)."""
    config = {"heartbeat": FAST_HEARTBEAT, "dataplane": {"connect_timeout": 2.0}}
    gw = GatewayProcess(fabric.root, "partner", ca, extra=config)
    gw.start()
    fabric.gateways["partner"] = gw
    fabric.echo["partner"] = EchoServer("partner")
    return gw


def _peer(fabric: Fabric, on: str, peer: str, trust: bytes | None, dial: bool = True) -> dict:
    spec = {"gateways": [fabric.endpoint(peer)]} if dial else {"dial": False}
    body: dict = {"name": peer, "spec": spec}
    if trust is not None:
        body["spec"]["trust"] = {"ca": trust.decode()}
    client = fabric.client(on)
    if any(p["name"] == peer for p in client.list("peers")):
        return client.replace("peers", peer, body)
    return client.create("peers", body)


def _import(fabric: Fabric, on: str, source: str) -> int:
    fabric.client(on).create(
        "imports",
        {"name": f"from-{source}", "spec": {"sources": [{"peer": source, "export": "http-echo"}]}},
    )
    return fabric.import_port(on, f"from-{source}")


def setup(fabric: Fabric, *, outbound_only: bool = False) -> tuple[TestCA, int, int]:
    """cl0, cl1 (fabric CA) and partner (its CA), peered with trust; each exports its echo,
    cl0 and partner import each other's. Returns (partner CA, port on cl0, port on partner).
    ``outbound_only``: cl0 never dials partner (dial: false), partner opens reverse links."""
    partner_ca = TestCA(fabric.root / "partner-pki", "partner-ca")
    fabric.start("cl0")
    fabric.start("cl1")
    fabric.add_peer("cl0", "cl1")
    _partner(fabric, partner_ca)
    _peer(fabric, "partner", "cl0", fabric.ca.cert_pem())
    _peer(fabric, "cl0", "partner", partner_ca.cert_pem(), dial=not outbound_only)
    for name in ("cl0", "partner"):
        fabric.export_echo(name)
        fabric.allow_all(name)
    cl0_port = _import(fabric, "cl0", "partner")
    partner_port = _import(fabric, "partner", "cl0")
    assert eventually_get(cl0_port, "partner", DEADLINE) == "partner"
    assert eventually_get(partner_port, "cl0", DEADLINE) == "cl0"
    return partner_ca, cl0_port, partner_port


def _peer_status(fabric: Fabric, on: str, peer: str) -> dict:
    return fabric.client(on).get("peers", peer)["status"]


def test_a_partner_with_its_own_ca_is_accepted_as_its_name_and_serves_both_ways(
    fabric: Fabric,
) -> None:
    partner_ca, _, _ = setup(fabric)
    status = _peer_status(fabric, "cl0", "partner")
    assert status["reachable"] is True and status["links"] >= 1
    [anchor] = status["trust"]
    assert anchor["subject"] == "CN=partner-ca"
    assert anchor["fingerprint_sha256"] == partner_ca.fingerprint()
    assert _peer_status(fabric, "cl0", "cl1")["trust"] == []
    table = subprocess.run(
        [str(BIN / "gwctl"), "--socket", str(fabric["cl0"].socket), "get", "peers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert partner_ca.fingerprint() in table and "BEGIN CERTIFICATE" not in table
    assert "CN=partner-ca" in table and "fabric" in table  # cl1: the fabric CA
    # a certificate of partner's CA is admitted at cl0's peer port as partner
    with tls_client(fabric, partner_ca.issue("partner"), fabric.ca.ca_path) as sock:
        assert h2_request(sock, HEALTHZ)[0] == 200
    log_lines(fabric, "peer handshake refused")  # asserts no PEM in the log
    # gwctl: --trust-ca none removes the anchors, --trust-ca FILE sets them
    gwctl = [str(BIN / "gwctl"), "--socket", str(fabric["cl0"].socket), "update", "peer"]
    subprocess.run([*gwctl, "partner", "--trust-ca", "none"], check=True, timeout=30)
    assert "trust" not in fabric.client("cl0").get("peers", "partner")["spec"]
    ca_file = str(partner_ca.ca_path)
    subprocess.run([*gwctl, "partner", "--trust-ca", ca_file], check=True, timeout=30)
    assert _peer_status(fabric, "cl0", "partner")["trust"] == status["trust"]


def test_a_foreign_certificate_cannot_speak_for_our_sites_nor_ours_for_the_partner(
    fabric: Fabric,
) -> None:
    partner_ca, cl0_port, _ = setup(fabric)
    before = handshake_failures(fabric)
    impostors = {
        "cl1": partner_ca.issue("cl1"),  # a local site's name from the partner's CA
        "cl0": partner_ca.issue("cl0"),  # this gateway's own name
        "partner": fabric.ca.issue("partner"),  # our CA cannot speak for the partner
    }
    for cert in impostors.values():
        for _ in range(3):
            assert connect_refused(fabric, cert)
    want = before.get("wrong-anchor", 0) + 9
    assert wait_for(lambda: handshake_failures(fabric).get("wrong-anchor", 0) == want), (
        handshake_failures(fabric)
    )
    lines = [
        line
        for line in log_lines(fabric, "peer handshake refused")
        if line["reason"] == "wrong-anchor"
    ]
    assert sorted(line["peer_name"] for line in lines) == ["cl0", "cl1", "partner"]  # once each
    assert eventually_get(cl0_port, "partner", DEADLINE) == "partner"  # partner unaffected


def test_anchor_rotation_with_overlap_then_removal_closes_the_partners_links(
    fabric: Fabric,
) -> None:
    partner_ca, cl0_port, partner_port = setup(fabric)
    new_ca = TestCA(fabric.root / "partner-pki-2", "partner-ca-2")
    both = partner_ca.cert_pem() + new_ca.cert_pem()
    _peer(fabric, "cl0", "partner", both)
    for ca in (partner_ca, new_ca):  # the overlap: old and new certificates both admitted
        with tls_client(fabric, ca.issue("partner"), fabric.ca.ca_path) as sock:
            assert h2_request(sock, HEALTHZ)[0] == 200
    # partner moves to its new CA (its file watcher reloads); then cl0 drops the old CA
    partner = fabric["partner"]
    partner.install_tls(new_ca.issue("partner"), both)
    assert wait_for(lambda: "TLS material reloaded" in partner.log_text(), DEADLINE), (
        partner.log_tail()
    )
    _peer(fabric, "cl0", "partner", new_ca.cert_pem())
    assert eventually_get(cl0_port, "partner", DEADLINE) == "partner"
    assert eventually_get(partner_port, "cl0", DEADLINE) == "cl0"
    assert connect_refused(fabric, partner_ca.issue("partner"))  # old CA: no longer trusted

    # trust removed: every link of partner (both directions) closes within seconds
    assert wait_for(lambda: _peer_status(fabric, "partner", "cl0")["links"] >= 1, DEADLINE)
    untrusted = "clusterlink_peer_links_untrusted"
    before = sum(counters(fabric, untrusted).values())
    started = time.monotonic()
    _peer(fabric, "cl0", "partner", None)
    assert wait_for(
        lambda: (
            _peer_status(fabric, "partner", "cl0")["links"] == 0
            and _peer_status(fabric, "cl0", "partner")["links"] == 0
        ),
        DEADLINE,
    )
    elapsed = time.monotonic() - started
    closed = sum(counters(fabric, untrusted).values()) - before
    print(f"trust removed: {closed:.0f} links closed, both sides at 0 links in {elapsed:.2f} s")
    assert closed >= 1
    assert wait_for(lambda: _peer_status(fabric, "cl0", "partner")["reachable"] is False, DEADLINE)
    assert get(cl0_port) != "partner"  # no link can be made any more
    lines = log_lines(fabric, "peer links closed: certificate no longer trusted for its name")
    assert lines and lines[0]["peers"] == ["partner"]


def test_an_outbound_only_partner_reaches_us_over_reverse_links_until_its_trust_goes(
    fabric: Fabric,
) -> None:
    """Reverse links dialed by the partner (verified against its own anchors for cl0: our
    fabric CA) carry cl0's streams to partner; removing the trust closes them."""
    _, cl0_port, partner_port = setup(fabric, outbound_only=True)
    status = _peer_status(fabric, "cl0", "partner")
    assert status["via"] == "reverse" and status["links"] >= 1
    assert _peer_status(fabric, "partner", "cl0")["reverse_links"] >= 1
    started = time.monotonic()
    _peer(fabric, "cl0", "partner", None, dial=False)
    assert wait_for(
        lambda: (
            _peer_status(fabric, "cl0", "partner")["links"] == 0
            and _peer_status(fabric, "partner", "cl0")["reverse_links"] == 0
            and _peer_status(fabric, "partner", "cl0")["links"] == 0
        ),
        DEADLINE,
    )
    print(
        f"trust removed (reverse links): both sides at 0 links in {time.monotonic() - started:.2f} s"
    )
    assert get(cl0_port) != "partner" and get(partner_port) != "cl0"
