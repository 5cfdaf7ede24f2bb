"""One scrape of the metrics listener: the main process's families and every worker's."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from ..metrics import worker_up
from .families import MAIN, decode, merge, render

log = logging.getLogger("clusterlink.telemetry")

WORKER_TIMEOUT = 5.0  # a scrape waits this long for a worker (Prometheus' default timeout: 10 s)

Fetch = Callable[[float], Awaitable[bytes | None]]


async def collect(
    main: CollectorRegistry, workers: Mapping[str, Fetch], within: float = WORKER_TIMEOUT
) -> tuple[list[Metric], dict[str, bool]]:
    """The families of ``main`` and of every worker (asked at once) merged, each sample
    labelled ``worker``, and which processes answered (``"0"``: the main process)."""
    names = list(workers)
    replies = await asyncio.gather(*(workers[n](within) for n in names))
    sources: list[tuple[str, list[Metric]]] = [(MAIN, list(main.collect()))]
    answered = {MAIN: True}
    for name, reply in zip(names, replies, strict=True):
        families = None
        if reply is not None:
            try:
                families = decode(reply)
            except ValueError as exc:
                log.warning("worker metrics unreadable", extra={"worker": name, "error": str(exc)})
        answered[name] = families is not None
        if families is not None:
            sources.append((name, families))
    return merge(sources), answered


async def gather(
    main: CollectorRegistry, workers: Mapping[str, Fetch], within: float = WORKER_TIMEOUT
) -> bytes:
    """The exposition of ``main`` and of every worker (asked at once), each sample labelled
    ``worker``; a worker that does not answer is left out and reported by
    ``clusterlink_worker_up 0``."""
    families, answered = await collect(main, workers, within)
    return render([*families, worker_up(answered)])


async def gather_documents(
    main: dict[str, Any], workers: Mapping[str, Fetch], within: float = WORKER_TIMEOUT
) -> dict[str, dict[str, Any]]:
    """JSON answers of every worker (asked at once) next to ``main``'s own, by process
    (``"0"``: the main process); a worker that does not answer, or answers nonsense, is left
    out."""
    names = list(workers)
    replies = await asyncio.gather(*(workers[n](within) for n in names))
    out = {MAIN: main}
    for name, reply in zip(names, replies, strict=True):
        if not reply:
            continue
        try:
            doc = json.loads(reply)
        except ValueError as exc:
            log.warning("worker answer unreadable", extra={"worker": name, "error": str(exc)})
            continue
        if isinstance(doc, dict):
            out[name] = doc
    return out
