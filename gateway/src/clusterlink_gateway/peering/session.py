"""A peer link's HTTP/2 session: an ``asyncio.Protocol`` around the sans-IO core.

All I/O, timers and backpressure of a link live here; the protocol logic is in ``h2core``; who
dialed is the connection-setup layer's business (``connect``). ``serving.ServerLink`` (HTTP/2
server: runs a handler per incoming stream) and ``requesting.ClientLink`` (HTTP/2 client: sends
requests and CONNECTs) are its two roles.
"""

from __future__ import annotations

import asyncio
import logging
import time

from . import h2core
from .h2core import H2Core, Limits
from .liveness import TcpInfo, enable_keepalive, tcp_info
from .stream import NotProcessed, Stream, StreamError
from .tls import SERVER_ALPN, peer_identity

log = logging.getLogger("clusterlink.peering")

LINK_WRITE_HIGH = 4 << 20  # TLS transport buffer above which DATA is held in the core
LINK_WRITE_LOW = 1 << 20
KEEPALIVE = 10.0  # seconds of silence before a PING; no answer within as long: link is dead


class Session(asyncio.Protocol):
    """One peer link's HTTP/2 session over a verified TLS transport: the core, the stream
    table, keepalive and idle timers, flushing.

    Which HTTP/2 role it plays (``client_side``) is given when it is built and is independent
    of which gateway dialed: the connection-setup layer (``connect``) builds a session on a
    dialed transport, and on an accepted one once the admission rule admitted the verified
    peer and ALPN named the role (``reverse.RoleSwitch``).
    """

    def __init__(
        self,
        limits: Limits,
        *,
        client_side: bool,
        idle_timeout: float | None,
        keepalive: float,
    ) -> None:
        self.client_side = client_side
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
        self._rx_at = 0.0  # loop time of the last bytes received
        self._ping_deadline: float | None = None
        self._pings: dict[bytes, tuple[float, asyncio.Future[float]]] = {}
        self._ping_seq = 0
        self._keepidle = 0  # kernel keepalive idle time set on the socket (0: not set)
        self._socket: object | None = None
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
        if alpn not in SERVER_ALPN or not name:
            reason = "peer did not negotiate ALPN h2" if alpn not in SERVER_ALPN else "no name"
            log.warning(
                "peer link refused", extra={"client_address": self.address, "reason": reason}
            )
            self._closing = True
            transport.close()
            return
        self.peer = name
        transport.set_write_buffer_limits(high=LINK_WRITE_HIGH, low=LINK_WRITE_LOW)
        self._core.initiate()
        self._rx_at = self._loop.time()
        self._flush()
        self._schedule_tick()
        self._link_up()

    def data_received(self, data: bytes) -> None:
        self._rx_at = self._loop.time()
        try:
            events = self._core.receive(data)
        except Exception:
            log.exception("peer link: internal error", extra={"peer": self.peer})
            self.abort()
            return
        if events:
            self._dispatch(events)
        if self._core.has_output():  # e.g. not after a small DATA frame: nothing to answer
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
        pings, self._pings = self._pings, {}
        for _, waiter in pings.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"link to {self.peer} lost"))
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

    async def ping(self) -> float:
        """Send an HTTP/2 PING; its round trip in seconds once acknowledged (the caller bounds
        the wait). ConnectionError if the link is not usable or is lost first."""
        if not self.usable:
            raise ConnectionError(f"link to {self.peer} is not usable")
        self._ping_seq += 1
        data = b"\x01" + self._ping_seq.to_bytes(7, "big")  # keepalive PINGs carry zeros
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._pings[data] = (time.monotonic(), waiter)  # uvloop's clock ticks in whole ms
        self._core.ping(data)
        self._flush()
        try:
            return await waiter
        finally:
            self._pings.pop(data, None)

    def tcp_liveness(self, idle: int) -> TcpInfo | None:
        """The kernel's view of the link (last ACK age, RTT), with keepalive probes every
        ``idle`` s while nothing is received; None if closed or not available here."""
        if self._transport is None or self._closing:
            return None
        if self._socket is None:  # uvloop builds a new socket object per get_extra_info
            self._socket = self._transport.get_extra_info("socket")
        sock = self._socket
        if sock is None:
            return None
        if self._keepidle != idle:
            if not enable_keepalive(sock, idle):
                return None
            self._keepidle = idle
        return tcp_info(sock)

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

    # -- StreamHost (what its streams call) -------------------------------------------------------

    def stream_send(self, stream_id: int, data: bytes | memoryview) -> bool:
        """Queue DATA; True if the stream's sender should pause. StreamGone if it is gone."""
        pause = self._core.send_data(stream_id, data)
        self._flush()
        return pause

    def stream_end(self, stream_id: int) -> None:
        self._core.end_stream(stream_id)
        self._after_action()

    def stream_reset(self, stream_id: int, code: int) -> None:
        self._core.reset_stream(stream_id, code)
        self._after_action()

    def stream_ack(self, stream_id: int, size: int) -> None:
        self._core.ack(stream_id, size)

    def stream_unsent(self, stream_id: int) -> int:
        return self._core.unsent(stream_id)

    def kick(self) -> None:
        """Flush soon (a stream handed window back or got a protocol)."""
        self._flush()

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
            sent = self._pings.pop(ev.data, None)
            if sent is not None and not sent[1].done():
                sent[1].set_result(time.monotonic() - sent[0])
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

    def _schedule_tick(self, delay: float | None = None) -> None:
        interval = self._keepalive
        if self._idle_timeout:
            interval = min(interval, self._idle_timeout / 2)
        if delay is not None:
            interval = min(interval, delay)
        self._timer = self._loop.call_later(max(interval, 0.05), self._tick)

    def _tick(self) -> None:
        """Keepalive: a PING after ``keepalive`` s with nothing received (heartbeats and their
        PINGs count, so a link they use stays quiet); the idle timeout of server links."""
        self._timer = None
        if self._transport is None or self._closing:
            return
        now = self._loop.time()
        quiet_until = self._rx_at + self._keepalive
        if now < quiet_until:
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
        self._schedule_tick(quiet_until - now if now < quiet_until else None)
