"""Remote peers: one link pool and one heartbeat monitor per Peer object."""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..model.objects import Peer
from ..peering import PeerPool, TLSContexts
from ..registry import Entry
from .heartbeat import PeerMonitor


class PeerManager:
    """Keeps pools and monitors in step with the Peer objects."""

    def __init__(self, config: Config, tls: TLSContexts) -> None:
        self.config = config
        self.tls = tls
        self.pools: dict[str, PeerPool] = {}
        self.monitors: dict[str, PeerMonitor] = {}
        self.configured_labels: dict[str, dict[str, str]] = {}

    async def apply(self, name: str, new: Entry | None) -> None:
        """Create, update or remove the pool and monitor of peer ``name``."""
        if new is None:
            self.configured_labels.pop(name, None)
            monitor = self.monitors.pop(name, None)
            if monitor is not None:
                await monitor.stop()
            pool = self.pools.pop(name, None)
            if pool is not None:
                await pool.close()
            return
        assert isinstance(new.obj, Peer)
        self.configured_labels[name] = dict(new.obj.labels)
        endpoints = [(g.host, g.port) for g in new.obj.spec.gateways]
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
            )
            self.pools[name] = pool
            monitor = PeerMonitor(name, pool, self.config.heartbeat)
            self.monitors[name] = monitor
            monitor.start()
        else:
            pool.set_endpoints(endpoints)

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
        if monitor is None:
            return {"reachable": None, "last_seen": None, "labels": {}}
        health = monitor.health
        return {
            "reachable": health.state.reachable,
            "last_seen": health.last_seen,
            "labels": dict(health.labels),
            "rtt_ms": health.rtt_ms,
            "error": health.error,
            "links": sum(1 for link in monitor.pool.links if link.usable),
        }

    def renew_links(self) -> None:
        """After a certificate change: drain every link; the pools dial new ones on demand."""
        for pool in self.pools.values():
            for link in list(pool.links):
                link.drain()

    async def close(self) -> None:
        for name in list(self.pools):
            await self.apply(name, None)
