"""Prometheus metrics of one gateway process, served on the admin API at ``/metrics`` (this
process) and on the metrics listener (every process, ``telemetry``).

Counters on the connection path are updated once per connection (label children are cached);
gauges that describe state (reachability, links, listeners) are read at scrape time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Cached:
    """A labelled metric whose children are cached by label values.

    ``prometheus_client``'s ``labels()`` checks and converts the values and takes a lock on
    every call; the connection path asks for the same few children over and over.
    """

    __slots__ = ("_children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class Metrics:
    """All metric families of a gateway, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, doc: str, labels: list[str]) -> _Cached:
            return _Cached(Counter(f"clusterlink_{name}", doc, labels, registry=r))

        imp, exp = ["import_name"], ["export", "peer"]
        self.import_connections = counter(
            "import_connections", "Client connections accepted on an import", imp
        )
        self.import_failures = counter(
            "import_connection_failures", "Client connections no source could serve (reset)", imp
        )
        self.import_closed = counter(
            "import_connections_closed", "Client connections on an import that ended", imp
        )
        self.import_bytes = counter(
            "import_bytes",
            "Bytes relayed for an import's clients (in: from the client)",
            [*imp, "direction"],
        )
        self.export_connections = counter("export_connections", "Connections to an export", exp)
        self.export_closed = counter(
            "export_connections_closed", "Connections to an export that ended", exp
        )
        self.export_bytes = counter(
            "export_bytes",
            "Bytes relayed for an export (in: from the remote peer)",
            ["export", "direction"],
        )
        self.decisions = counter(
            "policy_decisions",
            "Access-policy decisions by side, action and deciding policy",
            ["side", "action", "policy"],
        )
        self.connect_latency = _Cached(
            Histogram(
                "clusterlink_peer_connect_seconds",
                "Time from sending CONNECT to a peer until its answer",
                ["peer"],
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                registry=r,
            )
        )
        self.connect_errors = counter(
            "peer_connect_errors", "CONNECTs to a peer that failed, by reason", ["peer", "reason"]
        )
        self.handshake_failures = counter(
            "peer_handshake_failures",
            "Connections refused on the peer port before a link was up, by reason class",
            ["reason"],
        )
        self.ingress_refused = counter(
            "peer_requests_refused",
            "Requests from peers refused on the peer port, by calling peer and reason",
            ["peer", "reason"],
        )
        self.tls_reloads = Counter(
            "clusterlink_tls_reloads",
            "TLS material or revocation state installed by a reload (SIGHUP or file watcher)",
            registry=r,
        )
        self.tls_reload_failures = counter(
            "tls_reload_failures",
            "TLS reloads refused (old material kept), by reason (peering/trust.py REASONS)",
            ["reason"],
        )
        self.revoked_links = counter(
            "peer_links_revoked",
            "Established peer links closed because the peer's certificate is revoked, by side",
            ["side"],
        )
        self.untrusted_links = counter(
            "peer_links_untrusted",
            "Established peer links closed because a Peer's trust anchors changed and the "
            "peer's certificate no longer passes them, by side",
            ["side"],
        )
        self.admin_refusals = counter(
            "admin_refusals",
            "Admin API connections or requests refused before a handler ran, by reason",
            ["reason"],
        )
        self.metrics_refusals = counter(
            "metrics_refusals",
            "Metrics listener connections or requests refused before a handler ran, by reason",
            ["reason"],
        )
        self.grant_redemptions = counter(
            "grant_redemptions",
            "Peering-grant redemptions, by side (granter: on the peer port, redeemer: via the "
            "admin API) and result (accepted or the refusal reason, peering/grants.py REASONS)",
            ["side", "result"],
        )
        self.active = Gauge(
            "clusterlink_connections_active", "Relayed connections open now", ["side"], registry=r
        )
        self._egress_active = self.active.labels("egress")
        self._ingress_active = self.active.labels("ingress")
        self.relay_streams = counter(
            "relay_streams",
            "Streams this gateway was asked to relay, by source and destination peer and result "
            "(ok, denied, disabled, over-limit, unreachable, loop)",
            ["source", "destination", "result"],
        )
        self.relay_bytes = counter(
            "relay_bytes",
            "Bytes this gateway relayed (ciphertext), by source and destination peer and "
            "direction (up: source to destination, down: back)",
            ["source", "destination", "direction"],
        )
        self.relay_active = Gauge(
            "clusterlink_relay_streams_active",
            "Relayed streams open now, by source peer",
            ["source"],
            registry=r,
        )

    def add_state(self, collect: Callable[[], Iterator[GaugeMetricFamily]]) -> None:
        """Register gauges computed at scrape time."""
        self.registry.register(_StateCollector(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @property
    def egress_active(self) -> Any:
        return self._egress_active

    @property
    def ingress_active(self) -> Any:
        return self._ingress_active


class Certificate(Protocol):
    """What the expiry gauges need of a certificate (``peering.trust.CertificateFacts``)."""

    kind: str
    subject: str
    fingerprint: str
    not_after: dt.datetime


CERT_LABELS = ["kind", "subject", "fingerprint"]


def certificate_expiry(
    certificates: Iterable[Certificate], now: dt.datetime | None = None
) -> Iterator[GaugeMetricFamily]:
    """``clusterlink_certificate_expiry_seconds`` (seconds until notAfter, negative once
    expired) and ``clusterlink_certificate_not_after_timestamp_seconds`` (notAfter, Unix time),
    one series per certificate: kind gateway | ca | admin, its subject and SHA-256 fingerprint
    (two CAs of a rollover bundle may share a subject)."""
    now = now or dt.datetime.now(dt.UTC)
    left = GaugeMetricFamily(
        "clusterlink_certificate_expiry_seconds",
        "Seconds until the certificate expires (negative once expired); kind gateway|ca|admin",
        labels=CERT_LABELS,
    )
    at = GaugeMetricFamily(
        "clusterlink_certificate_not_after_timestamp_seconds",
        "When the certificate expires (notAfter), Unix time; kind gateway|ca|admin",
        labels=CERT_LABELS,
    )
    for cert in certificates:
        labels = [cert.kind, cert.subject, cert.fingerprint]
        left.add_metric(labels, (cert.not_after - now).total_seconds())
        at.add_metric(labels, cert.not_after.timestamp())
    yield from (left, at)


def worker_up(answered: dict[str, bool]) -> GaugeMetricFamily:
    """``clusterlink_worker_up{worker}``: 1 when that process's metrics are in this scrape
    (worker "0" is the main process), 0 when a worker did not answer in time."""
    family = GaugeMetricFamily(
        "clusterlink_worker_up",
        "1 when this data-plane process answered the metrics listener's scrape (0 = main)",
        labels=["worker"],
    )
    for worker, ok in answered.items():
        family.add_metric([worker], 1.0 if ok else 0.0)
    return family


class _StateCollector(Collector):
    def __init__(self, collect: Callable[[], Iterator[GaugeMetricFamily]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._collect()
