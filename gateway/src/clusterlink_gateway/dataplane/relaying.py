"""Relayed paths: this gateway as a relay (``RelayService``) and as an end (``RelayDialer``).

A relay splices a source peer's stream (a CONNECT with ``clusterlink-relay``, ``:authority``
the destination peer) to a stream it opens on its own direct or reverse link to the
destination (CONNECT ``relay-accept``); it sees only the ciphertext of the TLS session the two
ends run inside. It relays only where ``relay.enabled`` and a relay policy allow the pair
(``peering.relayrule``), up to ``relay.max_streams_per_source`` streams per source; one log
line per relayed stream, never payload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import Relay
from ..metrics import Metrics
from ..peering import IncomingStream
from ..peering.accept import tls_protocol_class
from ..peering.contexts import base_context
from ..peering.relayrule import (
    DISABLED,
    LOOP,
    OK,
    RELAY_ACCEPT,
    RELAY_HEADER,
    RELAYED_FROM_HEADER,
    UNREACHABLE,
    RelayPolicy,
    RelayRule,
    via_refusal,
)
from ..peering.requesting import ClientLink
from ..peering.splice import StreamSplice
from ..peering.stream import Stream
from ..peering.tls import SERVER_ALPN
from ..peering.tunnel import StreamTransport, open_tunnel, relay_of
from ..policy.attributes import source_attributes

if TYPE_CHECKING:
    from .peers import PeerManager

log = logging.getLogger("clusterlink.relay")

RECORD_ENV = "CLUSTERLINK_TEST_RELAY_RECORD"  # test hook: append every spliced chunk here
TAMPER_ENV = "CLUSTERLINK_TEST_RELAY_FLIP_AFTER"  # test hook: flip one bit after N bytes up
IMPERSONATE_ENV = "CLUSTERLINK_TEST_RELAY_IMPERSONATE"  # test hook: answer as the destination
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
STATUS = {DISABLED: 403, "denied": 403, "over-limit": 429, LOOP: 508, UNREACHABLE: 502}


def relay_rule(config: Relay) -> RelayRule:
    """The relay section of gateway.yaml as a ``RelayRule``."""
    return RelayRule(
        enabled=config.enabled,
        max_streams_per_source=config.max_streams_per_source,
        policies=tuple(
            RelayPolicy(
                p.name,
                p.action == "allow",
                tuple(p.from_),
                tuple(p.to),
            )
            for p in config.policies
        ),
    )


def _recorder(path: str | None) -> Callable[[bytes], None] | None:
    if not path:
        return None

    def record(data: bytes) -> None:
        with open(path, "ab") as out:
            out.write(data)

    return record


def _tamper(after: str | None) -> Callable[[bytes], bytes] | None:
    if not after:
        return None
    state = {"seen": 0, "done": False, "at": int(after)}

    def flip(data: bytes) -> bytes:
        start = state["seen"]
        state["seen"] += len(data)
        if state["done"] or state["seen"] <= state["at"]:
            return data
        state["done"] = True
        i = max(state["at"] - start, 0)
        return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]

    return flip


class RelayService:
    """Relay requests arriving on the peer port (``clusterlink-relay`` CONNECTs)."""

    def __init__(
        self,
        config: Relay,
        local: str,
        peers: PeerManager,
        metrics: Metrics,
        labels: Callable[[str], dict[str, str]],
    ) -> None:
        self.rule = relay_rule(config)
        self.local = local
        self.peers = peers
        self.metrics = metrics
        self.labels = labels
        self.active: dict[str, int] = {}
        self.record = _recorder(os.environ.get(RECORD_ENV))
        self.tamper_after = os.environ.get(TAMPER_ENV)
        self.timeout = peers.config.dataplane.connect_timeout
        self.impersonate = bool(os.environ.get(IMPERSONATE_ENV))
        self.splices: set[StreamSplice] = set()
        self.closing = False

    @staticmethod
    def wants(req: IncomingStream) -> bool:
        return req.method == "CONNECT" and RELAY_HEADER in req.headers

    def _attrs(self, name: str) -> dict[str, str]:
        """A peer's policy attributes (name, labels of our Peer object); no client address."""
        return source_attributes(name, self.labels(name), None)

    def _refuse(self, req: IncomingStream, source: str, dest: str, result: str, why: str) -> None:
        # a name that is no Peer here is counted as "-": callers cannot grow the label set
        known = dest in self.peers.pools or dest == self.local
        self.metrics.relay_streams.labels(source, dest if known else "-", result).inc()
        log.warning(
            f"relay source={source} destination={dest} result={result}",
            extra={"source": source, "destination": dest, "result": result, "reason": why},
        )
        status = STATUS.get(result, 403)
        body = json.dumps({"status": status, "reason": f"{result}: {why}"}).encode()
        req.answer(status, body, {"content-type": "application/json"})

    def close(self) -> None:
        """Reset every relayed stream and relay no more (the gateway is stopping): the ends'
        relayed links break at once and they dial again through another relay."""
        self.closing = True
        for splice in list(self.splices):
            splice.reset()

    def _impersonate(self, stream: Stream, source: str) -> None:
        """Test hook: terminate the tunnel here with our own certificate, whatever name the
        dialer asked for (a relay claiming to be the destination)."""
        settings = self.peers.tls.settings
        context = base_context(ssl.PROTOCOL_TLS_SERVER, settings.cert, settings.key, settings.ca)
        context.set_alpn_protocols(SERVER_ALPN)
        context.verify_mode = ssl.CERT_OPTIONAL
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiter.add_done_callback(lambda fut: fut.cancelled() or fut.exception())
        protocol = tls_protocol_class(loop)(
            loop, asyncio.Protocol(), context, waiter, server_side=True, server_hostname=None
        )
        StreamTransport(stream, (f"relay:{source}", 0), source).start(protocol)

    async def handle(self, req: IncomingStream) -> None:
        source = req.peer  # from the verified certificate
        dest = (req.authority or "").split(":", 1)[0]
        if not _NAME.fullmatch(dest):
            self._refuse(req, source, "-", "denied", "the destination is not a peer name")
            return
        verdict = self.rule.decide(
            local=self.local,
            source=source,
            destination=dest,
            source_attrs=self._attrs(source),
            destination_attrs=self._attrs(dest),
            active=self.active.get(source, 0),
            arrived_relayed=relay_of(req.link._transport) is not None,
        )
        if not verdict.allowed:
            self._refuse(req, source, dest, verdict.result, verdict.detail)
            return
        if self.impersonate:  # a lying relay (tests): it answers with its own certificate
            self._impersonate(req.accept(), source)
            return
        pool = self.peers.pools.get(dest)
        if self.closing:
            self._refuse(req, source, dest, UNREACHABLE, "the relay is stopping")
            return
        if pool is None:
            self._refuse(req, source, dest, UNREACHABLE, f"{dest!r} is not a Peer here")
            return
        if pool.relayed_only:  # A via B, and B reaches the destination only via relays
            why = f"{dest!r} is reached only through relays from here"
            self._refuse(req, source, dest, LOOP, why)
            return
        self.active[source] = self.active.get(source, 0) + 1
        self.metrics.relay_active.labels(source).inc()
        started = time.monotonic()
        try:
            try:
                resp, down = await pool.open_stream(
                    RELAY_ACCEPT, {RELAYED_FROM_HEADER: source}, timeout=self.timeout
                )
            except (ConnectionError, TimeoutError, OSError) as exc:
                self._refuse(req, source, dest, UNREACHABLE, str(exc) or type(exc).__name__)
                return
            if down is None:
                why = f"{dest} answered {resp.status}"
                self._refuse(req, source, dest, UNREACHABLE, why)
                return
            self.metrics.relay_streams.labels(source, dest, OK).inc()
            up = req.accept()
            tamper = _tamper(self.tamper_after)
            counters = (
                self.metrics.relay_bytes.labels(source, dest, "up"),
                self.metrics.relay_bytes.labels(source, dest, "down"),
            )
            splice = StreamSplice(
                up,
                down,
                record=self.record,
                tamper=tamper,
                count=lambda side, n: counters[side].inc(n),
            )
            self.splices.add(splice)
            try:
                await splice.done
            finally:
                self.splices.discard(splice)
        finally:
            self.active[source] -= 1
            if not self.active[source]:
                del self.active[source]
            self.metrics.relay_active.labels(source).dec()
        core = splice.core
        took = time.monotonic() - started
        result = "reset" if core.failed else OK
        log.info(
            f"relay source={source} destination={dest} result={result} bytes_up={core.bytes_up}"
            f" bytes_down={core.bytes_down} duration={took:.3f}",
            extra={"source": source, "destination": dest, "policy": verdict.policy},
        )


