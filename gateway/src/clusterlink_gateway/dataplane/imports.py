"""Import listeners and the egress path of every client connection.

A client connecting to an import's port is carried to one of the import's sources: for each
candidate (load-balancing order, unreachable peers last) the egress policy is checked, then a
CONNECT is sent over the peer's link; the first source that answers 200 carries the bytes.
Each source costs at most ``connect_timeout`` to get a link (a black hole included). A peer
with no link is dialed on demand (``PeerPool``); the last source tried, or one whose peer is
marked unreachable, waits for the next dial on demand within that bound instead of failing at
once. When no source can, the client gets a TCP reset.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .. import audit, systemd
from ..metrics import Metrics
from ..model.objects import Import
from ..peering import TcpRelay
from ..policy.attributes import destination_attributes, parse_client_ip, source_attributes
from ..policy.engine import DEFAULT_DENY_NAME, PolicyEngine
from ..policy.explain import remote_decision
from ..registry import Entry, Registry
from ..routing.loadbalancer import LoadBalancer
from .attempt import DEFAULT_DENY_LABEL, ConnectionAttempt
from .peers import PeerManager
from .refusals import RecentRefusals

log = logging.getLogger("clusterlink.egress")

RETRY_BIND_SECONDS = 1.0


@dataclass
class ImportState:
    """One import's listener and load-balancer state."""

    entry: Entry
    lb: LoadBalancer
    server: asyncio.AbstractServer | None = None
    address: tuple[str, int] | None = None
    error: str | None = None
    retry: asyncio.Task[None] | None = None
    active: set[TcpRelay] = field(default_factory=set)


