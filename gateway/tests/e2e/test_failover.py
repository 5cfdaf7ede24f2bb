"""Failover within the connect timeout and dial on demand, with real gateway processes.

* A black-holed source (TCP accepts, TLS never answers) costs the first connection at most
  ``dataplane.connect_timeout``, and later ones nothing once it is marked unreachable.
* An exporter that was down long enough to be marked unreachable and listens again: no client
  connection started after that moment fails (dial on demand instead of a reset until the
  background backoff or the heartbeats bring it back). Same for a lost start-up race.

Figures are printed (``-s``) and recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from support.fabric import Fabric
from support.traffic import get

CONNECT_TIMEOUT = 1.0


class BlackHole:
    """A TCP listener that accepts and never answers: the TLS handshake hangs forever."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hole() -> Iterator[BlackHole]:
    bh = BlackHole()
    yield bh
    bh.close()


def reachable(fabric: Fabric, on: str, peer: str) -> bool | None:
    return fabric.client(on).get("peers", peer)["status"]["reachable"]


def wait_reachable(fabric: Fabric, on: str, peer: str, expected: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while reachable(fabric, on, peer) is not expected:
        assert time.monotonic() < deadline, fabric.client(on).get("peers", peer)
        time.sleep(0.05)


def timed_get(port: int, timeout: float = 20) -> tuple[float, str]:
    started = time.monotonic()
    result = get(port, timeout=timeout)
    return time.monotonic() - started, result


def report(name: str, **figures: object) -> None:
    print(f"\nfailover {name}: {json.dumps(figures)}")


def test_black_holed_first_source_costs_at_most_connect_timeout(
    fabric: Fabric, hole: BlackHole
) -> None:
    fabric.export_echo("cl0")
    fabric.start("cl1", extra={"dataplane": {"connect_timeout": CONNECT_TIMEOUT}})
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl1", "cl0")
    wait_reachable(fabric, "cl1", "cl0", True)
    cl1 = fabric.client("cl1")
    cl1.create(
        "imports",
        {
            "name": "http-echo",
            "spec": {"lb_scheme": "static", "sources": [{"peer": "hole"}, {"peer": "cl0"}]},
        },
    )
    port = fabric.import_port("cl1", "http-echo")
    # the black hole's Peer last, and the first client at once: it meets the first dial
    cl1.create(
        "peers", {"name": "hole", "spec": {"gateways": [{"host": "127.0.0.1", "port": hole.port}]}}
    )
    first, body = timed_get(port)
    assert body == "cl0"
    # handshake_timeout (15 s) must not govern: connect_timeout (1 s) does, with a margin
    assert first < CONNECT_TIMEOUT + 3, first
    assert hole.held, "the black hole was never dialed"
    wait_reachable(fabric, "cl1", "hole", False)
    later = [timed_get(port) for _ in range(20)]
    assert [body for _, body in later] == ["cl0"] * 20
    median = statistics.median(t for t, _ in later)
    assert median < CONNECT_TIMEOUT / 4, later
    report(
        "black-hole",
        connect_timeout_s=CONNECT_TIMEOUT,
        first_s=round(first, 3),
        later_median_s=round(median, 4),
        later_max_s=round(max(t for t, _ in later), 4),
    )


class ClientLoop:
    """New connections through an import in a tight loop: (start, seconds, result) each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[float, float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            result = get(self.port, timeout=10)
            self.results.append((started, time.monotonic() - started, result))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def failed_since(self, moment: float, expected: str) -> list[tuple[float, float, str]]:
        return [r for r in self.results if r[0] >= moment and r[2] != expected]

    def first_ok_since(self, moment: float, expected: str) -> float:
        return min(s + d for s, d, r in self.results if s >= moment and r == expected) - moment


def dials(fabric: Fabric, on: str, since: int) -> int:
    """Failed dials ``on`` logged after byte offset ``since`` of its log."""
    text = fabric[on].log_text()[since:]
    return sum(1 for line in text.splitlines() if '"cannot dial peer"' in line)


def test_exporter_back_after_unreachable_no_failed_client(fabric: Fabric) -> None:
    port = fabric.link_service("cl0", "cl1", "svc", fabric.echo_port("cl0"))
    assert get(port) == "cl0"
    loop = ClientLoop(port)
    try:
        fabric["cl0"].stop()
        down = time.monotonic()
        log_mark = len(fabric["cl1"].log_text())
        wait_reachable(fabric, "cl1", "cl0", False)
        marked = time.monotonic() - down
        time.sleep(4)  # the background backoff grows (1, 2, 4 s...): the old code waited it out
        dead_dials = dials(fabric, "cl1", log_mark)
        dead_window = time.monotonic() - down
        fabric["cl0"].start(wait=False)
        fabric["cl0"].wait_ready()
        back = time.monotonic()  # listens again: its peer port accepts, its objects are loaded
        wait_reachable(fabric, "cl1", "cl0", True)
        reachable_after = time.monotonic() - back
        time.sleep(1)
    finally:
        loop.stop()
    failed = loop.failed_since(back, "cl0")
    assert failed == [], failed[:5]
    during = [r for r in loop.results if down <= r[0] < back]
    refused = [d for s, d, r in during if r != "cl0"]
    report(
        "exporter-restart",
        marked_unreachable_s=round(marked, 2),
        failed_after_listen=len(failed),
        clients_after_listen=sum(1 for r in loop.results if r[0] >= back),
        first_ok_after_listen_s=round(loop.first_ok_since(back, "cl0"), 3),
        reachable_again_after_listen_s=round(reachable_after, 2),
        refused_while_down=len(refused),
        refusal_wait_median_s=round(statistics.median(refused), 3) if refused else None,
        failed_dials_while_down=dead_dials,
        down_window_s=round(dead_window, 1),
    )
    # not hammered: one dial at a time, at most about one per backoff cap (1 s) and heartbeat
    assert dead_dials < 10 * dead_window, dead_dials


def test_start_up_race_no_failed_client(fabric: Fabric) -> None:
    """The importer is set up (and dials) before its exporter listens at all."""
    fabric.start("cl0", launch=lambda gw: None)  # config and certificates, no process yet
    fabric.start("cl1")
    fabric.allow_all("cl1")
    fabric.add_peer("cl1", "cl0", mutual=False)  # cl0 gets its Peer cl1 once it runs
    fabric.client("cl1").create(
        "imports", {"name": "http-echo", "spec": {"sources": [{"peer": "cl0"}]}}
    )
    port = fabric.import_port("cl1", "http-echo")
    loop = ClientLoop(port)
    try:
        time.sleep(3)  # the importer keeps failing to dial: its background backoff grows
        fabric["cl0"].start()
        fabric.ensure_peer("cl0", "cl1")
        fabric.export_echo("cl0")
        fabric.allow_all("cl0")
        ready = time.monotonic()  # listens, with its export and policy in place
        wait_reachable(fabric, "cl1", "cl0", True)
        time.sleep(1)
    finally:
        loop.stop()
    failed = loop.failed_since(ready, "cl0")
    assert failed == [], failed[:5]
    report(
        "start-up-race",
        failed_after_ready=len(failed),
        clients_after_ready=sum(1 for r in loop.results if r[0] >= ready),
        first_ok_after_ready_s=round(loop.first_ok_since(ready, "cl0"), 3),
    )
