"""The admin API's listeners: connection caps, a header timeout and TLS refusals, around aiohttp.

aiohttp has no header timeout (its keep-alive timer is an hour by default and a client that
sends half a request line is "idle"), no connection cap, and its TLS server reports a failed
handshake nowhere. So each listener here has its own protocol factory:

* over ``admin.max_connections`` open connections a new one is closed at once;
* the TCP listener speaks plain TCP and wraps each connection in the same TLS protocol the
  peer port uses (``peering.accept``), whose handshake outcome is classified and counted;
* each HTTP connection is aiohttp's own ``RequestHandler`` with one more timer: the request
  headers must be complete ``admin.header_timeout`` after the connection (or the previous
  response); an idle keep-alive connection is closed then too, silently.

The body timeout is applied where the body is read (``api.app``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..peering.accept import classify, tls_protocol_class
from .limits import HEADER_TIMEOUT, TLS_PREFIX, TOO_MANY_CONNECTIONS, Refusals, Slots

KEEPALIVE_BACKSTOP = 75.0  # aiohttp's own idle timer; ours (header_timeout) fires first
LINGERING_TIME = 5.0  # read and drop an unread body this long before closing (was 10 s)


def _address(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None


class AdminRequestHandler(RequestHandler):
    """aiohttp's HTTP/1.1 connection with a header timer and a connection slot."""

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        header_timeout: float,
        refusals: Refusals,
        listener: str,
        release: Callable[[], None] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self.header_timeout = header_timeout
        self.refusals = refusals
        self.listener = listener
        self.made = False
        self._release = release
        self._header_timer: asyncio.TimerHandle | None = None
        self._served = 0  # responses finished on this connection
        self._partial = False  # bytes of a request whose headers are not complete yet
        self._client: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        self._client = _address(transport)
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is not None and data:
            self._partial = True
        super().data_received(data)
        if self._header_timer is not None and self._headers_pending():
            self._disarm()

    async def finish_response(self, request: Any, resp: Any, start_time: float | None) -> Any:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._served += 1
            if not self._headers_pending() and self.transport is not None:
                self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        release, self._release = self._release, None
        if release is not None:
            release()
        super().connection_lost(exc)

    # -- the header timer -------------------------------------------------------------------

    def _headers_pending(self) -> bool:
        """A request whose headers are complete has not been answered yet."""
        return self._request_count > self._served

    def _arm(self) -> None:
        self._disarm()
        self._partial = False
        self._header_timer = self._loop.call_later(self.header_timeout, self._header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._headers_pending() or self.transport is None:
            return
        if self._served == 0 or self._partial:  # else an idle keep-alive connection
            what = "no complete request headers" if self._partial else "no request"
            self.refusals(
                HEADER_TIMEOUT,
                f"{what} within {self.header_timeout:g} s",
                listener=self.listener,
                client=self._client,
            )
            self.transport.abort()  # no graceful (TLS) close for a client that stalls
        self.force_close()


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed as soon as it is accepted."""

    def __init__(self, refusals: Refusals, listener: str, limit: int) -> None:
        self.refusals, self.listener, self.limit = refusals, listener, limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
        self.refusals(
            TOO_MANY_CONNECTIONS,
            f"{self.limit} connections open (admin.max_connections)",
            listener=self.listener,
            client=_address(transport),
        )


class Listener:
    """The protocol factory of one admin listener (unix socket or TCP with TLS)."""

    def __init__(
        self,
        name: str,
        server: web.Server,
        *,
        header_timeout: float,
        max_connections: int,
        refusals: Refusals,
        tls: Callable[[], ssl.SSLContext | None] | None = None,
    ) -> None:
        self.name = name
        self.server = server
        self.header_timeout = header_timeout
        self.slots = Slots(max_connections)
        self.refusals = refusals
        self.tls = tls  # asked for the current context per connection: a reload may swap it
        self._loop = asyncio.get_running_loop()
        self._tls_class = _counted_tls_class(self._loop) if tls is not None else None

    def __call__(self) -> asyncio.BaseProtocol:
        if not self.slots.acquire():
            return _Refused(self.refusals, self.name, self.slots.limit)
        context = self.tls() if self.tls is not None else None
        handler = AdminRequestHandler(
            self.server,
            loop=self._loop,
            header_timeout=self.header_timeout,
            refusals=self.refusals,
            listener=self.name,
            release=self.slots.release if context is None else None,
            keepalive_timeout=max(KEEPALIVE_BACKSTOP, 2 * self.header_timeout),
            lingering_time=LINGERING_TIME,
            access_log=None,
        )
        if context is None:
            return handler
        assert self._tls_class is not None
        waiter = self._loop.create_future()
        protocol = self._tls_class(
            self._loop,
            handler,
            context,
            waiter,
            server_side=True,
            server_hostname=None,
            ssl_handshake_timeout=self.header_timeout,
            ssl_shutdown_timeout=self.header_timeout,  # bounds how long a closed one holds a slot
        )
        protocol.release = self.slots.release
        waiter.add_done_callback(lambda fut: self._handshake_done(fut, protocol, handler))
        return protocol  # type: ignore[no-any-return]

    def _handshake_done(self, fut: asyncio.Future[None], protocol: Any, handler: Any) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None and handler.made:
            return
        reason, detail = classify(exc)
        address = protocol.client_address
        self.refusals(
            TLS_PREFIX + reason,
            detail,
            listener=self.name,
            client=f"{address[0]}:{address[1]}" if address else None,
        )


def _counted_tls_class(loop: asyncio.AbstractEventLoop) -> type[Any]:
    base = tls_protocol_class(loop)

    class _Counted(base):  # type: ignore[misc, valid-type]
        """The TLS server protocol, giving its connection slot back when the socket closes."""

        release: Callable[[], None] | None = None
        client_address: tuple[str, int] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peername")
            self.client_address = (str(peer[0]), int(peer[1])) if peer else None
            super().connection_made(transport)

        def connection_lost(self, exc: BaseException | None) -> None:
            release, self.release = self.release, None
            if release is not None:
                release()
            super().connection_lost(exc)

    return _Counted


CreateServer = Callable[[Listener], Awaitable[asyncio.AbstractServer]]


class AdminSite(web.BaseSite):
    """An aiohttp site whose server is created with a ``Listener`` as protocol factory, so
    that ``AppRunner.cleanup`` stops it like any other site."""

    def __init__(self, runner: web.AppRunner, listener: Listener, create: CreateServer) -> None:
        super().__init__(runner)
        self.listener = listener
        self._create = create

    @property
    def name(self) -> str:
        return self.listener.name

    async def start(self) -> None:
        await super().start()
        self._server = await self._create(self.listener)
