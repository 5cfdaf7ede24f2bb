"""A peer link inside a relayed stream: TLS over an HTTP/2 stream instead of a TCP socket.

``StreamTransport`` presents a ``Stream`` as an ``asyncio.Transport``. On it runs the event
loop's own TLS protocol (the one the peer port and ``dial`` use, an ``ssl`` MemoryBIO pump):
the dialing end (``open_tunnel``) with its per-peer client context for the destination, the
same as a direct dial; the accepting end feeds it to the peer port's acceptor
(``PeerAcceptor.protocol``), so SNI, admission, anchors and revocation apply unchanged. The
relay in between carries ciphertext only. Above TLS runs an ordinary ``Session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

from . import h2core
from .accept import tls_protocol_class
from .session import Session
from .stream import Stream
from .tls import TLSContexts, TLSError

_S = TypeVar("_S", bound=Session)
log = logging.getLogger("clusterlink.peering")

CLOSE_GRACE = 10.0  # after our END_STREAM, the other end has this long to end its side


class StreamTransport(asyncio.Transport):
    """A ``Stream`` as an asyncio transport (and the stream's protocol)."""

    def __init__(self, stream: Stream, peername: tuple[str, int], relay: str) -> None:
        super().__init__()
        self.stream = stream
        self.relay = relay  # the relay's peer name: the link is relayed through it
        self._peername = peername
        self._protocol: asyncio.BaseProtocol | None = None
        self._closing = False
        self._lost = False
        self._write_paused = False
        self._grace: asyncio.TimerHandle | None = None

    def start(self, protocol: asyncio.BaseProtocol) -> None:
        """Connect ``protocol`` (``connection_made``) and start delivering the stream's bytes."""
        self._protocol = protocol
        protocol.connection_made(self)
        self.stream.set_protocol(self)

    # -- asyncio.Transport ---------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "relay":
            return self.relay
        return default

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self.stream.write_eof()
        self._grace = asyncio.get_running_loop().call_later(CLOSE_GRACE, self.abort)

    def abort(self) -> None:
        self._closing = True
        if not self._lost and not self.stream.closed:
            self.stream.reset(h2core.CANCEL)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing and not self._lost and data:
            self.stream.write(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        self.stream.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None:
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.stream.resume_reading()

    def is_reading(self) -> bool:
        return not self.stream._reading_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # the stream's own flow control decides when to pause the writer

    def get_write_buffer_size(self) -> int:
        return 0 if self._lost else self.stream.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    # -- StreamProtocol ------------------------------------------------------------------------

    def _force_close(self, exc: BaseException | None) -> None:
        """uvloop's TLS protocol calls this on a fatal error (a failed handshake); soon, so
        that its handshake waiter gets the TLS error before the stream's reset."""
        self._closing = True
        asyncio.get_running_loop().call_soon(self.abort)

    def stream_data_received(self, data: bytes) -> None:
        try:
            self._deliver(data)
        except Exception as exc:  # the TLS layer failed (e.g. a bad record): the link is dead
            log.debug("relayed link: TLS failed", extra={"relay": self.relay, "error": str(exc)})
            self.abort()

    def _deliver(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol is None or self._lost:
            return
        if hasattr(protocol, "get_buffer"):  # uvloop's TLS protocol is a buffered one
            view = memoryview(data)
            while view:
                buf = memoryview(protocol.get_buffer(len(view)))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                protocol.buffer_updated(n)
                view = view[n:]
        else:
            protocol.data_received(data)  # type: ignore[attr-defined]

    def stream_eof_received(self) -> None:
        protocol = self._protocol
        keep = protocol.eof_received() if protocol is not None else False  # type: ignore[attr-defined]
        if not keep:
            self.close()

    def stream_closed(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._grace is not None:
            self._grace.cancel()
        if self._protocol is not None:
            self._protocol.connection_lost(exc)

    def stream_pause_writing(self) -> None:
        if not self._write_paused and self._protocol is not None:
            self._write_paused = True
            self._protocol.pause_writing()

    def stream_resume_writing(self) -> None:
        if self._write_paused and self._protocol is not None:
            self._write_paused = False
            self._protocol.resume_writing()


def relay_of(transport: asyncio.BaseTransport | None) -> str | None:
    """The relay a link's transport passes through (None: a direct or reverse link)."""
    if transport is None:
        return None
    with contextlib.suppress(Exception):
        relay = transport.get_extra_info("relay")
        if isinstance(relay, str):
            return relay
    return None


class TunnelPort:
    """The accepting end: relayed streams fed to the peer port's acceptor (set by
    ``connect.start_peer_server``), as if they were TCP connections to the peer port."""

    def __init__(self) -> None:
        self.protocol: Callable[[], asyncio.BaseProtocol] | None = None

    def accept(self, stream: Stream, relay: str) -> bool:
        """Run the peer port's TLS acceptance on ``stream`` (from relay ``relay``)."""
        if self.protocol is None:
            stream.reset(h2core.REFUSED_STREAM)
            return False
        StreamTransport(stream, (f"relay:{relay}", 0), relay).start(self.protocol())
        return True


async def open_tunnel(
    stream: Stream,
    relay: str,
    peer_name: str,
    tls: TLSContexts,
    make_session: Callable[[], _S],
    *,
    handshake_timeout: float,
) -> _S:
    """The dialing end: TLS 1.3 with ``peer_name`` inside ``stream`` (a CONNECT through
    ``relay``), verified exactly as a direct dial (server name, per-peer anchors, binding,
    revocation); the session ``make_session`` builds runs on it. ConnectionError on failure."""
    loop = asyncio.get_running_loop()
    where = f"via {relay}"
    try:
        context = tls.client_context(reverse=False, peer=peer_name)
    except TLSError as exc:
        stream.reset(h2core.CANCEL)
        raise ConnectionError(f"{peer_name} {where}: {exc}") from None
    waiter: asyncio.Future[None] = loop.create_future()
    session = make_session()
    protocol = tls_protocol_class(loop)(
        loop,
        session,
        context,
        waiter,
        server_side=False,
        server_hostname=peer_name,
        ssl_handshake_timeout=handshake_timeout,
    )
    transport = StreamTransport(stream, (f"relay:{relay}", 0), relay)
    transport.start(protocol)
    try:
        await waiter
    except ssl.SSLCertVerificationError as exc:
        transport.abort()
        raise ConnectionError(
            f"{peer_name} {where}: certificate rejected: {exc.verify_message}"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        transport.abort()
        raise ConnectionError(
            f"{peer_name} {where}: TLS handshake failed: {str(exc) or type(exc).__name__}"
        ) from None
    except BaseException:
        transport.abort()
        raise
    app = session._transport
    ssl_object = app.get_extra_info("ssl_object") if app is not None else None
    unbound = tls.dial_refusal(ssl_object, peer_name)
    if unbound is not None:
        session.abort()
        raise ConnectionError(f"{peer_name} {where}: {unbound}")
    session.fabric = not tls.bound(peer_name)
    revoked = tls.revoked(ssl_object)
    if revoked is not None:
        session.abort()
        tls.report_revoked_dial(peer_name, where, revoked)
        raise ConnectionError(f"{peer_name} {where}: certificate revoked: {revoked}")
    if not session.usable:
        session.abort()
        raise ConnectionError(f"{peer_name} {where}: peer did not negotiate h2")
    return session
