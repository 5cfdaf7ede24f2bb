"""Reverse links, the dialing side: links an outbound-only site keeps open to a peer so that
the peer can open streams to it (``reverse`` has the accepting side).

A peer asks for them in its heartbeat answer (``reverse_links``: how many it wants) when it
holds our site as a Peer with ``dial: false``; ``ReverseLinks.want`` follows that figure. The
links are dialed to the peer's endpoints in order, each with the same TLS 1.3 mutual
authentication as a forward link (the peer's certificate must name it) and ALPN
``REVERSE_ALPN``; on each we are the HTTP/2 server and run the same handler as our peer port.
A lost link is dialed again at once if it had lived a while, else after a backoff that grows
to ``MAX_BACKOFF`` (the peer may be refusing it: restarting, over its limit, not expecting it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .connect import dial_reverse
from .h2core import Limits
from .serving import Handler, ServerLink
from .session import KEEPALIVE
from .tls import TLSContexts

log = logging.getLogger("clusterlink.peering")

MAX_BACKOFF = 8.0
MIN_LINK_LIFE = 2.0  # a link lost sooner than this counts as a failure (backoff)


def backoff(failures: int) -> float:
    """Seconds before the next dial after ``failures`` consecutive failures."""
    return 0.0 if failures <= 0 else min(0.25 * 2.0 ** (failures - 1), MAX_BACKOFF)


class ReverseLinks:
    """Keeps ``wanted`` reverse links open to one peer."""

    def __init__(
        self,
        peer_name: str,
        endpoints: list[tuple[str, int]],
        tls: TLSContexts,
        handler: Handler,
        *,
        connect_timeout: float = 3.0,
        handshake_timeout: float = 10.0,
        limits: Limits | None = None,
        keepalive: float = KEEPALIVE,
        registry: set[ServerLink] | None = None,
    ) -> None:
        self.peer_name = peer_name
        self.endpoints = list(endpoints)
        self.tls = tls
        self.handler = handler
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self._limits = limits or Limits()
        self._keepalive = keepalive
        self._registry = registry
        self.wanted = 0
        self.failures = 0
        self.last_error = ""
        self._links: dict[ServerLink, float] = {}  # link -> loop time it came up
        self._changed = asyncio.Event()  # a link was lost, or the want/endpoints changed
        self._reconfigured = asyncio.Event()  # the want or the endpoints changed
        self._not_before = 0.0  # loop time of the next dial (backoff)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def links(self) -> list[ServerLink]:
        return list(self._links)

    def want(self, count: int) -> None:
        """The peer wants ``count`` reverse links (0: none; open ones close)."""
        count = max(0, int(count))
        if count == self.wanted:
            return
        self.wanted = count
        if count == 0:
            for link in list(self._links):
                link.goaway()
        self._wake()

    def set_endpoints(self, endpoints: list[tuple[str, int]]) -> None:
        self.endpoints = list(endpoints)
        self.failures, self._not_before = 0, 0.0
        self._wake()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        links = list(self._links)
        for link in links:
            link.goaway()
        if links:
            await asyncio.wait([link.lost for link in links], timeout=2.0)
        for link in links:
            link.abort()

    def renew(self) -> None:
        """Our certificate changed: replace every link (the old ones finish their streams)."""
        for link in list(self._links):
            link.goaway()
        self._wake()

    def stop(self) -> None:
        """Dial no more (e.g. the gateway is stopping); open links stay until closed."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    # -- internals -----------------------------------------------------------------------------

    def _wake(self, *, reconfigured: bool = True) -> None:
        self._changed.set()
        if reconfigured:
            self._reconfigured.set()
        if not self._closed and (self._task is None or self._task.done()) and self.wanted:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"reverse-{self.peer_name}"
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        turn = 0
        while not self._closed and self.wanted:
            self._changed.clear()
            up = [link for link in self._links if link.usable]  # not going away
            if len(up) >= self.wanted or not self.endpoints:
                await self._changed.wait()
                continue
            delay = self._not_before - loop.time()
            if delay > 0:  # backoff: only a new want or new endpoints cut it short
                self._reconfigured.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reconfigured.wait(), delay)
                continue
            host, port = self.endpoints[turn % len(self.endpoints)]
            try:
                link = await dial_reverse(
                    host,
                    port,
                    self.peer_name,
                    self.tls,
                    self.handler,
                    timeout=self.connect_timeout,
                    handshake_timeout=self.handshake_timeout,
                    limits=self._limits,
                    keepalive=self._keepalive,
                    registry=self._registry,
                )
            except (ConnectionError, TimeoutError, OSError) as exc:
                turn += 1  # the next endpoint next time
                self._failed(str(exc) or type(exc).__name__, f"{host}:{port}")
                continue
            if self._closed or not self.wanted:
                link.goaway()
                break
            self._links[link] = loop.time()
            link.lost.add_done_callback(lambda _, link=link: self._lost(link))
            loop.call_later(MIN_LINK_LIFE, self._settled, link)
            log.debug(
                "reverse link opened", extra={"peer": self.peer_name, "endpoint": f"{host}:{port}"}
            )

    def _settled(self, link: ServerLink) -> None:
        """A link that stayed up MIN_LINK_LIFE was accepted: the failures are over."""
        if link in self._links and self.failures:
            log.info("reverse link accepted again", extra={"peer": self.peer_name})
            self.failures, self.last_error, self._not_before = 0, "", 0.0

    def _lost(self, link: ServerLink) -> None:
        born = self._links.pop(link, None)
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if born is not None and loop.time() - born < MIN_LINK_LIFE and not link.closed_locally:
            self._failed("reverse link closed right after it was opened (refused?)", "")
        elif not link.closed_locally:
            log.info("reverse link lost; dialing again", extra={"peer": self.peer_name})
        self._wake(reconfigured=False)

    def _failed(self, error: str, endpoint: str) -> None:
        self.failures += 1
        self.last_error = error
        self._not_before = asyncio.get_running_loop().time() + backoff(self.failures)
        (log.warning if self.failures == 1 else log.debug)(
            "cannot open reverse link",
            extra={
                "peer": self.peer_name,
                "endpoint": endpoint,
                "error": error,
                "failures": self.failures,
            },
        )
