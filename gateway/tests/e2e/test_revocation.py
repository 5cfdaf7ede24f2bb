"""Revocation (tls.revocation): a revoked peer's links are closed within 5 s of the reload (CRL
file through the watcher, serial list through SIGHUP), its new handshakes are refused with
reason ``revoked``, other peers are untouched, and a CRL from another CA is refused with the old
revocation state kept. Latencies are printed (recorded in docs/benchmarks.md)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from cryptography import x509

from support.fabric import Fabric
from support.pki import TestCA
from support.probes import TcpEcho, echo_once, log_records, metrics, poll, roundtrip

REVOCATION_BOUND_S = 5.0


def serial_of(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def wait_closed(sock: socket.socket, timeout: float = 15.0) -> float:
    """Block until the relayed connection ends (EOF or reset); monotonic time when it did."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    return time.monotonic()


@pytest.fixture
def three_sites(fabric: Fabric, tmp_path: Path):  # type: ignore[no-untyped-def]
    """cl0 exports an echo service (with an empty CRL configured); cl1 and cl2 import it and
    each hold one long-lived connection through it."""
    crl = fabric.ca.crl(tmp_path / "fabric.crl", [])
    fabric.start("cl0", extra={"tls": {"revocation": {"crl": str(crl)}}})
    echo = TcpEcho()
    fabric.client("cl0").create("exports", {"name": "echo", "spec": {"port": echo.port}})
    fabric.allow_all("cl0", "cl1", "cl2")
    conns = {}
    for importer in ("cl1", "cl2"):
        fabric.add_peer(importer, "cl0")
        fabric.client(importer).create(
            "imports", {"name": "echo", "spec": {"sources": [{"peer": "cl0"}]}}
        )
        port = fabric.import_port(importer, "echo")
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert roundtrip(sock, b"hello") == b"hello"
        conns[importer] = (sock, port)
    yield crl, conns
    for sock, _ in conns.values():
        sock.close()
    echo.close()


def test_crl_revokes_a_connected_peer_within_5s(
    fabric: Fabric, three_sites, capsys: pytest.CaptureFixture[str]
) -> None:
    crl, conns = three_sites
    revoked_sock, revoked_port = conns["cl1"]
    kept_sock, kept_port = conns["cl2"]
    before = metrics(fabric.client("cl0")).get(
        'clusterlink_peer_handshake_failures_total{reason="revoked"}', 0
    )

    t0 = time.monotonic()
    fabric.ca.crl(crl, [serial_of(fabric["cl1"].tls_dir / "gateway.crt")])  # the watcher
    latency = wait_closed(revoked_sock) - t0
    with capsys.disabled():
        print(f"\nrevocation latency (CRL file, watcher, server side): {latency:.2f} s")
    assert latency < REVOCATION_BOUND_S

    # cl2 is not revoked: its connection keeps flowing and new ones work
    assert roundtrip(kept_sock, b"still here") == b"still here"
    assert echo_once(kept_port) == b"ping"
    # cl1's new handshakes are refused as revoked (its pool keeps redialing)
    assert poll(
        lambda: (
            metrics(fabric.client("cl0")).get(
                'clusterlink_peer_handshake_failures_total{reason="revoked"}', 0
            )
            > before
        )
    )
    assert echo_once(revoked_port) is None
    closed = log_records(fabric["cl0"], "peer link closed: certificate revoked")
    assert closed and closed[0]["peer"] == "cl1" and closed[0]["side"] == "server"
    refused = [r for r in log_records(fabric["cl0"], "peer handshake refused")]
    assert any(r["reason"] == "revoked" for r in refused)
    m = metrics(fabric.client("cl0"))
    assert m['clusterlink_peer_links_revoked_total{side="server"}'] >= 1
    assert m["clusterlink_tls_reloads_total"] >= 1


def test_serial_list_on_sighup_closes_dialed_links(
    fabric: Fabric, three_sites, capsys: pytest.CaptureFixture[str]
) -> None:
    """The importer cl1 revokes the exporter cl0's certificate: its dialed links close and it
    refuses to dial cl0 again (client side); cl2 is unaffected."""
    _, conns = three_sites
    sock, port = conns["cl1"]
    kept_sock, _ = conns["cl2"]
    gw = fabric["cl1"]
    serial = serial_of(fabric["cl0"].tls_dir / "gateway.crt")
    gw.config["tls"]["revocation"] = {"serials": [f"{serial:x}"]}
    gw.write_config()
    t0 = time.monotonic()
    gw.signal(signal.SIGHUP)
    latency = wait_closed(sock) - t0
    with capsys.disabled():
        print(f"\nrevocation latency (serial list, SIGHUP, client side): {latency:.2f} s")
    assert latency < REVOCATION_BOUND_S
    assert roundtrip(kept_sock, b"unaffected") == b"unaffected"
    assert echo_once(port) is None
    assert poll(
        lambda: "revoked" in (fabric.client("cl1").get("peers", "cl0")["status"]["error"] or "")
    )
    closed = log_records(fabric["cl1"], "peer link closed: certificate revoked")
    assert closed and closed[0]["peer"] == "cl0" and closed[0]["side"] == "client"
    reloaded = log_records(fabric["cl1"], "configuration reloaded")
    assert reloaded[-1]["applied"] == ["tls.revocation.serials"]
    assert reloaded[-1]["needs_restart"] == []


def test_crl_from_another_ca_is_refused_and_old_state_kept(
    fabric: Fabric, three_sites, tmp_path: Path
) -> None:
    crl, conns = three_sites
    sock, port = conns["cl1"]
    fabric.ca.crl(crl, [serial_of(fabric["cl1"].tls_dir / "gateway.crt")])
    wait_closed(sock)
    # an attacker's (or a mistaken) CRL: signed by another CA, revoking nothing
    other = TestCA(tmp_path / "other", "other-fabric")
    other.crl(crl, [])
    assert poll(
        lambda: (
            metrics(fabric.client("cl0")).get(
                'clusterlink_tls_reload_failures_total{reason="bad-crl"}', 0
            )
            >= 1
        )
    )
    fabric["cl0"].signal(signal.SIGHUP)  # SIGHUP refuses it the same way
    assert poll(
        lambda: bool(log_records(fabric["cl0"], "reload failed; keeping the running configuration"))
    )
    failed = log_records(fabric["cl0"], "reload failed; keeping the running configuration")
    assert "not signed by a CA of the fabric bundle" in failed[-1]["error"]
    refused = log_records(fabric["cl0"], "TLS reload refused; keeping the current material")
    assert len(refused) == 1 and refused[0]["reason"] == "bad-crl"
    # the old revocation state holds: cl1 stays out, cl2 stays in
    time.sleep(2)
    assert echo_once(port) is None
    assert roundtrip(conns["cl2"][0], b"ok") == b"ok"