class RelayDialer:
    """The dialing end: a link to a peer through the first reachable relay of its ``via``."""

    def __init__(self, local: str, peers: PeerManager) -> None:
        self.local = local
        self.peers = peers

    def for_peer(self, peer: str, via: list[str]) -> Any:
        async def dial(make_session: Callable[[], ClientLink]) -> tuple[ClientLink, str]:
            return await self.dial(peer, via, make_session)

        return dial

    async def dial(
        self, peer: str, via: list[str], make_session: Callable[[], ClientLink]
    ) -> tuple[ClientLink, str]:
        refusal = via_refusal(self.local, peer, via)
        if refusal is not None:
            raise ConnectionError(refusal)
        dp = self.peers.config.dataplane
        errors: list[str] = []
        for i, relay in enumerate(via):
            pool = self.peers.pools.get(relay)
            if pool is None:
                errors.append(f"{relay}: not a Peer here")
                continue
            if not self.peers.reachable(relay):
                errors.append(f"{relay}: unreachable")
                continue
            try:
                resp, stream = await pool.open_stream(
                    peer,
                    {RELAY_HEADER: "1"},
                    timeout=dp.connect_timeout,
                    wait_redial=i == len(via) - 1,  # a relay in its redial backoff: the next
                )
                if stream is None:
                    body = resp.body[:200].decode(errors="replace")
                    errors.append(f"{relay}: {resp.status} {body}")
                    continue
                link = await open_tunnel(
                    stream,
                    relay,
                    peer,
                    self.peers.tls,
                    make_session,
                    handshake_timeout=dp.handshake_timeout,
                )
            except (ConnectionError, TimeoutError, OSError) as exc:
                errors.append(f"{relay}: {exc or type(exc).__name__}")
                continue
            return link, relay
        raise ConnectionError(f"peer {peer}: no relay could carry a link ({'; '.join(errors)})")
