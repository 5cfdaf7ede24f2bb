"""TLS inside a relayed stream, without sockets between the ends: two ``StreamTransport``s
over a pair of in-memory streams (the relay in between), real TLS 1.3 with fabric
certificates, an ordinary HTTP/2 link on top. The accepting end is the peer port's own
acceptance (``start_peer_server(tunnels=...)``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clusterlink_gateway.peering.connect import start_peer_server
from clusterlink_gateway.peering.h2core import Limits
from clusterlink_gateway.peering.requesting import ClientLink
from clusterlink_gateway.peering.serving import IncomingStream
from clusterlink_gateway.peering.stream import StreamError
from clusterlink_gateway.peering.tls import TLSContexts
from clusterlink_gateway.peering.tunnel import TunnelPort, open_tunnel, relay_of
from support.pki import TestCA


class MemoryStream:
    """One end of an in-memory stream pair (what a relay splices), with an optional tamper
    function on the bytes it carries to the other end."""

    def __init__(self) -> None:
        self.other: MemoryStream | None = None
        self.protocol: Any = None
        self.closed = False
        self._reading_paused = False
        self.eof_sent = False
        self.tamper: Callable[[bytes], bytes] | None = None
        self.carried = bytearray()
        self.loop = asyncio.get_running_loop()

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        assert self.other is not None
        if self.closed:
            return
        self.carried += data
        if self.tamper is not None:
            data = self.tamper(data)
        self.loop.call_soon(self.other._receive, data)

    def _receive(self, data: bytes) -> None:
        if not self.closed and self.protocol is not None:
            self.protocol.stream_data_received(data)

    def write_eof(self) -> None:
        assert self.other is not None
        self.eof_sent = True
        self.loop.call_soon(self.other._eof)

    def _eof(self) -> None:
        if not self.closed and self.protocol is not None:
            self.protocol.stream_eof_received()
        if self.eof_sent and self.other is not None and self.other.eof_sent:
            self._close(None)
            self.other._close(None)

    def reset(self, code: int = 8) -> None:
        for end in (self, self.other):
            assert end is not None
            self.loop.call_soon(end._close, StreamError("reset", code))

    def _close(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                self.protocol.stream_closed(exc)

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False

    def get_write_buffer_size(self) -> int:
        return 0


def pair() -> tuple[MemoryStream, MemoryStream]:
    a, b = MemoryStream(), MemoryStream()
    a.other, b.other = b, a
    return a, b


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TLSContexts]:
    ca = TestCA(tmp_path / "pki")
    out = {}
    for name in ("s", "d", "r"):
        issued = ca.issue(name)
        out[name] = TLSContexts(issued.cert, issued.key, ca.ca_path, handshake_timeout=5)
    return out


async def serve(tls: TLSContexts) -> tuple[TunnelPort, asyncio.Server, list[str]]:
    """The accepting end: the peer port's acceptance, fed relayed streams by a TunnelPort."""
    callers: list[str] = []

    async def handler(req: IncomingStream) -> None:
        callers.append(req.peer)
        body = {"caller": req.peer, "relayed_by": relay_of(req.link._transport)}
        await req.respond(200, json.dumps(body).encode())

    tunnels = TunnelPort()
    server = await start_peer_server("127.0.0.1", 0, tls, handler, tunnels=tunnels)
    return tunnels, server, callers


def link(peer: str) -> Callable[[], ClientLink]:
    return lambda: ClientLink(peer, Limits())


@pytest.mark.asyncio
async def test_a_link_inside_a_relayed_stream_authenticates_the_true_ends(
    pki: dict[str, TLSContexts],
) -> None:
    tunnels, server, _ = await serve(pki["d"])
    up, down = pair()
    tunnels.accept(down, relay="r")  # type: ignore[arg-type]
    session = await open_tunnel(up, "r", "d", pki["s"], link("d"), handshake_timeout=5)  # type: ignore[arg-type]
    assert session.peer == "d" and relay_of(session._transport) == "r"
    resp = await session.request("GET", "/healthz", authority="d")
    assert resp.status == 200
    assert resp.json() == {"caller": "s", "relayed_by": "r"}  # the true peer, never the relay
    marker = b"MARKER-in-the-clear"
    resp = await session.request("POST", "/x", authority="d", body=marker * 100)
    assert marker not in up.carried and marker not in down.carried  # the relay saw ciphertext
    session.close()
    await asyncio.wait_for(session.lost, 5)
    server.close()


@pytest.mark.asyncio
async def test_a_relay_presenting_its_own_certificate_is_refused(
    pki: dict[str, TLSContexts],
) -> None:
    tunnels, server, _ = await serve(pki["r"])  # the relay answers instead of d
    up, down = pair()
    tunnels.accept(down, relay="r")  # type: ignore[arg-type]
    with pytest.raises(ConnectionError, match="d via r: "):
        await open_tunnel(up, "r", "d", pki["s"], link("d"), handshake_timeout=5)  # type: ignore[arg-type]
    server.close()


@pytest.mark.asyncio
async def test_a_flipped_byte_breaks_the_session(pki: dict[str, TLSContexts]) -> None:
    tunnels, server, callers = await serve(pki["d"])
    up, down = pair()
    tunnels.accept(down, relay="r")  # type: ignore[arg-type]
    session = await open_tunnel(up, "r", "d", pki["s"], link("d"), handshake_timeout=5)  # type: ignore[arg-type]
    assert (await session.request("GET", "/healthz", authority="d")).status == 200

    def flip(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1])

    up.tamper = flip
    with pytest.raises((ConnectionError, TimeoutError)):
        async with asyncio.timeout(5):
            await session.request("GET", "/healthz", authority="d")
    await asyncio.wait_for(session.lost, 5)  # the link is gone, not merely one request
    assert callers == ["s"]  # nothing after the flip was served
    server.close()
