"""The peer port under hostile or broken clients: each is refused cleanly, and real traffic
through the same gateway keeps working."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from support.fabric import Fabric
from support.pki import Issued, TestCA
from support.traffic import get

HANDSHAKE_TIMEOUT = 1.0


@pytest.fixture
def site(fabric: Fabric):
    """cl0 exports http-echo (allowed for cl1 only); cl1 imports it; both allow all."""
    fabric.start("cl0", extra={"listen": {"handshake_timeout": HANDSHAKE_TIMEOUT}})
    fabric.export_echo("cl0", allowed_peers=["cl1"])
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl1", "cl0")
    fabric.client("cl1").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    port = fabric.import_port("cl1", "http-echo")
    assert get(port) == "cl0"
    return fabric, port


def address(fabric: Fabric) -> tuple[str, int]:
    ep = fabric.endpoint("cl0")
    return ep["host"], ep["port"]


def tls_client(fabric: Fabric, cert: Issued | None, ca: Path, alpn: str = "h2") -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    ctx.set_alpn_protocols([alpn])
    sock = socket.create_connection(address(fabric), timeout=5)
    return ctx.wrap_socket(sock, server_hostname="cl0")


def refused(sock: ssl.SSLSocket) -> bool:
    """A TLS 1.3 server rejects a client certificate after the client's handshake finished:
    the rejection shows on the first read."""
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        return sock.recv(1024) == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def h2_request(
    sock: ssl.SSLSocket, headers: list[tuple[str, str]]
) -> tuple[int | None, bytes, list]:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    status, body, seen = None, b"", []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            seen.append(ev)
            if isinstance(ev, h2.events.ResponseReceived):
                status = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(
                ev, (h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated)
            ):
                return status, body, seen
        sock.sendall(conn.data_to_send())
    return status, body, seen


def still_serving(fabric: Fabric, port: int) -> None:
    assert [get(port) for _ in range(3)] == ["cl0"] * 3
    assert fabric["cl0"].proc.poll() is None


def test_garbage_and_plain_http_are_dropped(site) -> None:
    fabric, port = site
    for payload in (b"\x00\xff" * 512, b"GET / HTTP/1.1\r\nHost: cl0\r\n\r\n"):
        started = time.monotonic()
        with socket.create_connection(address(fabric), timeout=HANDSHAKE_TIMEOUT + 4) as sock:
            sock.sendall(payload)
            received = b""
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except ConnectionResetError:
                pass
        # closed by the server (at most a TLS alert, never an HTTP answer), promptly
        assert not received.startswith(b"HTTP"), received[:40]
        assert len(received) < 64
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 3
    still_serving(fabric, port)


def test_handshake_refusals(site) -> None:
    fabric, port = site
    foreign = TestCA(fabric.root / "foreign", name="other-fabric")
    cases = {
        "no client certificate": (None, fabric.ca.ca_path),
        "certificate from another CA": (foreign.issue("cl1"), fabric.ca.ca_path),
        "expired fabric certificate": (fabric.ca.issue("old-cl1", expired=True), fabric.ca.ca_path),
    }
    for why, (cert, ca) in cases.items():
        try:
            sock = tls_client(fabric, cert, ca)
        except (ssl.SSLError, ConnectionResetError):
            continue  # refused during the handshake itself
        with sock:
            assert refused(sock), why
    still_serving(fabric, port)


def test_wrong_alpn_is_closed(site) -> None:
    fabric, port = site
    try:
        sock = tls_client(fabric, fabric.ca.issue("cl1"), fabric.ca.ca_path, alpn="http/1.1")
    except (ssl.SSLError, ConnectionResetError):
        sock = None
    if sock is not None:
        with sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: cl0\r\n\r\n")
            with contextlib.suppress(ssl.SSLError, ConnectionResetError):
                assert sock.recv(4096) == b""
    still_serving(fabric, port)


def test_slowloris_times_out(site) -> None:
    fabric, port = site
    idle = [socket.create_connection(address(fabric), timeout=10) for _ in range(20)]
    partial = socket.create_connection(address(fabric), timeout=10)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then silence
    still_serving(fabric, port)  # while they hang, others are served
    started = time.monotonic()
    for sock in [*idle, partial]:
        with sock, contextlib.suppress(ConnectionResetError):
            assert sock.recv(1024) == b""
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 4
    still_serving(fabric, port)


def test_requests_with_a_valid_certificate(site) -> None:
    fabric, port = site
    cl1 = fabric.ca.issue("cl1")
    cl2 = fabric.ca.issue("cl2")
    with tls_client(fabric, cl1, fabric.ca.ca_path) as sock:
        status, body, _ = h2_request(
            sock,
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "cl0"),
                (":path", "/healthz"),
            ],
        )
        assert status == 200 and json.loads(body)["name"] == "cl0"
    with tls_client(fabric, cl1, fabric.ca.ca_path) as sock:
        status, body, _ = h2_request(
            sock,
            [(":method", "CONNECT"), (":authority", "cl0:443"), ("x-clusterlink-export", "nope")],
        )
        assert status == 404 and "not found" in json.loads(body)["reason"]
    # cl2's certificate with headers claiming to be cl1: identity comes from the certificate only
    with tls_client(fabric, cl2, fabric.ca.ca_path) as sock:
        status, body, _ = h2_request(
            sock,
            [
                (":method", "CONNECT"),
                (":authority", "cl0:443"),
                ("x-clusterlink-export", "http-echo"),
                ("x-clusterlink-peer", "cl1"),
                ("x-clusterlink-import", "http-echo"),
            ],
        )
        assert status == 403 and "allowed_peers" in json.loads(body)["reason"]
    # a huge header block: refused, the gateway stays up
    with tls_client(fabric, cl1, fabric.ca.ca_path) as sock:
        status, _, _events = h2_request(
            sock,
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "cl0"),
                (":path", "/healthz"),
                ("x-big", "a" * 200_000),
            ],
        )
        assert status != 200
    still_serving(fabric, port)


def test_a_peer_must_carry_its_name(site) -> None:
    """A Peer named cl9 whose endpoint presents cl0's certificate is never reachable."""
    fabric, port = site
    cl1 = fabric.client("cl1")
    cl1.create("peers", {"name": "cl9", "spec": {"gateways": [fabric.endpoint("cl0")]}})
    time.sleep(1.5)
    status = cl1.get("peers", "cl9")["status"]
    assert status["reachable"] is False, status
    assert "cl9" in (status["error"] or "") or "certificate" in (status["error"] or "").lower(), (
        status
    )
    still_serving(fabric, port)
