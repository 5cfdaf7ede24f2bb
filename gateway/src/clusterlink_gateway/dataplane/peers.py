"""Remote peers: one link pool and one heartbeat monitor per Peer object, and reverse links.

A Peer with ``dial: false`` (an outbound-only site) is never dialed: its pool uses the reverse
links it opens to us, which this manager admits (``reverse_refusal``, the ``ReverseHost`` of
``peering.reverse``). The other way round, when a peer's heartbeat answer asks for reverse
links (it holds us with ``dial: false``), ``ReverseLinks`` keeps them open to it.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import Config
from ..model.objects import Peer
from ..peering import PeerPool, TLSContexts
from ..peering.admission import Refused
from ..peering.lending import ReverseLinks
from ..peering.requesting import ClientLink
from ..peering.reverse import reverse_refusal
from ..peering.serving import Handler, ServerLink
from ..registry import Entry
from .heartbeat import PeerMonitor
from .relaying import RelayDialer
from .trustmap import trust_status

log = logging.getLogger("clusterlink.peers")


class PeerManager:
    """Keeps pools and monitors in step with the Peer objects."""

    def __init__(
        self,
        config: Config,
        tls: TLSContexts,
        handler: Handler | None = None,
        server_links: set[ServerLink] | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        self.handler = handler  # serves the streams a peer opens on our reverse links to it
        self.server_links = server_links  # where our reverse links are tracked (drain, revoke)
        self.pools: dict[str, PeerPool] = {}
        self.monitors: dict[str, PeerMonitor] = {}
        self.lending: dict[str, ReverseLinks] = {}
        self.configured_labels: dict[str, dict[str, str]] = {}
        self.endpoints: dict[str, list[tuple[str, int]]] = {}
        self.paths: dict[str, tuple[object, ...]] = {}  # (endpoints, dial, via) per peer
        self.relay_dialer = RelayDialer(config.peer_name, self)

    async def apply(self, name: str, new: Entry | None) -> None:
        """Create, update or remove the pool and monitor of peer ``name``."""
        if new is None:
            self.configured_labels.pop(name, None)
            self.endpoints.pop(name, None)
            self.paths.pop(name, None)
            monitor = self.monitors.pop(name, None)
            if monitor is not None:
                await monitor.stop()
            lending = self.lending.pop(name, None)
            if lending is not None:
                await lending.close()
            pool = self.pools.pop(name, None)
            if pool is not None:
                await pool.close()
            return
        assert isinstance(new.obj, Peer)
        self.configured_labels[name] = dict(new.obj.labels)
        endpoints = [(g.host, g.port) for g in new.obj.spec.gateways]
        path = (tuple(endpoints), new.obj.spec.dial, tuple(new.obj.spec.via))
        path_changed = self.paths.get(name, path) != path
        self.paths[name] = path
        self.endpoints[name] = endpoints
        if not new.obj.spec.dial and self.config.workers > 1:
            log.warning(
                "peer with dial: false and workers > 1: a process reaches it only while it holds "
                "one of its reverse links (see docs/protocol.md)",
                extra={"peer": name, "workers": self.config.workers},
            )
        pool = self.pools.get(name)
        if pool is None:
            dp = self.config.dataplane
            pool = PeerPool(
                name,
                endpoints,
                self.tls,
                links=dp.links_per_peer,
                connect_timeout=dp.connect_timeout,
                handshake_timeout=dp.handshake_timeout,
                dial=new.obj.spec.dial,
            )
            self.pools[name] = pool
            self._set_via(pool, name, new.obj.spec.via)
            monitor = PeerMonitor(name, pool, self.config.heartbeat)
            monitor.on_reverse = lambda count, name=name: self._lend(name, count)
            self.monitors[name] = monitor
            monitor.start()
        else:
            pool.set_endpoints(endpoints)
            pool.set_dial(new.obj.spec.dial)
            self._set_via(pool, name, new.obj.spec.via)
            lending = self.lending.get(name)
            if lending is not None:
                lending.set_endpoints(endpoints)
            if path_changed:
                self.monitors[name].path_changed()

    def _set_via(self, pool: PeerPool, name: str, via: list[str]) -> None:
        """Relayed links through ``via`` when no direct or reverse link is up."""
        pool.set_relays(self.relay_dialer.for_peer(name, list(via)) if via else None, via)

    # -- reverse links ---------------------------------------------------------------------------

    def reverse_refusal(self, name: str) -> Refused | None:
        """Why a reverse link from ``name`` (verified, admitted) must be refused, or None."""
        pool = self.pools.get(name)
        return reverse_refusal(
            name,
            None if pool is None else pool.dials,
            0 if pool is None else pool.reverse_links,
            self.config.listen.max_reverse_links_per_peer,
        )

    def reverse_link(self, name: str) -> ClientLink:
        return self.pools[name].reverse_link()

    def adopt(self, link: ClientLink) -> None:
        pool = self.pools.get(link.peer)
        if pool is None:  # its Peer went away during the handshake
            link.close()
            return
        pool.adopt(link)

    def _lend(self, name: str, count: int) -> None:
        """Peer ``name`` asked (heartbeat) for ``count`` reverse links from us."""
        lending = self.lending.get(name)
        pool = self.pools.get(name)
        if lending is None:
            if count <= 0 or self.handler is None or pool is None or not pool.dials:
                return
            dp = self.config.dataplane
            lending = ReverseLinks(
                name,
                self.endpoints.get(name, []),
                self.tls,
                self.handler,
                connect_timeout=dp.connect_timeout,
                handshake_timeout=dp.handshake_timeout,
                registry=self.server_links,
            )
            self.lending[name] = lending
            log.info("peer asks for reverse links", extra={"peer": name, "links": count})
        lending.want(count)

    def stop_lending(self) -> None:
        """Dial no more reverse links (the gateway is stopping)."""
        for lending in self.lending.values():
            lending.stop()

    def reachable(self, name: str) -> bool:
        """Not known to be unreachable: a peer not heard from yet (just started) is tried in
        load-balancing order, not deferred."""
        monitor = self.monitors.get(name)
        return monitor is not None and monitor.health.state.reachable is not False

    def labels(self, name: str) -> dict[str, str]:
        """Labels learned from the peer's heartbeats, overlaid by those on our Peer object."""
        monitor = self.monitors.get(name)
        learned = monitor.health.labels if monitor else {}
        configured = self.configured_labels.get(name, {})
        return {**learned, **configured} if configured else learned

    def status(self, entry: Entry) -> dict[str, Any]:
        monitor = self.monitors.get(entry.name)
        trust = trust_status(entry)
        if monitor is None:
            return {"reachable": None, "last_seen": None, "labels": {}, "trust": trust}
        health = monitor.health
        lending = self.lending.get(entry.name)
        return {
            "reachable": health.state.reachable,
            "last_seen": health.last_seen,
            "labels": dict(health.labels),
            "rtt_ms": health.rtt_ms,
            "error": health.error,
            "links": sum(1 for link in monitor.pool.links if link.usable),
            "via": _via(monitor.pool),
            "reverse_links": len(lending.links) if lending is not None else 0,
            "trust": trust,
        }

    def renew_links(self) -> None:
        """After a certificate change: drain every link; the pools dial new ones on demand."""
        for pool in self.pools.values():
            for link in list(pool.links):
                link.drain()
        for lending in self.lending.values():
            lending.renew()

    async def close(self) -> None:
        for name in list(self.lending):
            await self.lending.pop(name).close()
        for name in list(self.pools):
            await self.apply(name, None)


def _via(pool: PeerPool) -> str:
    """How the peer is reached now: direct, reverse, or the relay of a relayed link (when no
    direct or reverse link is up)."""
    relays = pool.relays
    if relays and len(relays) == sum(1 for link in pool.links if link.usable):
        return relays[0]
    return "direct" if pool.dials else "reverse"
