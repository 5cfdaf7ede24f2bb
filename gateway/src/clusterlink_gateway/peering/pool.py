"""A pool of long-lived links to one remote peer, with endpoint failover and re-dialing.

Two kinds of dials. Background link maintenance (``_maintain``) keeps ``links`` links up with a
per-endpoint backoff and waits up to ``handshake_timeout`` for a TLS handshake. A caller that
needs a link now (a client's CONNECT, a heartbeat) waits at most ``connect_timeout`` for one,
TCP connect and TLS handshake together; when no link is usable it dials on demand, one dial at
a time, with its own short backoff (``ondemand.OnDemand``), even if every endpoint is in its
background backoff: a peer that listens again is used at the next client. The one exception:
a peer that said GOAWAY (a graceful restart) within the last ``handshake_timeout`` and whose
TCP port accepts (systemd holds it) gets up to ``handshake_timeout`` for its handshake.

An idle peer gets one link; the pool keeps ``links`` links once a caller finds every link
carrying a stream (concurrent streams need them), from then on.

A pool for a peer with ``dial: false`` (an outbound-only site) never dials: its links are the
reverse links that peer opened to us (``adopt``); a caller waits up to ``connect_timeout`` for
one when none is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .connect import dial
from .h2core import Limits
from .liveness import TcpInfo
from .ondemand import Action, OnDemand
from .requesting import ClientLink
from .session import KEEPALIVE
from .stream import NotProcessed, Response, Stream
from .tls import TLSContexts

log = logging.getLogger("clusterlink.peering")

T = TypeVar("T")
RelayDial = Callable[[Callable[[], ClientLink]], Awaitable[tuple[ClientLink, str]]]

MAX_BACKOFF = 8.0  # below the 10 s heartbeat interval of an unreachable peer
MIN_LINK_LIFE = 1.0  # a link lost sooner than this without an answer counts as a failed dial
MAX_ATTEMPTS = 6  # links tried for one request before giving up (each failure was transparent)
ON_DEMAND_BASE = 0.05  # first backoff after a failed on-demand dial
ON_DEMAND_CAP = 1.0  # at most this (and at most half of connect_timeout) between on-demand dials


def _backoff(failures: int) -> float:
    return 0.0 if failures <= 0 else min(2.0 ** (failures - 1), MAX_BACKOFF)


@dataclass
class _Endpoint:
    address: tuple[str, int]
    failures: int = 0
    next_try: float = 0.0
    last_error: str = ""


class PeerPool:
    """Long-lived links to one remote peer (its name is the TLS server name / SNI and must be
    in its certificate)."""

    def __init__(
        self,
        peer_name: str,
        endpoints: list[tuple[str, int]],
        tls: TLSContexts,
        *,
        links: int = 2,
        connect_timeout: float = 3.0,
        handshake_timeout: float = 10.0,
        limits: Limits | None = None,
        keepalive: float = KEEPALIVE,
        dial: bool = True,
    ) -> None:
        self.peer_name = peer_name
        self.dials = dial
        self.tls = tls
        self.target_links = max(1, links)
        self.wanted_links = 1  # while idle; target_links once streams overlap on a link
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self._limits = limits or Limits()
        self._keepalive = keepalive
        self._endpoints = [_Endpoint((str(h), int(p))) for h, p in endpoints]
        self._links: list[ClientLink] = []
        self._adopted: set[ClientLink] = set()  # reverse links the peer opened to us
        self._born: dict[ClientLink, float] = {}
        self._answered: set[ClientLink] = set()
        self.last_answer = 0.0  # loop time of the last answer on one of its links
        self._attempt: asyncio.Task[ClientLink] | None = None
        self._patient = False  # the dial in flight reached a restarting peer's TCP port
        self._restart_until = 0.0  # the peer said GOAWAY: it may be restarting until then
        self.on_demand = OnDemand(base=ON_DEMAND_BASE, cap=min(ON_DEMAND_CAP, connect_timeout / 2))
        self.on_link_up: Callable[[], None] | None = None  # e.g. wake the heartbeat
        self._new_link = asyncio.Event()  # set (and replaced) whenever a link comes up
        self._maintainer: asyncio.Task[None] | None = None
        self._closed = False
        self._turn = 0
        self._dialing = ""
        # relayed links (spec.via): ``relayed(make_session)`` opens one through a relay and
        # returns it with the relay's name; used when no direct or reverse link is up
        self.relayed: RelayDial | None = None
        self._relayed: dict[ClientLink, str] = {}
        self._relay_attempt: asyncio.Task[ClientLink] | None = None

    # -- public --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return any(link.usable for link in self._links)

    @property
    def links(self) -> list[ClientLink]:
        return list(self._links)

    @property
    def relayed_only(self) -> bool:
        """Reached only through relays from here: never dialed, no reverse link up, relays
        named (a relay must not carry a stream to it: a relayed stream is never relayed)."""
        return not self.dials and self.relayed is not None and self._direct_links() == 0

    @property
    def relays(self) -> list[str]:
        """The relays carrying this pool's usable relayed links."""
        return [relay for link, relay in self._relayed.items() if link.usable]

    @property
    def reverse_links(self) -> int:
        """Reverse links the peer holds open to us (usable or not yet closed)."""
        return len(self._adopted)

    def set_dial(self, dial: bool) -> None:
        """The Peer's ``dial`` changed: links of the other kind drain and close."""
        if dial == self.dials:
            return
        self.dials = dial
        for link in self._links:
            if link not in self._relayed and (link in self._adopted) == dial:
                link.drain()
        if dial:
            self._maintain()

    def reverse_link(self) -> ClientLink:
        """A new HTTP/2 client session for a reverse link from the peer (``adopt`` it once up)."""
        return self._session()

    def set_relays(self, relayed: RelayDial | None, via: list[str]) -> None:
        """The Peer's ``via`` (``relayed`` dials through it): relayed links through a relay no
        longer named drain."""
        self.relayed = relayed
        for link, relay in list(self._relayed.items()):
            if relay not in via:
                link.drain()

    def adopt(self, link: ClientLink) -> None:
        """A reverse link from the peer is up (``reverse.RoleSwitch``): use it like ours."""
        if self._closed or self.dials:
            link.close()
            return
        self._adopted.add(link)
        self._links.append(link)
        self._born[link] = asyncio.get_running_loop().time()
        log.info(
            "reverse link from peer",
            extra={"peer": self.peer_name, "client_address": str(link.address)},
        )
        self._new_link.set()
        self._new_link = asyncio.Event()
        if self.on_link_up is not None:
            self.on_link_up()

    def set_endpoints(self, endpoints: list[tuple[str, int]]) -> None:
        """New endpoint list for new links; links to removed endpoints drain and close."""
        old = {ep.address: ep for ep in self._endpoints}
        self._endpoints = [
            old.get((str(h), int(p))) or _Endpoint((str(h), int(p))) for h, p in endpoints
        ]
        current = {ep.address for ep in self._endpoints}
        for link in self._links:
            if link in self._relayed:
                continue
            if link not in self._adopted and link.endpoint not in current:
                link.drain()
        if self._links:
            self._maintain()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 3.0,  # noqa: ASYNC109 - part of the API the data plane calls
        wait_redial: bool = True,
    ) -> Response:
        """One request/response exchange, e.g. ``GET /healthz``; ``timeout`` bounds the answer
        once a link carries it (getting a link takes at most ``connect_timeout``; with
        ``wait_redial`` false a dial on demand in backoff refuses at once instead of waiting
        for the next one)."""
        return await self._on_some_link(
            lambda link: link.request(
                method, path, authority=self.peer_name, headers=headers, body=body
            ),
            timeout,
            wait_redial,
        )

    async def open_connect(
        self,
        headers: dict[str, str],
        *,
        timeout: float = 3.0,  # noqa: ASYNC109 - part of the API the data plane calls
        wait_redial: bool = True,
    ) -> tuple[Response, Stream | None]:
        """CONNECT with ``headers``: (200 response, stream) or (refusal with its body, None);
        ``timeout`` and ``wait_redial`` as in ``request``."""
        authority = f"{self.peer_name}:443"
        return await self._on_some_link(
            lambda link: link.open_connect(authority, headers), timeout, wait_redial
        )

    async def open_stream(
        self,
        authority: str,
        headers: dict[str, str],
        *,
        timeout: float = 3.0,  # noqa: ASYNC109 - as in open_connect
        wait_redial: bool = True,
    ) -> tuple[Response, Stream | None]:
        """A CONNECT to ``authority`` on a direct or reverse link, never a relayed one (a
        relayed stream is never relayed again); otherwise as ``open_connect``."""
        return await self._on_some_link(
            lambda link: link.open_connect(authority, headers), timeout, wait_redial, plain=True
        )

    async def ping(self) -> float:
        """An HTTP/2 PING on a usable link (never dials): its round trip in seconds; the
        caller bounds the wait. ConnectionError when no link is up or it is lost meanwhile."""
        usable = [link for link in self._links if link.usable]
        if not usable:
            raise ConnectionError(f"peer {self.peer_name}: no link up")
        self._turn += 1
        link = usable[self._turn % len(usable)]
        rtt = await link.ping()
        self._answered.add(link)
        return rtt

    def tcp_liveness(self, idle: int) -> TcpInfo | None:
        """The freshest kernel view among the usable links (see ``Session.tcp_liveness``);
        None when no link is up or the platform has no ``TCP_INFO``."""
        best: TcpInfo | None = None
        for link in self._links:
            if link.usable:
                info = link.tcp_liveness(idle)
                if info is not None and (best is None or info.last_ack_s < best.last_ack_s):
                    best = info
        return best

    async def close(self) -> None:
        self._closed = True
        for task in (self._maintainer, self._attempt, self._relay_attempt):
            if task is not None:
                task.cancel()
        links, self._links = self._links, []
        for link in links:
            link.close()
        if links:
            await asyncio.wait([link.lost for link in links], timeout=2.0)

    def buffered(self) -> int:
        """Bytes held on the Python side by this pool's links."""
        return sum(link.buffered() for link in self._links)

    # -- internals -----------------------------------------------------------------------------

    async def _on_some_link(
        self,
        op: Callable[[ClientLink], Awaitable[T]],
        answer_within: float,
        wait_redial: bool,
        *,
        plain: bool = False,
    ) -> T:
        """Run ``op`` on a link, on another one when the peer did not process it (GOAWAY of a
        peer shutting down, link lost). Getting links takes at most ``connect_timeout`` in all
        (unless a restarting peer's handshake is awaited, see the module docstring), each
        answer at most ``answer_within``."""
        loop = asyncio.get_running_loop()
        link_by = loop.time() + self.connect_timeout
        last: Exception | None = None
        for _ in range(MAX_ATTEMPTS):
            link = await self._get_link(link_by, wait_redial, plain=plain)
            try:
                async with asyncio.timeout(answer_within):
                    result = await op(link)
            except NotProcessed as exc:
                last = exc
                self._note_goaway(link)
                log.debug(
                    "request not processed; retrying on another link",
                    extra={"peer": self.peer_name, "reason": str(exc)},
                )
                continue
            self._answered.add(link)
            self.last_answer = loop.time()
            return result
        raise ConnectionError(f"peer {self.peer_name}: no link could carry the request: {last}")

    async def _get_link(
        self, deadline: float, wait_redial: bool = True, *, plain: bool = False
    ) -> ClientLink:
        """A usable link by ``deadline`` (loop time): an existing one, the dial in flight, or
        a dial on demand (in its backoff: the next one if ``wait_redial`` and it starts before
        ``deadline``); TimeoutError or ConnectionError (with the reason) otherwise."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise ConnectionError(f"peer {self.peer_name}: pool is closed")
            usable = [
                link
                for link in self._links
                if link.usable and not (plain and link in self._relayed)
            ]
            direct = [link for link in usable if link not in self._relayed]
            if direct:  # a direct (or reverse) path is preferred to a relayed one
                usable = direct
            if usable:
                if len(usable) < self.target_links and all(
                    link.active_streams for link in usable
                ):  # streams need a second link: keep target_links from now on
                    self.wanted_links = self.target_links
                    self._maintain()
                # least loaded; ties rotate so that every link sees traffic (and stays warm)
                self._turn += 1
                start = self._turn % len(usable)
                return min(usable[start:] + usable[:start], key=lambda link: link.active_streams)
            now = loop.time()
            if not plain and self.relayed is not None and (not self.dials or self._all_failing()):
                await self._relay_link(deadline)
                continue
            if not self.dials:  # its reverse links are the only way: wait for one
                if not wait_redial or now >= deadline:
                    raise ConnectionError(
                        f"peer {self.peer_name}: no reverse link from it (dial: false: it dials"
                        " this gateway)"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_link.wait(), deadline - now)
                continue
            if self._attempt is not None and not self._attempt.done():
                await self._join(self._attempt, deadline)
                continue
            decision = self.on_demand.decide(now, deadline - now if wait_redial else 0.0)
            if decision.action is Action.DIAL:
                self._start_attempt(on_demand=True)
            elif decision.action is Action.WAIT:  # until the next dial, or a link from elsewhere
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_link.wait(), decision.until - now)
            elif decision.action is Action.REFUSE:
                raise ConnectionError(
                    f"{self._unreachable_reason()}; next dial in {decision.until - now:.2f} s"
                )
            else:  # JOIN without a task cannot happen; do not spin if it does
                await asyncio.sleep(0.01)

    def _session(self) -> ClientLink:
        """A new HTTP/2 client session of this pool (a reverse or relayed link's)."""
        return ClientLink(
            self.peer_name, self._limits, keepalive=self._keepalive, on_lost=self._on_lost
        )

    def _direct_links(self) -> int:
        """Usable links that are not relayed (a relayed link does not stop direct dials)."""
        return sum(1 for link in self._links if link.usable and link not in self._relayed)

    def _all_failing(self) -> bool:
        """Every endpoint failed its last dial (or there is none): try the relays."""
        return all(ep.failures > 0 for ep in self._endpoints)

    async def _relay_link(self, deadline: float) -> None:
        """Join or start a relayed dial; its error if it fails before ``deadline``."""
        task = self._relay_attempt
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._dial_relayed())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._relay_attempt = task
        remaining = deadline - asyncio.get_running_loop().time()
        done, _ = await asyncio.wait({task}, timeout=max(remaining, 0))
        if not done:
            raise TimeoutError(f"peer {self.peer_name}: no relayed link within the deadline")
        task.result()  # its error, if any

    async def _dial_relayed(self) -> ClientLink:
        assert self.relayed is not None
        link, relay = await self.relayed(self._session)
        if self._closed:
            link.close()
            raise ConnectionError(f"peer {self.peer_name}: pool is closed")
        self._relayed[link] = relay
        self._links.append(link)
        log.info("relayed link to peer", extra={"peer": self.peer_name, "relay": relay})
        self._maintain()  # a direct path, where one exists, is still dialed (with backoff)
        self._new_link.set()
        self._new_link = asyncio.Event()
        if self.on_link_up is not None:
            self.on_link_up()
        return link

    async def _join(self, attempt: asyncio.Task[ClientLink], deadline: float) -> None:
        """Wait for the dial in flight until ``deadline``, or to its end if it reached a
        restarting peer's port; its failure is not ours (the caller decides again)."""
        loop = asyncio.get_running_loop()
        done, _ = await asyncio.wait({attempt}, timeout=max(deadline - loop.time(), 0))
        if not done and self._patient:
            done, _ = await asyncio.wait({attempt})
        if not done:
            raise TimeoutError(
                f"peer {self.peer_name}: no link within {self.connect_timeout:g} s "
                f"(dialing {self._dialing or 'its endpoints'})"
            )
        if not attempt.cancelled() and attempt.exception() is None and attempt.result().usable:
            self._maintain()

    def _eligible(self) -> list[_Endpoint]:
        now = asyncio.get_running_loop().time()
        ready = [ep for ep in self._endpoints if ep.next_try <= now]
        order = {id(ep): i for i, ep in enumerate(self._endpoints)}
        return sorted(ready, key=lambda ep: (ep.failures, order[id(ep)]))

    def _unreachable_reason(self) -> str:
        if not self._endpoints:
            return f"peer {self.peer_name}: no endpoints"
        errors = "; ".join(
            f"{h}:{p}: {ep.last_error or 'failed'}"
            for ep in self._endpoints
            for h, p in [ep.address]
        )
        return f"peer {self.peer_name}: no endpoint reachable ({errors})"

    def _start_attempt(self, *, on_demand: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._patient = False
        if on_demand:
            self.on_demand.started(loop.time())
        task = loop.create_task(self._dial_once(on_demand=on_demand))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if on_demand:
            task.add_done_callback(
                lambda t: self.on_demand.finished(
                    loop.time(), not t.cancelled() and t.exception() is None
                )
            )
        self._attempt = task

    def _note_goaway(self, link: ClientLink) -> None:
        """A peer's GOAWAY announces a (graceful) restart: allow waiting out its handshake."""
        if link.closed_gracefully and not link.closed_locally:
            loop = asyncio.get_running_loop()
            self._restart_until = loop.time() + self.handshake_timeout

    def _on_tcp(self) -> None:
        if asyncio.get_running_loop().time() < self._restart_until:
            self._patient = True

    async def _dial_once(self, *, on_demand: bool = False) -> ClientLink:
        """Try the endpoints in order of health; the first link that comes up wins.

        In the background only endpoints out of their backoff are tried, each with the TCP
        and handshake bounds; on demand every endpoint may be tried, all within
        ``connect_timeout`` (the handshake of a restarting peer excepted)."""
        loop = asyncio.get_running_loop()
        candidates = self._eligible()
        if on_demand:
            order = {id(ep): i for i, ep in enumerate(self._endpoints)}
            candidates += sorted(
                (ep for ep in self._endpoints if ep not in candidates),
                key=lambda ep: (ep.next_try, order[id(ep)]),
            )
        if not candidates:
            raise ConnectionError(self._unreachable_reason())
        deadline = loop.time() + self.connect_timeout
        for ep in candidates:
            if on_demand and loop.time() >= deadline:
                break  # the rest are not tried, so not counted as failed
            host, port = ep.address
            self._dialing = f"{host}:{port}"
            try:
                link = await self._dial_endpoint(ep, deadline if on_demand else None)
            except (ConnectionError, TimeoutError, OSError) as exc:
                ep.failures += 1
                ep.next_try = loop.time() + _backoff(ep.failures)
                ep.last_error = str(exc) or exc.__class__.__name__
                log_fn = log.warning if ep.failures == 1 else log.debug
                log_fn(
                    "cannot dial peer",
                    extra={
                        "peer": self.peer_name,
                        "endpoint": f"{host}:{port}",
                        "error": ep.last_error,
                        "failures": ep.failures,
                    },
                )
                continue
            finally:
                self._dialing = ""
            if self._closed or ep not in self._endpoints:
                link.close()
                continue
            self._links.append(link)
            self._born[link] = loop.time()
            if ep.failures:
                log.info(
                    "peer endpoint reachable again",
                    extra={
                        "peer": self.peer_name,
                        "endpoint": f"{host}:{port}",
                        "on_demand": on_demand,
                    },
                )
            ep.failures, ep.next_try, ep.last_error = 0, 0.0, ""
            for relayed in list(self._relayed):  # the direct path is back: relays step aside
                relayed.drain()
            self._new_link.set()
            self._new_link = asyncio.Event()
            if self.on_link_up is not None:
                self.on_link_up()
            return link
        raise ConnectionError(self._unreachable_reason())

    async def _dial_endpoint(self, ep: _Endpoint, deadline: float | None) -> ClientLink:
        """One link to ``ep``. In the background: TCP within ``connect_timeout``, TLS within
        ``handshake_timeout``. On demand (``deadline``): both by the deadline, unless the peer
        is restarting (then its handshake may take ``handshake_timeout``)."""
        host, port = ep.address
        loop = asyncio.get_running_loop()
        tcp_bound, tls_bound = self.connect_timeout, self.handshake_timeout
        bound: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
        if deadline is not None:
            tcp_bound = deadline - loop.time()
            if tcp_bound <= 0:
                raise TimeoutError("no time left within connect_timeout")
            if loop.time() >= self._restart_until:
                tls_bound = tcp_bound
                bound = asyncio.timeout_at(deadline)
        try:
            async with bound:
                return await dial(
                    host,
                    port,
                    self.peer_name,
                    self.tls,
                    timeout=tcp_bound,
                    handshake_timeout=tls_bound,
                    limits=self._limits,
                    keepalive=self._keepalive,
                    on_lost=self._on_lost,
                    on_tcp=self._on_tcp,
                )
        except TimeoutError:
            raise TimeoutError(
                f"no link within {self.connect_timeout:g} s (TCP connect or TLS handshake)"
            ) from None

    def _maintain(self) -> None:
        """Keep ``wanted_links`` links up, in the background, with backoff."""
        if self._closed or not self.dials:
            return
        if self._maintainer is not None and not self._maintainer.done():
            return
        if self._direct_links() >= self.wanted_links:
            return
        self._maintainer = asyncio.get_running_loop().create_task(self._maintain_loop())

    async def _maintain_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed and self._direct_links() < self.wanted_links:
            if self._attempt is None or self._attempt.done():
                if not self._eligible():
                    wake = min((ep.next_try for ep in self._endpoints), default=loop.time() + 1.0)
                    await asyncio.sleep(max(wake - loop.time(), 0.05))
                    continue
                self._start_attempt()
            assert self._attempt is not None
            with contextlib.suppress(ConnectionError, TimeoutError, OSError):
                await asyncio.shield(self._attempt)

    def _on_lost(self, link: ClientLink) -> None:
        if link in self._links:
            self._links.remove(link)
        relay = self._relayed.pop(link, None)
        if relay is not None:
            if not self._closed and not link.draining:
                log.info("relayed link lost", extra={"peer": self.peer_name, "relay": relay})
            return
        if link in self._adopted:
            self._adopted.discard(link)
            self._born.pop(link, None)
            self._answered.discard(link)
            if not self._closed and not link.draining:
                log.info("reverse link lost", extra={"peer": self.peer_name})
            return
        born = self._born.pop(link, None)
        answered = link in self._answered
        self._answered.discard(link)
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._note_goaway(link)
        short_lived = born is not None and loop.time() - born < MIN_LINK_LIFE
        if short_lived and not answered and not (link.closed_gracefully or link.closed_locally):
            for ep in self._endpoints:
                if ep.address == link.endpoint:
                    ep.failures += 1
                    ep.next_try = loop.time() + _backoff(ep.failures)
                    ep.last_error = "link closed right after it was opened"
        if not link.draining:
            log.info(
                "peer link lost", extra={"peer": self.peer_name, "endpoint": str(link.endpoint)}
            )
        self._maintain()
