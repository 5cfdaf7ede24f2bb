"""The peer port under hostile or broken clients: each is refused cleanly, logged (one line,
no certificate bytes) and counted by reason, and real traffic through the same gateway keeps
working."""

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

from clusterlink_gateway.peering.accept import LOG_LINES_PER_SECOND
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


def tls_client(
    fabric: Fabric, cert: Issued | None, ca: Path, alpn: str = "h2", server_name: str = "cl0"
) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.check_hostname = server_name == "cl0"  # else: the server must refuse, not the client
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    ctx.set_alpn_protocols([alpn])
    sock = socket.create_connection(address(fabric), timeout=5)
    return ctx.wrap_socket(sock, server_hostname=server_name)


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


def counters(fabric: Fabric, family: str, name: str = "cl0") -> dict[str, float]:
    """``{label-set: value}`` of one counter family on /metrics."""
    out = {}
    for line in fabric.client(name).raw("GET", "/metrics").body.splitlines():
        if line.startswith(f"{family}_total{{"):
            labels, _, value = line[len(family) + 7 :].rpartition("} ")
            out[labels] = float(value)
    return out


def handshake_failures(fabric: Fabric) -> dict[str, float]:
    """clusterlink_peer_handshake_failures_total of cl0, by reason."""
    raw = counters(fabric, "clusterlink_peer_handshake_failures")
    return {labels.split('"')[1]: value for labels, value in raw.items()}


def log_lines(fabric: Fabric, msg: str, name: str = "cl0") -> list[dict]:
    text = fabric[name].log_text()
    assert "BEGIN CERTIFICATE" not in text and "PRIVATE KEY" not in text
    return [json.loads(line) for line in text.splitlines() if f'"msg": "{msg}"' in line]


def expect_refusals(fabric: Fabric, before: dict[str, float], **want: int) -> None:
    """cl0 counted exactly ``want`` (reason with - as _) more handshake refusals and logged
    one line for each, naming the client address and the reason class."""
    want = {k.replace("_", "-"): v for k, v in want.items()}
    deadline = time.monotonic() + 10
    while True:
        now = handshake_failures(fabric)
        delta = {r: now[r] - before.get(r, 0) for r in now if now[r] != before.get(r, 0)}
        if delta == want or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert delta == want
    lines = log_lines(fabric, "peer handshake refused")
    for reason, count in want.items():
        mine = [line for line in lines if line["reason"] == reason]
        assert len(mine) >= min(count, LOG_LINES_PER_SECOND), (reason, lines)
        assert all(line["client_address"].startswith("127.0.0.1:") for line in mine)
        assert all(line["level"] in ("warning", "info") and line["detail"] for line in mine)


def test_garbage_and_plain_http_are_dropped(site) -> None:
    fabric, port = site
    before = handshake_failures(fabric)
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
    expect_refusals(fabric, before, not_tls=2)
    still_serving(fabric, port)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no client certificate", "no-certificate"),
        ("certificate from another CA", "unknown-ca"),
        ("expired fabric certificate", "expired"),
        ("valid certificate, SNI names another peer", "bad-name"),
    ],
)
def test_handshake_refusals(site, case: str, reason: str) -> None:
    fabric, port = site
    before = handshake_failures(fabric)
    cert: Issued | None = fabric.ca.issue("cl1")
    server_name = "cl0"
    if case == "no client certificate":
        cert = None
    elif case == "certificate from another CA":
        cert = TestCA(fabric.root / "foreign", name="other-fabric").issue("cl1")
    elif case == "expired fabric certificate":
        cert = fabric.ca.issue("old-cl1", dns=["cl1"], expired=True)
    else:
        server_name = "cl9"
    try:
        sock = tls_client(fabric, cert, fabric.ca.ca_path, server_name=server_name)
    except (ssl.SSLError, ConnectionResetError):
        pass  # refused during the handshake itself
    else:
        with sock:
            assert refused(sock), case
    expect_refusals(fabric, before, **{reason.replace("-", "_"): 1})
    still_serving(fabric, port)
    assert handshake_failures(fabric) == {**before, reason: before.get(reason, 0) + 1}


