"""Admission on the peer port and honest client attributes, with real gateways and real TLS.

* Peer objects are an allowlist: a fabric-CA certificate whose DNS SAN name is not a Peer here
  is refused (``unknown-peer``), counted, and logged once per name and minute; a CN-only
  certificate is refused (``no-dns-san``); deleting a Peer closes its links at once and
  re-creating it admits it again; ``listen.open_fabric: true`` admits any fabric name.
* ``Peer.spec.client_attributes: ignore`` makes the exporter evaluate its policies as if the
  client address (asserted by the importer) were unknown.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from test_peer_port import (
    counters,
    h2_request,
    handshake_failures,
    log_lines,
    refused,
    still_serving,
    tls_client,
)

from support.fabric import Fabric
from support.traffic import get

HANDSHAKE_TIMEOUT = 1.0
HEALTHZ = [(":method", "GET"), (":scheme", "https"), (":authority", "cl0"), (":path", "/healthz")]


def serve(fabric: Fabric, *, open_fabric: bool = False) -> int:
    """cl0 exports http-echo, cl1 imports it; both have a Peer for the other (full mesh)."""
    listen = {"handshake_timeout": HANDSHAKE_TIMEOUT, "open_fabric": open_fabric}
    fabric.start("cl0", extra={"listen": listen})
    fabric.export_echo("cl0")
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl1", "cl0")  # and cl0 gets a Peer cl1
    fabric.client("cl1").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    port = fabric.import_port("cl1", "http-echo")
    assert eventually_get(port) == "cl0"
    return port


def eventually_get(port: int, want: str = "cl0", timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while (answer := get(port)) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    return answer


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def exported(fabric: Fabric) -> float:
    """Connections cl0 relayed to its export so far."""
    return sum(counters(fabric, "clusterlink_export_connections").values())


def connect_refused(fabric: Fabric, cert) -> bool:  # type: ignore[no-untyped-def]
    try:
        sock = tls_client(fabric, cert, fabric.ca.ca_path)
    except OSError:  # refused during the handshake itself (ssl.SSLError, reset)
        return True
    with sock:
        return refused(sock)


def test_a_fabric_certificate_that_is_not_a_peer_is_refused_and_logged_once(
    fabric: Fabric,
) -> None:
    port = serve(fabric)
    before = handshake_failures(fabric)
    stranger = fabric.ca.issue("cl9")  # a valid fabric certificate, but no Peer cl9 on cl0
    for _ in range(50):
        assert connect_refused(fabric, stranger)
    assert wait_for(
        lambda: (
            handshake_failures(fabric).get("unknown-peer", 0) == before.get("unknown-peer", 0) + 50
        )
    ), handshake_failures(fabric)
    lines = [
        line
        for line in log_lines(fabric, "peer handshake refused")
        if line["reason"] == "unknown-peer"
    ]
    assert len(lines) == 1, lines  # 50 tries in well under a minute: one line
    assert lines[0]["peer_name"] == "cl9" and "cl9" in lines[0]["detail"]
    assert lines[0]["client_address"].startswith("127.0.0.1:")
    # a second unknown name gets its own line
    assert connect_refused(fabric, fabric.ca.issue("cl8"))
    assert wait_for(
        lambda: (
            [
                line["peer_name"]
                for line in log_lines(fabric, "peer handshake refused")
                if line["reason"] == "unknown-peer"
            ]
            == ["cl9", "cl8"]
        )
    )
    still_serving(fabric, port)


def test_a_cn_only_certificate_is_refused(fabric: Fabric) -> None:
    port = serve(fabric)
    before = handshake_failures(fabric)
    cn_only = fabric.ca.issue("cl1", san=False)  # cl1 IS a Peer of cl0, but only as a CN
    assert connect_refused(fabric, cn_only)
    assert wait_for(
        lambda: handshake_failures(fabric).get("no-dns-san", 0) == before.get("no-dns-san", 0) + 1
    )
    lines = [
        line
        for line in log_lines(fabric, "peer handshake refused")
        if line["reason"] == "no-dns-san"
    ]
    assert len(lines) == 1 and "DNS SAN" in lines[0]["detail"]
    still_serving(fabric, port)


def test_deleting_a_peer_closes_its_links_and_recreating_admits_it(
    fabric: Fabric, capsys: pytest.CaptureFixture[str]
) -> None:
    port = serve(fabric)
    cl0 = fabric.client("cl0")
    peer_cl1 = cl0.get("peers", "cl1")
    # a connection in flight through cl1's import (relayed over a link cl1 -> cl0): a request
    # whose headers never end, so the echo service waits for the rest
    held = socket.create_connection(("127.0.0.1", port), timeout=10)
    held.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")
    assert wait_for(lambda: exported(fabric) == 2)  # serve()'s GET and this one
    cl1_cert = fabric.ca.issue("cl1")
    with tls_client(fabric, cl1_cert, fabric.ca.ca_path) as sock:
        assert h2_request(sock, HEALTHZ)[0] == 200
    before = handshake_failures(fabric)

    started = time.monotonic()
    cl0.delete("peers", "cl1")
    try:
        while held.recv(65536):  # the stream is reset with its link: the relay closes
            pass
    except (ConnectionResetError, TimeoutError):
        pass
    cut_after = time.monotonic() - started
    held.close()
    with capsys.disabled():
        print(f"\nadmission: in-flight stream of a deleted peer cut after {cut_after:.3f} s")
    assert cut_after < 5.0  # promptly (measured ~ms; generous bound for a busy machine)
    assert wait_for(lambda: not fabric.client("cl0").status()["peers"])
    # no new link, no CONNECT: through the import and directly with cl1's certificate
    assert get(port) != "cl0"
    assert connect_refused(fabric, cl1_cert)
    assert wait_for(
        lambda: handshake_failures(fabric).get("unknown-peer", 0) > before.get("unknown-peer", 0)
    )
    assert any(
        line.get("peer_name") == "cl1" and line["reason"] == "unknown-peer"
        for line in log_lines(fabric, "peer handshake refused")
    )
    assert any(
        line["peer"] == "cl1" for line in log_lines(fabric, "links of a removed peer closed")
    )

    cl0.create("peers", {k: peer_cl1[k] for k in ("name", "labels", "spec")})
    with tls_client(fabric, cl1_cert, fabric.ca.ca_path) as sock:  # admitted at once
        assert h2_request(sock, HEALTHZ)[0] == 200
    assert eventually_get(port) == "cl0"


def test_creating_a_peer_admits_it_at_once(fabric: Fabric) -> None:
    serve(fabric)
    cl2 = fabric.ca.issue("cl2")
    assert connect_refused(fabric, cl2)
    fabric.client("cl0").create(
        "peers", {"name": "cl2", "spec": {"gateways": [{"host": "127.0.0.1", "port": 9}]}}
    )
    with tls_client(fabric, cl2, fabric.ca.ca_path) as sock:
        status, body, _ = h2_request(sock, HEALTHZ)
        assert status == 200 and json.loads(body)["name"] == "cl0"


def test_open_fabric_admits_a_name_that_is_not_a_peer(fabric: Fabric) -> None:
    port = serve(fabric, open_fabric=True)
    before = handshake_failures(fabric)
    with tls_client(fabric, fabric.ca.issue("cl9"), fabric.ca.ca_path) as sock:
        status, body, _ = h2_request(sock, HEALTHZ)
        assert status == 200 and json.loads(body)["name"] == "cl0"
    # the SAN is still required, and deleting a Peer does not cut it in an open fabric
    assert connect_refused(fabric, fabric.ca.issue("cl7", san=False))
    assert wait_for(lambda: handshake_failures(fabric).get("no-dns-san", 0) > 0)
    assert handshake_failures(fabric).get("unknown-peer", 0) == before.get("unknown-peer", 0)
    fabric.client("cl0").delete("peers", "cl1")
    time.sleep(0.5)
    assert get(port) == "cl0"


# -- honest client attributes ------------------------------------------------------------------

LOOPBACK_ONLY = {
    "name": "loopback-clients",
    "spec": {"action": "allow", "from": [{"clientCIDRs": ["127.0.0.0/8"]}], "to": [{}]},
}


def cidr_site(fabric: Fabric) -> int:
    """cl0 allows http-echo only to clients in 127.0.0.0/8 (as asserted by the importer)."""
    fabric.start("cl0")
    fabric.export_echo("cl0")
    fabric.client("cl0").create("policies", LOOPBACK_ONLY)
    fabric.allow_all("cl1")
    fabric.add_peer("cl1", "cl0")
    fabric.client("cl1").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    return fabric.import_port("cl1", "http-echo")


def set_client_attributes(fabric: Fabric, value: str | None) -> None:
    cl0 = fabric.client("cl0")
    peer = cl0.get("peers", "cl1")
    spec = {**peer["spec"], "client_attributes": value}
    cl0.replace("peers", "cl1", {"name": "cl1", "labels": peer["labels"], "spec": spec})
    assert cl0.get("peers", "cl1")["spec"].get("client_attributes") == value


def test_client_attributes_ignored_make_a_cidr_allow_not_match(fabric: Fabric) -> None:
    port = cidr_site(fabric)
    assert eventually_get(port) == "cl0"  # default: a fabric peer's claim is honoured
    set_client_attributes(fabric, "ignore")
    assert get(port) != "cl0"
    denied = [line for line in log_lines(fabric, "ingress denied") if line["peer"] == "cl1"]
    assert denied and denied[-1]["client_ignored"] is True
    assert denied[-1]["client"] == "127.0.0.1"  # logged as claimed, not used
    set_client_attributes(fabric, "honor")
    assert get(port) == "cl0"
    set_client_attributes(fabric, None)
    assert get(port) == "cl0"
