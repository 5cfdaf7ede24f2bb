"""Peer links: HTTP/2 over mTLS, driven by an ``asyncio.Protocol`` around the sans-IO core.

All I/O, timers and backpressure of a link live here; the protocol logic is in ``h2core``.
A ``Stream`` is an HTTP/2 stream used as a byte pipe after an accepted CONNECT; it behaves like
an asyncio transport and calls a ``StreamProtocol`` (see ``relay.TcpRelay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from . import h2core
from .accept import FailureHook, PeerAcceptor, admission_refusal
from .admission import OPEN, Admission, Refused
from .gate import MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE, HandshakeGate
from .h2core import H2Core, Limits
from .tls import TLSContexts, peer_identity

log = logging.getLogger("clusterlink.peering")

LINK_WRITE_HIGH = 4 << 20  # TLS transport buffer above which DATA is held in the core
LINK_WRITE_LOW = 1 << 20
KEEPALIVE = 10.0  # seconds of silence before a PING; no answer within as long: link is dead


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
        "_link",
        "_protocol",
        "_reading_paused",
        "_response",
        "_unacked",
        "_write_paused",
        "stream_id",
    )

    def __init__(self, link: _Link, stream_id: int) -> None:
        self._link = link
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
        return self._link.peer

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
            self._link._flush()

    def write(self, data: bytes | memoryview) -> None:
        if self._closed is not _OPEN:
            return
        link = self._link
        try:
            pause = link._core.send_data(self.stream_id, data)
        except h2core.StreamGone:
            return
        link._flush()
        if pause and not self._write_paused:
            self._write_paused = True
            if self._protocol is not None:
                self._protocol.stream_pause_writing()

    def write_eof(self) -> None:
        """Send END_STREAM (after anything still buffered)."""
        if self._closed is not _OPEN:
            return
        try:
            self._link._core.end_stream(self.stream_id)
        except h2core.StreamGone:
            return
        self._link._after_action()

    def reset(self, code: int = h2core.CANCEL) -> None:
        """Abort the stream with RST_STREAM; the protocol's ``stream_closed`` follows."""
        if self._closed is not _OPEN:
            return
        self._link._core.reset_stream(self.stream_id, code)
        self._link._after_action()

    def pause_reading(self) -> None:
        """Stop handing window back to the peer; it stops once it used up the window."""
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._unacked and self._closed is _OPEN:
                self._ack()
                self._link._flush()

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet sent (waiting for the peer's window)."""
        return self._link._core.unsent(self.stream_id)

    # -- called by the link --------------------------------------------------------------------

    def _ack(self) -> None:
        if self._unacked and not self._reading_paused:
            self._link._core.ack(self.stream_id, self._unacked)
            self._unacked = 0

    def _on_data(self, data: bytes, flow: int) -> None:
        self._unacked += flow
        protocol = self._protocol
        if protocol is None:
            self._early.append(data)
            return
        protocol.stream_data_received(data)
        if not self._reading_paused:
            self._link._core.ack(self.stream_id, self._unacked)
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


# -- the link protocol -------------------------------------------------------------------------


class _Link(asyncio.Protocol):
    """State shared by both ends: the core, the stream table, keepalive and idle timers."""

    client_side = False

    def __init__(self, limits: Limits, *, idle_timeout: float | None, keepalive: float) -> None:
        self._limits = limits
        # A shell until connection_made (after the handshake and admission) calls initiate():
        # the HTTP/2 state (~16 KiB) is built only then, so strangers never cost it. (This once
        # "made uvloop 0.23 segfault" in test_peer_transport.py: the cause was the tests' echo
        # target, which left write_eof'd transports to the GC; see docs/security.md.)
        self._core = H2Core(client_side=self.client_side, limits=limits)
        self._streams: dict[int, Stream] = {}
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._flush_pending = False
        self._idle_timeout = idle_timeout
        self._keepalive = keepalive
        self._timer: asyncio.TimerHandle | None = None
        self._rx = 0
        self._rx_seen = 0
        self._ping_deadline: float | None = None
        self._idle_since: float | None = None
        self._closing = False
        self.closed_locally = False  # we chose to close it (GOAWAY, drain), not a failure
        self.peer = ""
        self.fabric = True  # the peer's certificate chains to the fabric CA (see admission)
        self.address: tuple[str, int] | None = None
        self.lost: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.address = (str(peer[0]), int(peer[1])) if peer else None
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        name = peer_identity(ssl_object)
        if alpn != "h2" or not name:
            reason = "peer did not negotiate ALPN h2" if alpn != "h2" else "peer has no name"
            log.warning(
                "peer link refused", extra={"client_address": self.address, "reason": reason}
            )
            self._closing = True
            transport.close()
            return
        self.peer = name
        transport.set_write_buffer_limits(high=LINK_WRITE_HIGH, low=LINK_WRITE_LOW)
        self._core.initiate()
        self._flush()
        self._schedule_tick()
        self._link_up()

    def data_received(self, data: bytes) -> None:
        self._rx += 1
        try:
            events = self._core.receive(data)
        except Exception:
            log.exception("peer link: internal error", extra={"peer": self.peer})
            self.abort()
            return
        if events:
            self._dispatch(events)
        self._flush()
        self._maybe_close()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self._core.set_output_blocked(True)

    def resume_writing(self) -> None:
        self._core.set_output_blocked(False)
        self._after_action()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            if stream._response is not None and not stream._response.done():
                stream._on_closed(NotProcessed(f"link to {self.peer} lost before an answer"))
            else:
                stream._on_closed(StreamError(f"link to {self.peer} lost"))
        if not self.lost.done():
            self.lost.set_result(None)
        self._link_down(exc)

    # -- public --------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Open, not going away, and below the peer's stream limit."""
        return self._transport is not None and not self._closing and self._core.can_open

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER), for revocation checks; None once closed."""
        if self._transport is None or self._closing:
            return None
        ssl_object = self._transport.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None

    def buffered(self) -> int:
        """Bytes held on the Python side: unsent stream data plus the TLS write buffer."""
        transport_bytes = self._transport.get_write_buffer_size() if self._transport else 0
        return self._core.total_unsent() + transport_bytes

    def goaway(self, last_stream_id: int | None = None) -> None:
        """Refuse new streams (those above ``last_stream_id``); close once the rest finished."""
        if self._transport is None or self._closing:
            return
        self.closed_locally = True
        self._core.goaway(h2core.NO_ERROR, last_stream_id)
        self._after_action()
        self._maybe_close()

    def close(self) -> None:
        """GOAWAY and close now (active streams are cut)."""
        if self._transport is None or self._closing:
            return
        self.closed_locally = True
        self._closing = True
        self._core.goaway(h2core.NO_ERROR)
        self._flush_now()
        self._transport.close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    # -- internals -----------------------------------------------------------------------------

    def _link_up(self) -> None:
        pass

    def _link_down(self, exc: Exception | None) -> None:
        pass

    def _flush(self) -> None:
        """Write pending frames once per event-loop iteration: the frames of many streams
        then share TLS records and syscalls."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        chunks = self._core.output()
        if chunks and self._transport is not None and not self._transport.is_closing():
            if len(chunks) == 1:
                self._transport.write(chunks[0])
            else:
                self._transport.writelines(chunks)

    def _after_action(self) -> None:
        events = self._core.pop_events()
        if events:
            self._dispatch(events)
        self._flush()

    def _dispatch(self, events: list[h2core.Event]) -> None:
        for ev in events:
            try:
                self._dispatch_one(ev)
            except Exception:
                sid = getattr(ev, "stream_id", None)
                log.exception("peer link: stream callback failed", extra={"peer": self.peer})
                if sid is not None:
                    self._core.reset_stream(sid, h2core.INTERNAL_ERROR)
                    self._after_action()

    def _dispatch_one(self, ev: h2core.Event) -> None:
        if isinstance(ev, h2core.DataReceived):
            stream = self._streams.get(ev.stream_id)
            if stream is not None:
                stream._on_data(ev.data, ev.flow_len)
        elif isinstance(ev, h2core.StreamEnded):
            stream = self._streams.get(ev.stream_id)
            if stream is not None:
                stream._on_eof()
        elif isinstance(ev, h2core.SendResumed):
            stream = self._streams.get(ev.stream_id)
            if stream is not None:
                stream._on_resume()
        elif isinstance(ev, h2core.StreamClosed):
            self._on_stream_closed(ev)
        elif isinstance(ev, h2core.RequestReceived):
            self._on_request(ev)
        elif isinstance(ev, h2core.ResponseReceived):
            self._on_response(ev)
        elif isinstance(ev, h2core.GoAwayReceived):
            self._on_goaway(ev)
        elif isinstance(ev, h2core.PingAcked):
            self._ping_deadline = None
        elif isinstance(ev, h2core.ConnectionFailed):
            log.warning(
                "peer link protocol error; closing",
                extra={"peer": self.peer, "reason": ev.reason, "code": ev.error_code},
            )
            self._closing = True

    def _on_stream_closed(self, ev: h2core.StreamClosed) -> None:
        stream = self._streams.pop(ev.stream_id, None)
        if stream is None:
            return
        exc: Exception | None = None
        if ev.error_code is not None:
            unanswered = stream._response is not None and not stream._response.done()
            if unanswered and ev.by_peer and ev.error_code == h2core.REFUSED_STREAM:
                exc = NotProcessed(f"{self.peer} refused the stream")
            else:
                who = "peer" if ev.by_peer else "local"
                exc = StreamError(f"stream reset ({who}, code {ev.error_code})", ev.error_code)
        stream._on_closed(exc)

    def _on_goaway(self, ev: h2core.GoAwayReceived) -> None:
        (log.debug if ev.error_code == h2core.NO_ERROR else log.warning)(
            "peer sent GOAWAY",
            extra={"peer": self.peer, "code": ev.error_code, "refused": len(ev.refused)},
        )
        for sid in ev.refused:
            stream = self._streams.pop(sid, None)
            if stream is not None:
                stream._on_closed(NotProcessed(f"{self.peer} went away before processing it"))
        if ev.error_code != h2core.NO_ERROR:
            self._closing = True

    def _on_request(self, ev: h2core.RequestReceived) -> None:
        self._core.reset_stream(ev.stream_id, h2core.REFUSED_STREAM)

    def _on_response(self, ev: h2core.ResponseReceived) -> None:
        pass

    def _maybe_close(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        going_away = self._core.goaway_sent is not None or self._core.goaway_received is not None
        if self._closing or self._core.failed is not None or (going_away and not self._streams):
            self._closing = True
            self._flush_now()
            self._transport.close()

    def _schedule_tick(self) -> None:
        interval = self._keepalive
        if self._idle_timeout:
            interval = min(interval, self._idle_timeout / 2)
        self._timer = self._loop.call_later(max(interval, 0.05), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._transport is None or self._closing:
            return
        now = self._loop.time()
        if self._rx != self._rx_seen:
            self._rx_seen = self._rx
            self._ping_deadline = None
        elif self._ping_deadline is None:
            self._core.ping()
            self._flush()
            self._ping_deadline = now + self._keepalive
        elif now >= self._ping_deadline:
            log.warning("peer link silent; closing", extra={"peer": self.peer})
            self.abort()
            return
        if self._idle_timeout:
            if self._streams:
                self._idle_since = None
            elif self._idle_since is None:
                self._idle_since = now
            elif now - self._idle_since >= self._idle_timeout:
                log.debug("peer link idle; closing", extra={"peer": self.peer})
                self.goaway()
                return
        self._schedule_tick()


# -- server side -------------------------------------------------------------------------------


Handler = Callable[["IncomingStream"], Awaitable[None]]


class IncomingStream:
    """A request from a peer. ``peer`` comes from its verified certificate, never a header."""

    def __init__(self, link: ServerLink, stream: Stream, ev: h2core.RequestReceived) -> None:
        self._link = link
        self.link = link  # the carrying link (for metrics, tests and draining)
        self.stream = stream
        self.peer = link.peer
        self.peer_fabric = link.fabric  # its certificate chains to the fabric CA
        self.method = ev.method
        self.path = ev.path
        self.authority = ev.authority
        self.headers = ev.headers
        self.client_address: tuple[str, int] = link.address or ("", 0)
        self.answered = False

    @property
    def stream_id(self) -> int:
        return self.stream.stream_id

    async def respond(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        """A complete answer (END_STREAM). A dead stream makes this a no-op."""
        self.answer(status, body, headers)

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """``respond`` without awaiting (it never blocks: the body is buffered if need be)."""
        if self.answered:
            raise RuntimeError("request already answered")
        if self.stream.closed:
            self.answered = True
            return
        core = self._link._core
        try:
            core.send_response(self.stream_id, status, headers, end_stream=not body)
            self.answered = True
            if body:
                core.send_data(self.stream_id, body)
                core.end_stream(self.stream_id)
        except h2core.StreamGone:
            return
        if not self.stream._eof and core.unsent(self.stream_id) == 0:
            # Answered before the request ended: ask the caller to stop sending (RFC 9113 8.1).
            core.reset_stream(self.stream_id, h2core.NO_ERROR)
        self._link._after_action()

    def accept(self, headers: dict[str, str] | None = None) -> Stream:
        """Answer 200 without END_STREAM; the stream then carries bytes both ways."""
        if self.answered:
            raise RuntimeError("request already answered")
        if not self.stream.closed:
            with contextlib.suppress(h2core.StreamGone):
                self._link._core.send_response(self.stream_id, 200, headers)
            self._link._after_action()
        self.answered = True
        return self.stream

    async def read_body(self, limit: int = 65536) -> bytes:
        """The request body (up to END_STREAM); BodyTooLarge above ``limit``."""
        collector = _Collector(limit)
        self.stream.set_protocol(collector)
        return await collector.done


def _json_error(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


class ServerLink(_Link):
    """The accepting end of a link: runs the handler as one task per stream."""

    client_side = False
    refused: tuple[str, str] | None = None  # (reason, detail) if refused after the handshake
    refused_name: str | None = None  # the name the refused certificate claimed, for the log

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        *,
        idle_timeout: float | None,
        keepalive: float,
        registry: set[ServerLink] | None = None,
        revoked: Callable[[Any], str | None] | None = None,
        admission: Admission = OPEN,
    ) -> None:
        super().__init__(limits, idle_timeout=idle_timeout, keepalive=keepalive)
        self._revoked = revoked
        self._handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self._registry = registry
        self._admission = admission

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        refused = admission_refusal(ssl_object, self._revoked)
        if refused is not None and refused[0] == "revoked":
            self.refused_name = peer_identity(ssl_object)
        elif refused is None:
            verdict = self._admission.check(ssl_object)
            if isinstance(verdict, Refused):
                refused, self.refused_name = (verdict.reason, verdict.detail), verdict.name
            else:
                self.fabric = verdict.fabric
        if refused is not None:  # the acceptor logs and counts it
            self.refused = refused
            self._closing = True
            transport.abort()
            return
        super().connection_made(transport)

    def _link_up(self) -> None:
        if self._registry is not None:
            self._registry.add(self)
        log.debug("peer link accepted", extra={"peer": self.peer, "client_address": self.address})

    def _link_down(self, exc: Exception | None) -> None:
        if self._registry is not None:
            self._registry.discard(self)
        log.debug("peer link closed", extra={"peer": self.peer, "error": str(exc) if exc else None})

    def _on_request(self, ev: h2core.RequestReceived) -> None:
        stream = Stream(self, ev.stream_id)
        self._streams[ev.stream_id] = stream
        incoming = IncomingStream(self, stream, ev)
        task = self._loop.create_task(self._run(incoming))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, incoming: IncomingStream) -> None:
        try:
            await self._handler(incoming)
        except Exception:
            log.exception(
                "peer request handler failed",
                extra={"peer": incoming.peer, "method": incoming.method, "path": incoming.path},
            )
            self._fail(incoming, "internal error")
            return
        if not incoming.answered and not incoming.stream.closed:
            log.error(
                "peer request handler returned without answering",
                extra={"peer": incoming.peer, "method": incoming.method, "path": incoming.path},
            )
            self._fail(incoming, "no answer")

    @staticmethod
    def _fail(incoming: IncomingStream, reason: str) -> None:
        """A 500 if nothing was answered yet, else reset the stream."""
        if not incoming.answered:
            try:
                incoming.answer(500, _json_error(reason), {"content-type": "application/json"})
                return
            except (ValueError, RuntimeError):
                pass
        incoming.stream.reset(h2core.INTERNAL_ERROR)


async def start_peer_server(
    host: str | None,
    port: int | None,
    tls: TLSContexts,
    handler: Handler,
    *,
    reuse_port: bool = False,
    handshake_timeout: float = 10.0,
    idle_timeout: float = 300.0,
    max_header_bytes: int = 16384,
    max_concurrent_streams: int = 10000,
    limits: Limits | None = None,
    keepalive: float = KEEPALIVE,
    backlog: int = 1024,
    links: set[ServerLink] | None = None,
    on_handshake_failure: FailureHook | None = None,
    sock: socket.socket | None = None,
    admission: Admission = OPEN,
    max_handshakes: int = MAX_HANDSHAKES,
    max_handshakes_per_source: int = MAX_HANDSHAKES_PER_SOURCE,
    gate: HandshakeGate | None = None,
) -> asyncio.Server:
    """Listen for peer links (mTLS, ALPN h2) and run ``handler`` for every incoming stream.

    With ``sock`` (an already listening socket), ``host``, ``port`` and ``reuse_port`` are unused.

    ``asyncio.Server.close()`` stops accepting; established links live on. Pass a set as
    ``links`` to track them (e.g. to ``goaway()`` or ``close()`` them at shutdown). Every
    refused handshake is logged and passed to ``on_handshake_failure(reason)``. ``admission``
    decides which verified certificates may hold a link (default: any with a DNS SAN name). At most
    ``max_handshakes`` connections (``max_handshakes_per_source`` from one source) may be
    unauthenticated at once; further ones are reset at accept (reason ``overload``). Pass
    ``gate`` to read its counts (it then holds the caps).
    """
    lim = replace(
        limits or Limits(),
        max_header_bytes=max_header_bytes,
        max_concurrent_streams=max_concurrent_streams,
    )
    loop = asyncio.get_running_loop()
    gate = gate or HandshakeGate(max_handshakes, max_handshakes_per_source)
    acceptor = PeerAcceptor(
        tls.server_context(), handshake_timeout, on_handshake_failure, gate=gate
    )

    def make_link() -> ServerLink:
        return ServerLink(
            handler,
            lim,
            idle_timeout=idle_timeout,
            keepalive=keepalive,
            registry=links,
            revoked=tls.revoked,
            admission=admission,
        )

    return await loop.create_server(
        lambda: acceptor.protocol(make_link),
        None if sock else host,
        None if sock else port,
        reuse_port=None if sock else reuse_port or None,
        backlog=backlog,
        sock=sock,
    )


# -- client side -------------------------------------------------------------------------------


class ClientLink(_Link):
    """The dialing end of a link: sends requests and CONNECTs."""

    client_side = True

    def __init__(
        self,
        peer_name: str,
        limits: Limits,
        *,
        keepalive: float = KEEPALIVE,
        on_lost: Callable[[ClientLink], None] | None = None,
    ) -> None:
        super().__init__(limits, idle_timeout=None, keepalive=keepalive)
        self.expected_peer = peer_name
        self.endpoint: tuple[str, int] | None = None
        self.draining = False
        self._on_lost = on_lost

    @property
    def usable(self) -> bool:
        return not self.draining and super().usable

    @property
    def closed_gracefully(self) -> bool:
        """The peer said GOAWAY without an error (e.g. idle or shutting down)."""
        return self._core.goaway_received is not None and self._core.failed is None

    def drain(self) -> None:
        """No new streams; close once the active ones finished."""
        self.draining = True
        if not self._streams and self._transport is not None:
            self.close()

    def _link_down(self, exc: Exception | None) -> None:
        if self._on_lost is not None:
            self._on_lost(self)

    def _on_stream_closed(self, ev: h2core.StreamClosed) -> None:
        super()._on_stream_closed(ev)
        if self.draining and not self._streams:
            self.close()

    def _on_response(self, ev: h2core.ResponseReceived) -> None:
        stream = self._streams.get(ev.stream_id)
        if stream is not None and stream._response is not None and not stream._response.done():
            stream._response.set_result((ev.status, ev.headers))

    def _open(
        self,
        method: str,
        authority: str,
        path: str | None,
        headers: dict[str, str] | None,
        end: bool,
    ) -> Stream:
        if not self.usable:
            raise NotProcessed(f"link to {self.peer or self.expected_peer} is not usable")
        try:
            sid = self._core.open_stream(
                method, authority, path=path, headers=headers, end_stream=end
            )
        except h2core.CannotOpenStream as exc:
            raise NotProcessed(str(exc)) from None
        except ValueError as exc:  # headers too large or not valid in HTTP/2
            raise RequestRejected(str(exc)) from None
        stream = Stream(self, sid)
        stream._response = self._loop.create_future()
        stream._response.add_done_callback(_retrieve)
        self._streams[sid] = stream
        self._flush()
        return stream

    async def request(
        self,
        method: str,
        path: str,
        *,
        authority: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        max_body: int = 1 << 20,
    ) -> Response:
        stream = self._open(method, authority, path, headers, not body)
        collector = _Collector(max_body)
        stream.set_protocol(collector)
        try:
            if body:
                stream.write(body)
                stream.write_eof()
            status, response_headers = await stream._response  # type: ignore[misc]
            data = await collector.done
        except BaseException:
            stream.reset()
            raise
        return Response(status, response_headers, data)

    async def open_connect(
        self, authority: str, headers: dict[str, str] | None = None, *, max_body: int = 65536
    ) -> tuple[Response, Stream | None]:
        stream = self._open("CONNECT", authority, None, headers, False)
        try:
            status, response_headers = await stream._response  # type: ignore[misc]
            if 200 <= status < 300:
                return Response(status, response_headers, b""), stream
            collector = _Collector(max_body)
            stream.set_protocol(collector)
            body = await collector.done
        except BaseException:
            stream.reset()
            raise
        stream.write_eof()
        return Response(status, response_headers, body), None


async def dial(
    host: str,
    port: int,
    peer_name: str,
    tls: TLSContexts,
    *,
    timeout: float = 3.0,  # noqa: ASYNC109 - bounds the TCP connect
    handshake_timeout: float | None = None,
    limits: Limits | None = None,
    keepalive: float = KEEPALIVE,
    on_lost: Callable[[ClientLink], None] | None = None,
    on_tcp: Callable[[], None] | None = None,
) -> ClientLink:
    """Open one link to ``peer_name`` at ``host:port``; ConnectionError/TimeoutError on failure.

    ``timeout`` bounds the TCP connect, ``handshake_timeout`` (default: ``timeout``) the TLS
    handshake after it (``on_tcp`` is called in between): a restarting peer whose listening
    socket systemd holds accepts the TCP connection at once and answers the handshake when its
    new process is up.
    """
    loop = asyncio.get_running_loop()
    lim = limits or Limits()
    try:
        async with asyncio.timeout(timeout):
            sock = await _tcp_connect(host, port)
        if on_tcp is not None:
            on_tcp()
        try:
            _, link = await loop.create_connection(
                lambda: ClientLink(peer_name, lim, keepalive=keepalive, on_lost=on_lost),
                ssl=tls.client_context(),
                server_hostname=peer_name,
                ssl_handshake_timeout=handshake_timeout or timeout,
                sock=sock,
            )
        except BaseException:
            sock.close()
            raise
    except ssl.SSLCertVerificationError as exc:
        raise ConnectionError(
            f"{peer_name} at {host}:{port}: certificate rejected: {exc.verify_message}"
        ) from None
    except ConnectionResetError:
        # A peer refuses our handshake by closing: e.g. it is not named peer_name (SNI), or it
        # does not trust our certificate; its handshake-failure counter says which.
        raise ConnectionError(
            f"{peer_name} at {host}:{port}: TLS handshake refused by the peer (certificate or "
            f"name {peer_name!r} not accepted there)"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        if isinstance(exc, ConnectionError):
            raise
        raise ConnectionError(
            f"{peer_name} at {host}:{port}: {str(exc) or type(exc).__name__}"
        ) from None
    revoked = tls.revoked(link._transport.get_extra_info("ssl_object") if link._transport else None)
    if revoked is not None:
        link.abort()
        tls.report_revoked_dial(peer_name, f"{host}:{port}", revoked)
        raise ConnectionError(f"{peer_name} at {host}:{port}: certificate revoked: {revoked}")
    if not link.usable:
        raise ConnectionError(f"{peer_name} at {host}:{port}: peer did not negotiate h2")
    link.endpoint = (host, port)
    return link


async def _tcp_connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to the first address of ``host`` that answers."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, kind, proto, _, address in await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last or OSError(f"{host}: no address")
