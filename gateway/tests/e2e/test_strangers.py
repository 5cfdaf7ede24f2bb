"""Bounded cost for strangers: 5,000 unauthenticated TCP connections held against the peer port
(from five loopback addresses, half of them stalled after a ClientHello) cost the exporter
little memory, hand it back afterwards, fail no request through an existing import, and keep
the port open to a legitimate new peer from another address."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import ssl
import threading
import time

import pytest

from clusterlink_gateway.peering.gate import MAX_HANDSHAKES_PER_SOURCE
from support.fabric import Fabric
from support.traffic import get

pytestmark = pytest.mark.slow

STRANGERS = 5000
SOURCES = [f"127.0.0.{i}" for i in range(2, 7)]  # the flood; the legitimate peers use 127.0.0.1
MiB = 1024


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def client_hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="cl0")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def metric(fabric: Fabric, sample: str) -> float:
    """The value of one sample (name and labels, as printed) on cl0's /metrics; 0 if absent."""
    for line in fabric.client("cl0").raw("GET", "/metrics").body.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


OVERLOAD = 'clusterlink_peer_handshake_failures_total{reason="overload"}'
PENDING = "clusterlink_peer_unauthenticated_connections"


class Traffic(threading.Thread):
    """Requests through the import in a loop; counts what did not come back from cl0."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            answer = get(self.port, timeout=10)
            if answer == "cl0":
                self.ok += 1
            else:
                self.failed.append(answer)
            time.sleep(0.01)


def flood(host: str, port: int, hello: bytes) -> list[socket.socket]:
    held = []
    for i in range(STRANGERS):
        sock = socket.socket()
        sock.bind((SOURCES[i % len(SOURCES)], 0))
        try:
            sock.connect((host, port))
            if i % 2:
                sock.sendall(hello)  # a handshake started, never finished
        except OSError:
            pass  # reset by the gate already
        held.append(sock)
    return held


def test_strangers_cost_bounded_memory_and_fail_no_request(fabric: Fabric) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = STRANGERS * 2 + 1000  # the flood here and the gateway's sockets (inherited limit)
    if hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    exporter = fabric.start("cl0", extra={"log": {"level": "info"}})
    fabric.start("cl2", extra={"log": {"level": "info"}})  # the latecomer, linked under flood
    port = fabric.link_service("cl0", "cl1", "svc", fabric.echo_port("cl0"))
    assert get(port) == "cl0"
    pid = exporter.proc.pid
    for _ in range(50):  # warm the paths the import uses
        assert get(port) == "cl0"
    time.sleep(2)
    idle = rss_kib(pid)
    endpoint = fabric.endpoint("cl0")
    traffic = Traffic(port)
    traffic.start()
    held: list[socket.socket] = []
    try:
        held = flood(endpoint["host"], endpoint["port"], client_hello())
        pending = metric(fabric, PENDING)
        # A new peer from an address that is not flooding links and is served meanwhile.
        fabric.add_peer("cl0", "cl2")
        fabric.client("cl2").create(
            "policies", {"name": "allow-all", "spec": {"action": "allow", "from": [{}], "to": [{}]}}
        )
        fabric.add_peer("cl2", "cl0")
        fabric.client("cl2").create(
            "imports", {"name": "svc", "spec": {"sources": [{"peer": "cl0"}]}}
        )
        latecomer = fabric.import_port("cl2", "svc")
        deadline = time.monotonic() + 20
        while (answer := get(latecomer)) != "cl0" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer == "cl0", "a legitimate new peer could not link during the flood"
        flood_peak = max(rss_kib(pid) for _ in range(5) if not time.sleep(0.4))
        refused = metric(fabric, OVERLOAD)
    finally:
        for sock in held:
            sock.close()
    closed_at = time.monotonic()
    after = rss_kib(pid)
    while after > idle + 16 * MiB and time.monotonic() - closed_at < 60:
        time.sleep(1)
        after = rss_kib(pid)
    returned_in = time.monotonic() - closed_at
    time.sleep(1)
    traffic.stop.set()
    traffic.join(15)
    figures = {
        "rss_idle_mib": round(idle / MiB, 1),
        "rss_flood_mib": round(flood_peak / MiB, 1),
        "rss_after_mib": round(after / MiB, 1),
        "returned_within_s": round(returned_in, 1),
        "overload_refusals": refused,
        "unauthenticated_under_flood": pending,
        "requests_ok": traffic.ok,
        "requests_failed": len(traffic.failed),
    }
    print("strangers:", json.dumps(figures))
    assert traffic.failed == [], figures
    assert traffic.ok > 0
    # Over the per-source cap, every further connection was reset at accept.
    assert refused >= STRANGERS - len(SOURCES) * MAX_HANDSHAKES_PER_SOURCE * 3, figures
    assert 0 < pending <= len(SOURCES) * MAX_HANDSHAKES_PER_SOURCE, figures
    assert metric(fabric, PENDING) == 0, figures  # every slot was given back
    assert flood_peak < 2 * idle, figures
    assert after <= idle + 16 * MiB, figures