def test_wrong_alpn_is_closed(site) -> None:
    fabric, port = site
    before = handshake_failures(fabric)
    try:
        sock = tls_client(fabric, fabric.ca.issue("cl1"), fabric.ca.ca_path, alpn="http/1.1")
    except (ssl.SSLError, ConnectionResetError):
        sock = None
    if sock is not None:
        with sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: cl0\r\n\r\n")
            with contextlib.suppress(ssl.SSLError, ConnectionResetError):
                assert sock.recv(4096) == b""
    expect_refusals(fabric, before, no_alpn=1)
    still_serving(fabric, port)


def test_slowloris_times_out(site) -> None:
    fabric, port = site
    before = handshake_failures(fabric)
    idle = [socket.create_connection(address(fabric), timeout=10) for _ in range(20)]
    partial = socket.create_connection(address(fabric), timeout=10)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then silence
    still_serving(fabric, port)  # while they hang, others are served
    started = time.monotonic()
    for sock in [*idle, partial]:
        with sock, contextlib.suppress(ConnectionResetError):
            assert sock.recv(1024) == b""
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 4
    expect_refusals(fabric, before, timeout=21)  # logged up to 10 a second, all counted
    still_serving(fabric, port)


def test_requests_with_a_valid_certificate(site) -> None:
    fabric, port = site
    cl1 = fabric.ca.issue("cl1")
    cl2 = fabric.ca.issue("cl2")
    # cl2 is a Peer of cl0 (admitted on the peer port), not in allowed_peers of http-echo
    dead_end = {"gateways": [{"host": "127.0.0.1", "port": 9}]}
    fabric.client("cl0").create("peers", {"name": "cl2", "spec": dead_end})
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
    # cl2 (a fabric peer not in allowed_peers of http-echo) is refused ...
    connect = [(":method", "CONNECT"), (":authority", "cl0:443")]
    with tls_client(fabric, cl2, fabric.ca.ca_path) as sock:
        status, body, _ = h2_request(sock, [*connect, ("x-clusterlink-export", "http-echo")])
        assert status == 403 and "allowed_peers" in json.loads(body)["reason"]
    # ... also with headers claiming to be cl1: identity comes from the certificate only
    with tls_client(fabric, cl2, fabric.ca.ca_path) as sock:
        status, body, _ = h2_request(
            sock,
            [
                *connect,
                ("x-clusterlink-export", "http-echo"),
                ("x-clusterlink-peer", "cl1"),
                ("x-clusterlink-import", "http-echo"),
            ],
        )
        assert status == 403 and "certificate" in json.loads(body)["reason"]
    # a malformed CONNECT (no export named) is a 400
    with tls_client(fabric, cl1, fabric.ca.ca_path) as sock:
        status, body, _ = h2_request(sock, connect)
        assert status == 400 and "x-clusterlink-export" in json.loads(body)["reason"]
    refused = counters(fabric, "clusterlink_peer_requests_refused")
    assert refused == {
        'peer="cl1",reason="unknown-export"': 1,
        'peer="cl2",reason="not-allowed"': 1,
        'peer="cl2",reason="spoofed-identity"': 1,
        'peer="cl1",reason="bad-request"': 1,
    }
    lines = log_lines(fabric, "connect refused by allowed_peers")
    assert [(line["peer"], line["export"]) for line in lines] == [("cl2", "http-echo")]
    lines = log_lines(fabric, "connect refused")
    assert [(line["peer"], line["reason"]) for line in lines] == [
        ("cl2", "spoofed-identity"),
        ("cl1", "bad-request"),
    ]
    assert all(line["client_address"].startswith("127.0.0.1:") for line in lines)
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
    # cl0 refuses the handshake itself (SNI cl9 is not its name), and says so
    assert handshake_failures(fabric).get("bad-name", 0) >= 1
    assert any(line["reason"] == "bad-name" for line in log_lines(fabric, "peer handshake refused"))
    still_serving(fabric, port)
