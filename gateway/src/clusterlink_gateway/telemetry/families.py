"""Metric families as data: encoded by a worker, merged by the main process (pure functions).

Every process of a gateway (``workers: N``) keeps its own registry. The metrics listener
serves one exposition for all of them: each sample gets a ``worker`` label, ``"0"`` for the
main process and ``"1"`` .. ``"N-1"`` for the workers (stable across a worker's restart). A
per-process label rather than summing in the gateway keeps counters exact when a worker is
restarted (Prometheus sees one series reset, as for any restarted target) and keeps per-process
gauges (a worker's own links and heartbeats) honest; dashboards ``sum``/``max`` over it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

WORKER_LABEL = "worker"
MAIN = "0"


def encode(families: Iterable[Metric]) -> bytes:
    """The families as JSON: ``[[name, help, type, unit, [[sample, labels, value], ...]]]``."""
    out = [
        [m.name, m.documentation, m.type, m.unit, [[s.name, s.labels, s.value] for s in m.samples]]
        for m in families
    ]
    return json.dumps(out, separators=(",", ":")).encode()


def decode(data: bytes) -> list[Metric]:
    """The inverse of ``encode``; ValueError if ``data`` is not such a document."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, list):
            raise TypeError("not a list")
        families = []
        for name, doc, typ, unit, samples in raw:
            family = Metric(str(name), str(doc), str(typ), str(unit))
            for sample, labels, value in samples:
                family.add_sample(
                    str(sample), {str(k): str(v) for k, v in labels.items()}, float(value)
                )
            families.append(family)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not an encoded list of metric families: {exc}") from None
    return families


def merge(sources: Sequence[tuple[str, Iterable[Metric]]]) -> list[Metric]:
    """One family per name with the samples of every source, each labelled ``worker=<id>``;
    the first source's help text and type win (all processes run the same code)."""
    merged: dict[str, Metric] = {}
    for worker, families in sources:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for s in family.samples:
                target.add_sample(s.name, {**s.labels, WORKER_LABEL: worker}, s.value)
    return list(merged.values())


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def render(families: list[Metric]) -> bytes:
    """The Prometheus text exposition (version 0.0.4) of ``families``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)
