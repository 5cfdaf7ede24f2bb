"""Helpers for peer-transport tests: targets (echo, sink, banner, pusher), a splicing peer
server and an import-style listener, all real asyncio servers on loopback."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from uvloop.loop import SSLProtocol as UVSSLProtocol

from clusterlink_gateway.peering import (
    IncomingStream,
    PeerPool,
    TcpRelay,
    TLSContexts,
    start_peer_server,
)

from .pki import TestCA

LOCAL = "127.0.0.1"
BACKLOG = 4096  # tests open a thousand connections at once


def tls_for(ca: TestCA, name: str, *, bundle: Path | None = None) -> TLSContexts:
    issued = ca.issue(name)
    return TLSContexts(issued.cert, issued.key, bundle or ca.ca_path)


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def open_plain_transports() -> list[asyncio.Transport]:
    """uvloop TCP transports alive and neither closed nor closing, but not those under TLS
    (peer links live on by design, and a pool may dial another one any time).

    (uvloop shows whether the handle is closed only in its repr.)"""
    return [
        obj
        for obj in gc.get_objects()
        if type(obj).__name__ == "TCPTransport"
        and not obj.is_closing()
        and "closed=False" in repr(obj)
        and not isinstance(obj.get_protocol(), UVSSLProtocol)
    ]


# -- export targets ----------------------------------------------------------------------------


class _Echo(asyncio.Protocol):
    """Echoes; on EOF closes (after the echo went out: the client reads it, then EOF).

    It must close, not only ``write_eof``: a uvloop transport dropped unclosed with its
    shutdown pending is freed by the cyclic GC under libuv, which then calls back into the
    freed object (a segfault; see test_half_closed_connections_are_closed_not_dropped)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        return False  # the transport flushes the echo, then closes


class Sink(asyncio.Protocol):
    """Counts and discards; on EOF answers with the byte count and closes."""

    total = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.count = 0

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        Sink.total += len(data)

    def eof_received(self) -> bool:
        self.transport.write(str(self.count).encode())  # type: ignore[attr-defined]
        self.transport.close()  # type: ignore[attr-defined]
        return True


class Pusher(asyncio.Protocol):
    """Writes ``size`` bytes as fast as the socket takes them (respecting pause_writing)."""

    def __init__(self, size: int, chunk: int = 256 << 10) -> None:
        self.left = size
        self.chunk = b"p" * chunk
        self.paused = False
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._push()

    def _push(self) -> None:
        while self.left > 0 and not self.paused:
            piece = self.chunk[: min(len(self.chunk), self.left)]
            self.left -= len(piece)
            self.transport.write(piece)  # type: ignore[attr-defined]
        if self.left <= 0 and not self.done.done():
            self.transport.write_eof()  # type: ignore[attr-defined]
            self.done.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._push()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def start_target(factory: Callable[[], asyncio.Protocol]) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(factory, LOCAL, 0, backlog=BACKLOG)


async def start_echo() -> asyncio.Server:
    return await start_target(_Echo)


async def start_banner(banner: bytes) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        await writer.drain()
        data = await reader.read(65536)
        writer.write(b"got:" + data)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, LOCAL, 0, backlog=BACKLOG)


# -- the exporting gateway ---------------------------------------------------------------------


@dataclass
class Exporter:
    """A peer server whose handler splices CONNECTs to ``targets[x-clusterlink-export]``."""

    tls: TLSContexts
    targets: dict[str, int]
    server: asyncio.Server | None = None
    relays: list[TcpRelay] = field(default_factory=list)
    seen: list[IncomingStream] = field(default_factory=list)
    hook: Callable[[IncomingStream], Awaitable[bool]] | None = None  # True: handled

    @property
    def port(self) -> int:
        assert self.server is not None
        return port_of(self.server)

    async def handle(self, incoming: IncomingStream) -> None:
        self.seen.append(incoming)
        if self.hook is not None and await self.hook(incoming):
            return
        if incoming.method == "GET" and incoming.path == "/healthz":
            body = json.dumps({"name": self.tls.local_name, "caller": incoming.peer}).encode()
            await incoming.respond(200, body, {"content-type": "application/json"})
            return
        if incoming.method == "POST" and incoming.path == "/echo":
            await incoming.respond(200, await incoming.read_body())
            return
        if incoming.method != "CONNECT":
            await incoming.respond(404, b'{"error": "not found"}')
            return
        export = incoming.headers.get("x-clusterlink-export", "")
        if export == "denied":
            await incoming.respond(403, json.dumps({"error": "denied by policy"}).encode())
            return
        port = self.targets.get(export)
        if port is None:
            await incoming.respond(404, json.dumps({"error": f"no export {export}"}).encode())
            return
        loop = asyncio.get_running_loop()
        try:
            _, relay = await loop.create_connection(TcpRelay, LOCAL, port)
        except OSError as exc:
            await incoming.respond(502, json.dumps({"error": str(exc)}).encode())
            return
        self.relays.append(relay)
        relay.attach(incoming.accept())
        await relay.closed

    async def start(self, **kwargs: object) -> Exporter:
        self.server = await start_peer_server(LOCAL, 0, self.tls, self.handle, **kwargs)  # type: ignore[arg-type]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


# -- the importing gateway ---------------------------------------------------------------------


@dataclass
class Importer:
    """A plain TCP listener that carries each client connection as a CONNECT over ``pool``."""

    pool: PeerPool
    export: str
    server: asyncio.Server | None = None
    relays: list[TcpRelay] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    refusals: list[int] = field(default_factory=list)
    connect_timeout: float = 10.0

    @property
    def port(self) -> int:
        assert self.server is not None
        return port_of(self.server)

    def _on_connect(self, relay: TcpRelay) -> None:
        self.relays.append(relay)
        task = asyncio.get_running_loop().create_task(self._route(relay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _route(self, relay: TcpRelay) -> None:
        headers = {"x-clusterlink-export": self.export}
        if relay.peername:
            headers["x-clusterlink-client-ip"] = relay.peername[0]
        try:
            response, stream = await self.pool.open_connect(headers, timeout=self.connect_timeout)
        except (ConnectionError, TimeoutError):
            relay.reset()
            return
        if stream is None:
            self.refusals.append(response.status)
            relay.reset()
            return
        relay.attach(stream)

    async def start(self) -> Importer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: TcpRelay(self._on_connect), LOCAL, 0, backlog=BACKLOG
        )
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
