"""PeerPool failover bounds and dial on demand, on loopback with real mTLS (uvloop).

A black hole (TCP accepted, TLS never answered) costs a caller at most ``connect_timeout``
although ``handshake_timeout`` is far longer; a peer that listens again after its endpoint
went into a long background backoff is used by the next caller (one dial on demand, shared).
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
import uvloop

from clusterlink_gateway.peering import PeerPool, start_peer_server
from support.peering import LOCAL, Exporter, port_of, start_echo, tls_for
from support.pki import TestCA

pytestmark = pytest.mark.asyncio


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


async def test_black_hole_costs_at_most_connect_timeout(tmp_path: Path) -> None:
    held: list[asyncio.StreamWriter] = []
    hole = await asyncio.start_server(lambda r, w: held.append(w), LOCAL, 0)
    pool = PeerPool(
        "cl1",
        [(LOCAL, port_of(hole))],
        tls_for(TestCA(tmp_path / "pki"), "cl0"),
        connect_timeout=0.5,
        handshake_timeout=60,
    )
    try:
        for _ in range(2):  # a caller, then another while the endpoint is in backoff
            started = time.monotonic()
            with pytest.raises((ConnectionError, TimeoutError)):
                await pool.open_connect({"x-clusterlink-export": "echo"}, timeout=0.5)
            assert time.monotonic() - started < 0.5 + 2.5  # not handshake_timeout (60 s)
        assert held, "the black hole was never dialed"
    finally:
        await pool.close()
        hole.close()


async def test_peer_back_is_used_by_the_next_caller(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    port = free_port()
    echo = await start_echo()
    exporter = Exporter(tls_for(ca, "cl1"), {"echo": port_of(echo)})
    pool = PeerPool("cl1", [(LOCAL, port)], tls_for(ca, "cl0"), connect_timeout=2.0)
    ups: list[float] = []
    pool.on_link_up = lambda: ups.append(time.monotonic())
    headers = {"x-clusterlink-export": "echo"}
    try:
        # many callers at once while nothing listens: one dial at a time, with backoff
        results = await asyncio.gather(
            *(pool.open_connect(headers, wait_redial=False) for _ in range(50)),
            return_exceptions=True,
        )
        assert all(isinstance(r, ConnectionError | TimeoutError) for r in results)
        assert pool.on_demand.dials <= 2, pool.on_demand.dials
        for _ in range(4):  # the endpoint's background backoff grows past 4 s
            await asyncio.sleep(pool.on_demand.backoff(pool.on_demand.failures))
            with pytest.raises(ConnectionError):
                await pool.open_connect(headers, wait_redial=False)
        exporter.server = await start_peer_server(LOCAL, port, exporter.tls, exporter.handle)
        back = time.monotonic()
        # every caller from now on gets through: a waiting one dials as soon as the short
        # on-demand backoff (not the background one) allows, the others share that dial
        answers = await asyncio.gather(*(pool.open_connect(headers) for _ in range(20)))
        assert all(resp.status == 200 and stream is not None for resp, stream in answers)
        assert time.monotonic() - back < 2.0 + 1.0
        assert ups and ups[0] >= back
        for _, stream in answers:
            assert stream is not None
            stream.reset()
    finally:
        await pool.close()
        await exporter.stop()
        echo.close()