class ImportManager:
    """Listeners for imports, kept in step with the Import objects."""

    def __init__(
        self,
        registry: Registry,
        peers: PeerManager,
        engine: PolicyEngine,
        local: dict[str, Any],
        *,
        connect_timeout: float,
        metrics: Metrics,
        reuse_port: bool = False,
        max_connections: int = 0,
        idle_timeout: float = 0,
        dns_zone: str | None = None,
        refusals: RecentRefusals | None = None,
    ) -> None:
        self.refusals = refusals if refusals is not None else RecentRefusals()
        self.metrics = metrics
        self.dns_zone = dns_zone  # names are ``<import>.<zone>`` when the gateway answers DNS
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._sweeper: asyncio.Task[None] | None = None
        self.registry = registry
        self.peers = peers
        self.engine = engine
        self.local = local  # {"peer_name": ..., "labels": {...}} (labels change on reload)
        self.connect_timeout = connect_timeout
        self.reuse_port = reuse_port
        self.imports: dict[str, ImportState] = {}

    # -- listeners ---------------------------------------------------------------------------

    async def apply(self, name: str, new: Entry | None) -> None:
        state = self.imports.get(name)
        if new is None:
            if state is not None:
                await self._close(state)
                del self.imports[name]
            await self._retry_others()
            return
        assert isinstance(new.obj, Import)
        scheme = new.obj.spec.lb_scheme
        if state is None:
            state = ImportState(new, LoadBalancer(scheme))
            self.imports[name] = state
        else:
            if state.lb.scheme != scheme:
                state.lb = LoadBalancer(scheme)
            state.entry = new
        wanted = (self.registry.effective_bind(new), self.registry.effective_port(new))
        if state.address != wanted or state.server is None:
            await self._close(state)
            await self._listen(state, wanted)
            await self._retry_others()

    async def _listen(self, state: ImportState, address: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        name = state.entry.name
        state.address = address
        try:
            sock = systemd.listening_socket(
                _fd_name(name), address[0], address[1], reuse_port=self.reuse_port
            )
            state.server = await loop.create_server(
                lambda: TcpRelay(lambda relay: self._accepted(name, relay)), sock=sock, backlog=1024
            )
        except OSError as exc:
            state.server = None
            if exc.errno == errno.EADDRINUSE:
                reason = "address in use"
            elif exc.errno == errno.EADDRNOTAVAIL:
                reason = "not an address of this host"
            else:
                reason = exc.strerror
            state.error = f"cannot listen on {address[0]}:{address[1]}: {reason}"
            log.warning("import listener failed", extra={"import": name, "error": state.error})
            if state.retry is None or state.retry.done():
                state.retry = loop.create_task(self._retry(state), name=f"bind-{name}")
            return
        state.error = None
        log.info(
            "import listening", extra={"import": name, "address": f"{address[0]}:{address[1]}"}
        )

    async def _retry(self, state: ImportState) -> None:
        """Try the bind again every second until it works or the import changes."""
        while state.server is None and self.imports.get(state.entry.name) is state:
            await asyncio.sleep(RETRY_BIND_SECONDS)
            if state.server is None and state.address is not None:
                await self._listen(state, state.address)

    async def _retry_others(self) -> None:
        """A port may have been freed: failed imports try again now, not a second later."""
        for other in self.imports.values():
            if other.server is None and other.address is not None:
                await self._listen(other, other.address)

    async def _close(self, state: ImportState, *, keep_socket: bool = False) -> None:
        """Close the listener; its socket stays in systemd's store only with ``keep_socket``
        (shutdown: the next process takes it over)."""
        if state.retry is not None:
            state.retry.cancel()
            state.retry = None
        if state.server is not None:
            state.server.close()
            state.server = None
            if not keep_socket:
                systemd.forget(_fd_name(state.entry.name))
        state.address = None

    async def stop_accepting(self) -> None:
        """Shutdown, first step: no new client; relayed connections go on. Under systemd the
        kernel keeps queueing new clients on the stored sockets for the next process."""
        for state in self.imports.values():
            await self._close(state, keep_socket=True)

    @property
    def active_connections(self) -> int:
        return sum(len(state.active) for state in self.imports.values())

    def start(self) -> None:
        if self.idle_timeout:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle())

    async def _sweep_idle(self) -> None:
        """Reset relayed connections that moved no byte for ``idle_timeout`` seconds."""
        seen: dict[TcpRelay, tuple[int, float]] = {}
        while True:
            await asyncio.sleep(max(0.05, self.idle_timeout / 4))
            now = time.monotonic()
            current: dict[TcpRelay, tuple[int, float]] = {}
            for state in self.imports.values():
                for relay in state.active:
                    moved = relay.bytes_in + relay.bytes_out
                    last = seen.get(relay)
                    since = last[1] if last and last[0] == moved else now
                    if now - since >= self.idle_timeout:
                        log.info("idle connection reset", extra={"import": state.entry.name})
                        relay.reset()
                    else:
                        current[relay] = (moved, since)
            seen = current

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for state in list(self.imports.values()):
            await self._close(state, keep_socket=True)
            for relay in list(state.active):
                relay.reset()
        self.imports.clear()

    def status(self, entry: Entry) -> dict[str, Any]:
        state = self.imports.get(entry.name)
        bind = self.registry.effective_bind(entry)
        port = self.registry.effective_port(entry)
        obj = entry.obj
        assert isinstance(obj, Import)
        return {
            "dns_name": f"{entry.name.lower()}.{self.dns_zone}" if self.dns_zone else None,
            "address": bind if obj.spec.bind == "auto" else None,
            "listen": f"{bind}:{port}",
            "port": port,
            "listening": bool(state and state.server is not None),
            "error": state.error if state else None,
            "active_connections": len(state.active) if state else 0,
        }

    # -- connections -------------------------------------------------------------------------

    def _accepted(self, name: str, relay: TcpRelay) -> None:
        state = self.imports.get(name)
        if state is None:
            relay.reset()
            return
        if self.max_connections and len(state.active) >= self.max_connections:
            self.metrics.import_failures.labels(name).inc()
            log.warning("import connection limit reached", extra={"import": name})
            self.refusals.add("egress", None, None, "connection-limit", import_name=name)
            relay.reset()
            return
        state.active.add(relay)
        relay.closed.add_done_callback(lambda _: state.active.discard(relay))
        asyncio.get_running_loop().create_task(self._connect(state, relay))

    async def _connect(self, state: ImportState, relay: TcpRelay) -> None:
        """Try the import's sources in load-balancing order until one carries the client."""
        entry = state.entry
        m = self.metrics
        m.import_connections.labels(entry.name).inc()
        m.egress_active.inc()
        attempt = ConnectionAttempt("egress", self.engine, m)
        obj = entry.obj
        assert isinstance(obj, Import)
        client_ip = relay.peername[0] if relay.peername else None
        ip = parse_client_ip(client_ip) if client_ip else None
        sources = obj.spec.sources
        src_attrs = source_attributes(self.local["peer_name"], self.local["labels"], client_ip)
        for index in state.lb.attempts(
            len(sources), lambda i: self.peers.reachable(sources[i].peer)
        ):
            source = sources[index]
            export = source.export or entry.name
            step = attempt.source(source.peer, export)
            pool = self.peers.pools.get(source.peer)
            if pool is None:
                step["result"] = "unknown peer"
                continue
            dst_attrs = destination_attributes(
                source.peer, self.peers.labels(source.peer), export, obj.labels
            )
            decision = attempt.decide(src_attrs, dst_attrs, ip)
            step["egress"] = str(decision)
            if not decision.allowed:
                step["result"] = "denied by egress policy"
                log.info(
                    "egress denied",
                    extra={
                        "import": entry.name,
                        "peer": source.peer,
                        "export": export,
                        **attempt.refusal_fields(),
                    },
                )
                continue
            headers = {"x-clusterlink-export": export, "x-clusterlink-import": entry.name}
            if client_ip:
                headers["x-clusterlink-client-ip"] = client_ip
            # Dial on demand: a source tried last (every other one failed) or whose peer is
            # marked unreachable (tried only after every reachable one failed) may wait for
            # the next dial in backoff, within connect_timeout; others fail over at once.
            last_resort = len(attempt.tried) == len(sources) or not self.peers.reachable(
                source.peer
            )
            sent = time.monotonic()
            try:
                resp, stream = await pool.open_connect(
                    headers, timeout=self.connect_timeout, wait_redial=last_resort
                )
            except (OSError, TimeoutError) as exc:
                step["result"] = f"unreachable: {exc or type(exc).__name__}"
                kind = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
                m.connect_errors.labels(source.peer, kind).inc()
                continue
            m.connect_latency.labels(source.peer).observe(time.monotonic() - sent)
            if stream is None:
                step["result"] = f"{resp.status}: {_reason(resp.body)}"
                m.connect_errors.labels(source.peer, str(resp.status)).inc()
                log.info(
                    "connect refused by peer",
                    extra={
                        "import": entry.name,
                        "peer": source.peer,
                        "export": export,
                        "status": resp.status,
                        "reason": step["result"],
                        **_peer_decision(resp.body),
                    },
                )
                continue
            if relay.closed.done():  # the client gave up while we were connecting
                stream.reset()
                step["result"] = "client gone"
                break
            attempt.connected(step)
            relay.attach(stream)
            break
        if attempt.chosen is None:
            m.import_failures.labels(entry.name).inc()
            self._refused(entry.name, attempt)
            relay.reset()
        await relay.closed
        m.egress_active.dec()
        m.import_closed.labels(entry.name).inc()
        m.import_bytes.labels(entry.name, "in").inc(relay.bytes_in)
        m.import_bytes.labels(entry.name, "out").inc(relay.bytes_out)
        if audit.enabled():
            audit.write(
                "connection",
                attempt.record(
                    {"client": client_ip, "import": entry.name}, relay.bytes_in, relay.bytes_out
                ),
            )

    def _refused(self, name: str, attempt: ConnectionAttempt) -> None:
        """Remember a client connection no source carried: the last source tried, what it
        answered and, if our egress policy refused it, the deciding policy."""
        last = attempt.tried[-1] if attempt.tried else {}
        result = str(last.get("result", "no source"))
        if result == "client gone":
            return
        decision = attempt.decision
        denied = result == "denied by egress policy" and decision is not None
        self.refusals.add(
            "egress",
            last.get("peer"),
            last.get("export"),
            _refusal_class(result),
            policy=(decision.policy or DEFAULT_DENY_LABEL) if denied and decision else None,
            decision=str(decision) if denied else None,
            import_name=name,
            detail=result[:200],
        )


def _refusal_class(result: str) -> str:
    """The reason class of an egress step's result (see ``_connect``)."""
    if result == "denied by egress policy":
        return "denied"
    if result.startswith("unreachable"):
        return "unreachable"
    if result[:3].isdigit():
        return "peer-refused"
    return result.replace(" ", "-")


def _fd_name(import_name: str) -> str:
    return f"import-{import_name}"


def _peer_decision(body: bytes) -> dict[str, Any]:
    """The exporter's deciding policy, tier and selectors from its 403 body (checked and
    bounded: it comes from the peer), as refusal log fields; {} when it sent none."""
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    decision = remote_decision(data.get("decision")) if isinstance(data, dict) else None
    if decision is None:
        return {}
    return {
        "decision": decision.get("summary"),
        "policy": decision.get("policy") or DEFAULT_DENY_NAME,
        "tier": decision["tier"],
        "selector": decision.get("selector"),
    }


def _reason(body: bytes) -> str:
    try:
        data = json.loads(body)
        return str(data.get("reason") or data.get("error") or data)
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")
