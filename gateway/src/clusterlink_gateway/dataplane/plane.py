"""Wires the data plane to the registry: every object change is applied before the API returns."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily

from .. import systemd
from ..config import Config, tls_settings
from ..metrics import Metrics, certificate_expiry
from ..model.objects import Kind, Policy
from ..peering import TLSContexts, TLSError, start_peer_server
from ..peering.admission import Admission
from ..peering.gate import HandshakeGate
from ..peering.grantwire import ELSEWHERE, GrantSession
from ..peering.tls import AdminTLS, CertificateFacts, TLSChange, TLSSettings
from ..peering.tunnel import TunnelPort
from ..policy.engine import PolicyEngine
from ..registry import Entry, Registry
from ..store.sqlite import Store
from .explain import Explainer

if TYPE_CHECKING:
    from .grants import GrantService
from .imports import ImportManager
from .ingress import IngressHandler
from .peers import PeerManager
from .refusals import RecentRefusals
from .relaying import RelayService
from .trustmap import peer_bundles

log = logging.getLogger("clusterlink.dataplane")


class DataPlane:
    """Owns the peer listener, the peers' links and monitors, import listeners, the policies."""

    def __init__(self, config: Config, registry: Registry, local: dict[str, Any]) -> None:
        self.config = config
        self.registry = registry
        settings = tls_settings(config)
        self.tls = TLSContexts(
            settings.cert,
            settings.key,
            settings.ca,
            handshake_timeout=config.listen.handshake_timeout,
            expected_name=settings.expected_name,
            crl=settings.crl,
            serials=settings.serials,
            fingerprints=settings.fingerprints,
        )
        self.engine = PolicyEngine()
        self.metrics = Metrics()
        self.tls.on_outcome = self._tls_outcome
        self.tls.subscribers.append(self._tls_changed)
        # closed fabric (the default): only the names of Peer objects hold peer-port links
        peers = registry.objects["peers"]
        self.admission = Admission(
            peers.__contains__, open_fabric=config.listen.open_fabric, binding=self.tls.bind
        )
        self._registry = registry
        self._links: set[Any] = set()  # ServerLinks: accepted links and our reverse links
        self.peers = PeerManager(config, self.tls, server_links=self._links)
        self.refusals = RecentRefusals()  # the last refused connections (the fabric page)
        self.imports = ImportManager(
            registry,
            self.peers,
            self.engine,
            local,
            connect_timeout=config.dataplane.connect_timeout,
            metrics=self.metrics,
            reuse_port=config.workers > 1,
            max_connections=config.dataplane.max_connections_per_import,
            idle_timeout=config.dataplane.idle_timeout,
            dns_zone=config.dns.zone if config.dns is not None else None,
            refusals=self.refusals,
        )
        self.explainer = Explainer(
            registry,
            self.engine,
            local,
            peer_labels=self.peers.labels,
            admits=self.admission.admits,
            fabric_of=self._fabric_of,
            ask=self._ask_explain,
        )
        self.ingress = IngressHandler(
            registry,
            self.engine,
            local,
            dial_timeout=config.dataplane.dial_timeout,
            metrics=self.metrics,
            admission=self.admission,
            reverse_links=config.dataplane.links_per_peer,
            explainer=self.explainer,
            refusals=self.refusals,
        )
        self.peers.handler = self.ingress
        self.tunnels = TunnelPort()
        self.ingress.tunnels = self.tunnels
        self.ingress.relay = RelayService(
            config.relay, config.peer_name, self.peers, self.metrics, self.peers.labels
        )
        self._server: asyncio.AbstractServer | None = None
        self._watch: asyncio.Task[None] | None = None
        self._gate = HandshakeGate(
            config.listen.max_handshakes, config.listen.max_handshakes_per_source
        )
        self.admin_tls: AdminTLS | None = None  # set by the daemon when admin.tcp is on
        self.grants: GrantService | None = None  # the main process's (enable_grants)
        registry.observers.append(self.on_change)
        registry.status_providers["peers"] = self.peers.status
        registry.status_providers["imports"] = self.imports.status
        registry.summary_providers["certificates"] = self.certificate_status
        self.metrics.add_state(self._state_metrics)

    def enable_grants(self, store: Store) -> None:
        """Serve grant redemptions here (the main process; a worker answers "elsewhere")."""
        from ..store.grants import GrantTable
        from .grants import GrantService

        listen = self.config.listen
        self.grants = GrantService(
            self.registry,
            GrantTable(store),
            self.tls,
            self.metrics,
            listen=(str(listen.address), listen.port),
        )

    async def _serve_grant(self, raw: bytes, client: str | None) -> dict[str, Any]:
        if self.grants is None:
            return {"result": ELSEWHERE, "message": "ask again (a data-plane worker)"}
        return await self.grants.serve(raw, client)

    async def on_change(self, kind: Kind, name: str, old: Entry | None, new: Entry | None) -> None:
        if kind.plural == "peers":
            if new is None:
                self.close_links_of(name)
            changed = self.tls.set_peer_bundles(peer_bundles(self._registry))
            if changed:
                self.close_unbound_links(changed)
            await self.peers.apply(name, new)
        elif kind.plural == "imports":
            await self.imports.apply(name, new)
        elif kind.plural == "policies":
            if new is None:
                self.engine.remove(name)
            else:
                assert isinstance(new.obj, Policy)
                self.engine.set(name, new.obj.spec)
        # exports are looked up per CONNECT: nothing to apply

    def close_links_of(self, name: str) -> int:
        """Close the links from peer ``name`` (its streams are cut) unless it is still admitted;
        how many were closed. Called when its Peer object goes away."""
        if self.admission.admits(name):
            return 0
        doomed = [link for link in self._links if link.peer == name]
        for link in doomed:
            link.close()
        if doomed:
            log.info("links of a removed peer closed", extra={"peer": name, "links": len(doomed)})
        return len(doomed)

    def close_unbound_links(self, names: set[str]) -> int:
        """The anchors of ``names`` changed: close (both directions) every link of those peers
        whose certificate no longer passes the binding rule; how many were closed."""
        sides = [("server", link) for link in self._links if link.peer in names]
        sides += [
            ("client", link)
            for name in names
            if (pool := self.peers.pools.get(name)) is not None
            for link in pool.links
        ]
        closed = 0
        for side, link in sides:
            der = link.peer_certificate()
            if der is None or self.tls.holds(der, link.peer):
                continue  # closing already, or still trusted
            link.close()
            self.metrics.untrusted_links.labels(side).inc()
            closed += 1
        if closed:
            log.warning(
                "peer links closed: certificate no longer trusted for its name",
                extra={"peers": sorted(names), "links": closed},
            )
        return closed

    def certificates(self) -> tuple[CertificateFacts, ...]:
        """Our certificate, the fabric CAs and the admin listener's certificate, as installed
        now (they follow reloads)."""
        admin = self.admin_tls.certificates() if self.admin_tls is not None else ()
        return self.tls.certificates() + admin

    def certificate_status(self) -> list[dict[str, Any]]:
        """``/v1/status`` ``certificates``: notAfter and seconds left of each certificate."""
        return [cert.document() for cert in self.certificates()]

    def _state_metrics(self) -> Iterator[GaugeMetricFamily]:
        reach = GaugeMetricFamily(
            "clusterlink_peer_reachable",
            "1 reachable, 0 unreachable (absent: unknown)",
            labels=["peer"],
        )
        rtt = GaugeMetricFamily(
            "clusterlink_peer_heartbeat_rtt_seconds",
            "Round trip of the last heartbeat",
            labels=["peer"],
        )
        links = GaugeMetricFamily("clusterlink_peer_links", "Open links to a peer", labels=["peer"])
        streams = GaugeMetricFamily(
            "clusterlink_peer_link_streams", "Streams open on the links to a peer", labels=["peer"]
        )
        for name, monitor in self.peers.monitors.items():
            health = monitor.health
            if health.state.reachable is not None:
                reach.add_metric([name], 1.0 if health.state.reachable else 0.0)
            if health.rtt_ms is not None:
                rtt.add_metric([name], health.rtt_ms / 1000)
            usable = [link for link in monitor.pool.links if link.usable]
            links.add_metric([name], len(usable))
            streams.add_metric([name], sum(link.active_streams for link in usable))
        listening = GaugeMetricFamily(
            "clusterlink_import_listening",
            "1 when the import's listener is up",
            labels=["import_name"],
        )
        for name, state in self.imports.imports.items():
            listening.add_metric([name], 1.0 if state.server is not None else 0.0)
        strangers = GaugeMetricFamily(
            "clusterlink_peer_unauthenticated_connections",
            "Connections on the peer port whose TLS handshake has not finished (capped by "
            "listen.max_handshakes)",
        )
        strangers.add_metric([], float(self._gate.pending))
        yield from (reach, rtt, links, streams, listening, strangers)
        yield from certificate_expiry(self.certificates())

    async def start(self) -> None:
        """Bind the peer listener (connections queue) and start the imports; ``serve`` once
        the registry is loaded, so that no peer is refused as unknown while it loads."""
        listen = self.config.listen
        sock = systemd.listening_socket(
            "peer", listen.address, listen.port, reuse_port=self.config.workers > 1
        )
        self._server = await start_peer_server(
            None,
            None,
            self.tls,
            self.ingress,
            handshake_timeout=listen.handshake_timeout,
            gate=self._gate,
            links=self._links,
            on_handshake_failure=self._handshake_failed,
            sock=sock,
            admission=self.admission,
            reverse=self.peers,
            start_serving=False,
            grants=lambda: GrantSession(self._serve_grant, timeout=listen.handshake_timeout),
            tunnels=self.tunnels,
        )
        self._watch = asyncio.get_running_loop().create_task(self.tls.watch(), name="tls-watch")
        self.imports.start()

    async def serve(self) -> None:
        """Accept peer links (the objects are loaded)."""
        assert self._server is not None
        await self._server.start_serving()
        listen = self.config.listen
        log.info("peer listener started", extra={"address": f"{listen.address}:{listen.port}"})

    def _handshake_failed(self, reason: str) -> None:
        self.metrics.handshake_failures.labels(reason).inc()

    async def offers(self, peer: str) -> list[dict[str, Any]]:
        """Ask ``peer`` which of its exports it offers us."""
        pool = self.peers.pools.get(peer)
        if pool is None:
            raise ConnectionError(f"no link to peer {peer!r}")
        limit = self.config.dataplane.connect_timeout
        # An operator is waiting: bound the whole exchange, not only the answer once a link
        # carries it (a new link may otherwise wait out a restarting peer's handshake).
        async with asyncio.timeout(2 * limit):
            resp = await pool.request("GET", "/v1/offers", timeout=limit)
        if resp.status != 200:
            raise ConnectionError(f"offers answered {resp.status}")
        items = json.loads(resp.body)
        if not isinstance(items, list):
            raise ValueError("offers is not a list")
        return items

    async def explain(self, peer: str, export: str, client_ip: str | None) -> dict[str, Any]:
        """``gwctl explain``: how both ends would decide, see ``dataplane.explain``."""
        return await self.explainer.explain(peer, export, client_ip)

    async def _ask_explain(self, peer: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """``GET /v1/explain`` on ``peer`` (as ``offers``; a peer in backoff is not waited for)."""
        pool = self.peers.pools.get(peer)
        if pool is None:
            raise ConnectionError(f"no link to peer {peer!r}")
        limit = self.config.dataplane.connect_timeout
        async with asyncio.timeout(2 * limit):
            resp = await pool.request(
                "GET", "/v1/explain", headers=headers, timeout=limit, wait_redial=False
            )
        return resp.status, resp.body

    def _fabric_of(self, peer: str) -> bool | None:
        """Whether the links ``peer`` opened to us chain to the fabric CA; None: no such link."""
        for link in self._links:
            if link.peer == peer:
                return bool(link.fabric)
        return None

    def reload_tls(self, settings: TLSSettings | None = None) -> bool:
        """Re-read the certificate files (with new settings on SIGHUP); True if anything
        changed. TLSError if refused (old material kept). Changes reach ``_tls_changed``."""
        return self.tls.reload(settings)

    def apply_config(self, config: Config) -> None:
        """SIGHUP: the settings that apply live here (see config.RELOAD)."""
        dp = config.dataplane
        self.ingress.dial_timeout = dp.dial_timeout
        self.imports.max_connections = dp.max_connections_per_import
        for monitor in self.peers.monitors.values():
            monitor.timings = config.heartbeat
            monitor.health.state.failures_down = config.heartbeat.failures_down
            monitor.health.state.successes_up = config.heartbeat.successes_up
        self.peers.config = self.peers.config.model_copy(
            update={"heartbeat": config.heartbeat, "listen": config.listen}
        )

    def _tls_outcome(self, result: str, exc: TLSError | None) -> None:
        if exc is None:
            self.metrics.tls_reloads.inc()
        else:
            self.metrics.tls_reload_failures.labels(exc.reason).inc()

    def _tls_changed(self, change: TLSChange) -> None:
        """New material: new links use it, established ones drain. New revocation state (or
        CA bundle): close at once the links whose peer certificate it revokes."""
        if change.material:
            log.info("certificates reloaded", extra={"local_name": self.tls.local_name})
            self.peers.renew_links()
        if change.revocation or change.material:
            self.close_revoked_links()

    def close_revoked_links(self) -> int:
        """Close (GOAWAY, then close: active streams are cut) every established link, accepted
        or dialed, whose peer certificate is revoked now; returns how many."""
        revocation = self.tls.revocation
        if revocation.empty:
            return 0
        closed = 0
        sides = [("server", link) for link in self._links]
        sides += [("client", link) for pool in self.peers.pools.values() for link in pool.links]
        for side, link in list(sides):
            why = revocation.reason_der(link.peer_certificate())
            if why is None:
                continue
            log.warning(
                "peer link closed: certificate revoked",
                extra={"peer": link.peer, "side": side, "reason": why},
            )
            self.metrics.revoked_links.labels(side).inc()
            link.close()
            closed += 1
        return closed

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Stop accepting, GOAWAY to the peers' links (they open new streams elsewhere or on a
        new link to our next process), let relayed connections finish for up to
        ``drain_timeout`` seconds, then reset the rest."""
        if self._watch is not None:
            self._watch.cancel()
            with suppress(asyncio.CancelledError):
                await self._watch
        if self._server is not None:
            self._server.close()
        await self.imports.stop_accepting()
        self.peers.stop_lending()
        if self.ingress.relay is not None:
            self.ingress.relay.close()  # relayed streams: the ends go through another relay
        for link in list(self._links):  # tell peers to stop opening streams here
            link.goaway()
        await self._drain(drain_timeout)
        await self.imports.close()
        await self.peers.close()

    async def _drain(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        busy = self._links or self.imports.active_connections
        if busy:
            log.info(
                "draining",
                extra={
                    "peer_links": len(self._links),
                    "import_connections": self.imports.active_connections,
                    "timeout_s": seconds,
                },
            )
        # polls: the counts change in many objects
        while (self._links or self.imports.active_connections) and loop.time() < deadline:
            for link in list(self._links):  # a handshake that was in flight at stop completes now
                if not link.closed_locally:
                    link.goaway()
            await asyncio.sleep(0.05)
        if self._links or self.imports.active_connections:
            log.warning(
                "drain timeout: resetting the remaining connections",
                extra={
                    "peer_links": len(self._links),
                    "import_connections": self.imports.active_connections,
                },
            )
        elif busy:
            log.info("drained")
