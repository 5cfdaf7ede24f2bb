"""The last refused connections, kept in memory for the fabric page (``telemetry.fabric``).

A small ring: the logs and the audit line remain the record; this is what an operator sees at
a glance. Only what the metrics carry as labels goes in (peer, export, import, policy names and
a reason class), never a client address.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

SIZE = 50

Side = Literal["egress", "ingress"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused connection: who asked for what, why, and the policy that decided (if any)."""

    time: float  # Unix time
    side: Side
    peer: str | None
    export: str | None
    reason: str  # a reason class: denied, not-allowed, unknown-export, no-source, ...
    policy: str | None = None  # the deciding policy ("<default deny>"), "allowed_peers", or None
    decision: str | None = None  # e.g. "deny by privileged policy block-b"
    import_name: str | None = None  # egress: the import the client connected to
    detail: str | None = None  # egress: what the last source answered


class RecentRefusals:
    """The last ``size`` refusals, oldest dropped first."""

    def __init__(self, size: int = SIZE, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[Refusal] = deque(maxlen=size)
        self._clock = clock
        self.total = 0  # refusals recorded since start (the ring keeps the last ``size``)

    def add(
        self, side: Side, peer: str | None, export: str | None, reason: str, **more: Any
    ) -> None:
        self._ring.append(Refusal(self._clock(), side, peer, export, reason, **more))
        self.total += 1

    def recent(self) -> list[dict[str, Any]]:
        """Newest first, as JSON-ready dicts."""
        return [asdict(r) for r in reversed(self._ring)]

    def document(self) -> dict[str, Any]:
        """``recent()`` and ``total``: what ``merge`` takes per process."""
        return {"recent": self.recent(), "total": self.total}

    def encode(self) -> bytes:
        """``document()`` as JSON (a worker's answer to the main process)."""
        return json.dumps(self.document()).encode()


def merge(processes: dict[str, dict[str, Any]], size: int = SIZE) -> tuple[list[dict], int]:
    """Refusals of several processes (``{"0": {"recent": [...], "total": N}, ...}``): the
    newest ``size`` of all, each labelled with its ``worker``, and the sum of the totals."""
    rows = [
        {**row, "worker": worker}
        for worker, doc in processes.items()
        for row in doc.get("recent", [])
        if isinstance(row, dict)
    ]
    rows.sort(key=lambda row: row.get("time") or 0.0, reverse=True)
    total = sum(int(doc.get("total", 0)) for doc in processes.values())
    return rows[:size], total
