"""The plain-TCP side of a relayed connection, spliced to a peer ``Stream``.

Bytes go straight from one transport into the other (no queues). Backpressure both ways:
the stream's send buffer filling up pauses reading the socket; the socket's write buffer filling
up pauses acknowledging the stream, so the remote sender stops at the stream window.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

from .stream import Stream

EARLY_LIMIT = 64 << 10
_LINGER_RST = struct.pack("ii", 1, 0)


class TcpRelay(asyncio.Protocol):
    """The plain-TCP side of a relayed connection (an import client socket, or the socket
    dialed to an export).

    Use as protocol factory: ``loop.create_server(lambda: TcpRelay(on_connect), ...)`` or
    ``loop.create_connection(TcpRelay, ...)``. Until ``attach``, up to ``early_limit`` bytes
    the client sends are kept (then reading pauses), so client-speaks-first protocols lose
    nothing while a source is chosen.
    """

    def __init__(
        self,
        on_connect: Callable[[TcpRelay], None] | None = None,
        *,
        early_limit: int = EARLY_LIMIT,
    ) -> None:
        self.on_connect = on_connect
        self.early_limit = early_limit
        self.transport: asyncio.Transport | None = None
        self.stream: Stream | None = None
        self.peername: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.bytes_in = 0  # read from the socket (towards the stream)
        self.bytes_out = 0  # written to the socket (from the stream)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._early: list[bytes] = []
        self._early_size = 0
        self._early_paused = False
        self._stream_paused = False
        self._reading_paused = False
        self._tcp_eof = False
        self._stream_eof = False
        self._lost = False
        self._reset = False

    # -- public --------------------------------------------------------------------------------

    def attach(self, stream: Stream) -> None:
        """Start relaying both ways; bytes that arrived before go first."""
        if self.stream is not None:
            raise RuntimeError("relay already attached")
        self.stream = stream
        if self._lost:
            stream.reset()
            return
        stream.set_protocol(self)
        early, self._early = self._early, []
        self._early_size = 0
        for chunk in early:
            stream.write(chunk)
        if self._tcp_eof:
            stream.write_eof()
        self._early_paused = False
        self._update_reading()
        self._maybe_close()

    def reset(self) -> None:
        """Close the socket with a TCP RST (SO_LINGER 0); reset the stream if attached."""
        if self._reset:
            return
        self._reset = True
        transport = self.transport
        if transport is not None and not self._lost:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            transport.abort()
        if self.stream is not None:
            self.stream.reset()

    def buffered(self) -> int:
        """Bytes held on the Python side: early data plus the socket's write buffer."""
        pending = self.transport.get_write_buffer_size() if self.transport is not None else 0
        return self._early_size + pending

    # -- asyncio.Protocol (the TCP side) -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.peername = (str(peer[0]), int(peer[1])) if peer else None
        self.sockname = (str(local[0]), int(local[1])) if local else None
        if self.on_connect is not None:
            self.on_connect(self)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        stream = self.stream
        if stream is not None:
            stream.write(data)
            return
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size >= self.early_limit and not self._early_paused:
            self._early_paused = True
            self._update_reading()

    def eof_received(self) -> bool:
        self._tcp_eof = True
        if self.stream is not None:
            self.stream.write_eof()
            self._maybe_close()
        return True  # keep the socket open for the other direction

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        stream = self.stream
        if stream is not None and not (self._tcp_eof and self._stream_eof):
            stream.reset()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        if self.stream is not None:
            self.stream.pause_reading()

    def resume_writing(self) -> None:
        if self.stream is not None:
            self.stream.resume_reading()

    # -- StreamProtocol (the peer side) --------------------------------------------------------

    def stream_data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self._lost:
            transport.write(data)
            self.bytes_out += len(data)

    def stream_eof_received(self) -> None:
        self._stream_eof = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write_eof()
        self._maybe_close()

    def stream_closed(self, exc: Exception | None) -> None:
        if exc is not None:
            self.reset()
        else:
            self._maybe_close()

    def stream_pause_writing(self) -> None:
        self._stream_paused = True
        self._update_reading()

    def stream_resume_writing(self) -> None:
        self._stream_paused = False
        self._update_reading()

    # -- internals -----------------------------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or self._lost or transport.is_closing():
            return
        pause = self._early_paused or self._stream_paused
        if pause and not self._reading_paused:
            transport.pause_reading()
        elif not pause and self._reading_paused:
            transport.resume_reading()
        self._reading_paused = pause

    def _maybe_close(self) -> None:
        if self._tcp_eof and self._stream_eof and self.transport is not None:
            self.transport.close()
