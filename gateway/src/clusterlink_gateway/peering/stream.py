"""A stream of a peer session used as a byte pipe, and the errors streams raise.

A ``Stream`` is an HTTP/2 stream after an accepted CONNECT (or a request's body); it behaves
like an asyncio transport and calls a ``StreamProtocol`` (see ``relay.TcpRelay``). It talks to
the session that carries it only through ``StreamHost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from . import h2core


class StreamError(ConnectionError):
    """The stream was reset (``code`` is the HTTP/2 error code) or its link was lost."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotProcessed(ConnectionError):
    """The peer never processed the request (GOAWAY, REFUSED_STREAM, link lost before any
    answer): it is safe to send it again on another link."""


class RequestRejected(ConnectionError):
    """The request cannot be sent to this peer at all (e.g. headers above its limit)."""


class BodyTooLarge(ValueError):
    """A request or response body exceeded its limit."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lowercased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class StreamProtocol(Protocol):
    """Callbacks of whoever consumes a ``Stream`` (names differ from asyncio's on purpose, so
    one object can be the protocol of a TCP transport and of a stream at once)."""

    def stream_data_received(self, data: bytes) -> None: ...
    def stream_eof_received(self) -> None: ...
    def stream_closed(self, exc: Exception | None) -> None: ...
    def stream_pause_writing(self) -> None: ...
    def stream_resume_writing(self) -> None: ...


class StreamHost(Protocol):
    """What a ``Stream`` needs from the session that carries it."""

    peer: str

    def stream_send(self, stream_id: int, data: bytes | memoryview) -> bool: ...
    def stream_end(self, stream_id: int) -> None: ...
    def stream_reset(self, stream_id: int, code: int) -> None: ...
    def stream_ack(self, stream_id: int, size: int) -> None: ...
    def stream_unsent(self, stream_id: int) -> int: ...
    def kick(self) -> None: ...


_OPEN: Any = object()


class Stream:
    """One HTTP/2 stream as a bidirectional byte pipe, with transport-like methods.

    Received bytes are acknowledged to the peer (stream window) only after they were handed to
    the protocol and while reading is not paused, so a slow consumer stops the sender.
    """

    __slots__ = (
        "_closed",
        "_early",
        "_eof",
        "_host",
        "_protocol",
        "_reading_paused",
        "_response",
        "_unacked",
        "_write_paused",
        "stream_id",
    )

    def __init__(self, host: StreamHost, stream_id: int) -> None:
        self._host = host
        self.stream_id = stream_id
        self._protocol: StreamProtocol | None = None
        self._early: list[bytes] = []
        self._unacked = 0
        self._eof = False
        self._closed: Exception | None = _OPEN
        self._reading_paused = False
        self._write_paused = False
        self._response: asyncio.Future[tuple[int, dict[str, str]]] | None = None

    # -- transport-like API --------------------------------------------------------------------

    @property
    def peer(self) -> str:
        return self._host.peer

    @property
    def closed(self) -> bool:
        return self._closed is not _OPEN

    def set_protocol(self, protocol: StreamProtocol) -> None:
        """Start delivering to ``protocol``; bytes that arrived earlier come first."""
        self._protocol = protocol
        early, self._early = self._early, []
        for data in early:
            protocol.stream_data_received(data)
        if self._write_paused:
            protocol.stream_pause_writing()
        if self._eof:
            protocol.stream_eof_received()
        if self._closed is not _OPEN:
            protocol.stream_closed(self._closed)
        else:
            self._ack()
            self._host.kick()

    def write(self, data: bytes | memoryview) -> None:
        if self._closed is not _OPEN:
            return
        try:
            pause = self._host.stream_send(self.stream_id, data)
        except h2core.StreamGone:
            return
        if pause and not self._write_paused:
            self._write_paused = True
            if self._protocol is not None:
                self._protocol.stream_pause_writing()

    def write_eof(self) -> None:
        """Send END_STREAM (after anything still buffered)."""
        if self._closed is not _OPEN:
            return
        with contextlib.suppress(h2core.StreamGone):
            self._host.stream_end(self.stream_id)

    def reset(self, code: int = h2core.CANCEL) -> None:
        """Abort the stream with RST_STREAM; the protocol's ``stream_closed`` follows."""
        if self._closed is not _OPEN:
            return
        self._host.stream_reset(self.stream_id, code)

    def pause_reading(self) -> None:
        """Stop handing window back to the peer; it stops once it used up the window."""
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._unacked and self._closed is _OPEN:
                self._ack()
                self._host.kick()

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet sent (waiting for the peer's window)."""
        return self._host.stream_unsent(self.stream_id)

    # -- called by the session --------------------------------------------------------------------

    def _ack(self) -> None:
        if self._unacked and not self._reading_paused:
            self._host.stream_ack(self.stream_id, self._unacked)
            self._unacked = 0

    def _on_data(self, data: bytes, flow: int) -> None:
        self._unacked += flow
        protocol = self._protocol
        if protocol is None:
            self._early.append(data)
            return
        protocol.stream_data_received(data)
        if not self._reading_paused:
            self._host.stream_ack(self.stream_id, self._unacked)
            self._unacked = 0

    def _on_eof(self) -> None:
        self._eof = True
        if self._protocol is not None:
            self._protocol.stream_eof_received()

    def _on_resume(self) -> None:
        if self._write_paused:
            self._write_paused = False
            if self._protocol is not None:
                self._protocol.stream_resume_writing()

    def _on_closed(self, exc: Exception | None) -> None:
        if self._closed is not _OPEN:
            return
        self._closed = exc
        fut = self._response
        if fut is not None and not fut.done():
            fut.set_exception(exc or StreamError("stream closed without a response"))
        if self._protocol is not None:
            self._protocol.stream_closed(exc)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (whoever awaited it got it; nobody else needs it)."""
    if not fut.cancelled():
        fut.exception()


class _Collector:
    """A StreamProtocol that gathers a whole body (bounded)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.done.add_done_callback(_retrieve)

    def stream_data_received(self, data: bytes) -> None:
        self.size += len(data)
        if self.done.done():
            return  # over the limit: discard the rest
        self.parts.append(data)
        if self.size > self.limit:
            self.parts = []
            self.done.set_exception(BodyTooLarge(f"body exceeds {self.limit} bytes"))

    def stream_eof_received(self) -> None:
        if not self.done.done():
            self.done.set_result(b"".join(self.parts))

    def stream_closed(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(b"".join(self.parts))
            else:
                self.done.set_exception(exc)

    def stream_pause_writing(self) -> None:
        pass

    def stream_resume_writing(self) -> None:
        pass
