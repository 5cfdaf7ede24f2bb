"""One relayed connection's way through a gateway, without sockets.

A client connection crosses the fabric as an attempt on each side: egress (an import chooses a
source and asks it) and ingress (an export decides a peer's CONNECT). Both take policy
decisions, count them, log denials (naming the deciding policy, its tier and the matching
selectors: ``refusal_fields``), remember what they tried and end with one audit line; a relay
will need the same a third time. ``ConnectionAttempt`` holds that bookkeeping so the I/O
layers (``imports``, ``ingress``) only move bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from ..metrics import Metrics
from ..policy.attributes import IPAddress
from ..policy.engine import DEFAULT_DENY_NAME, Decision, PolicyEngine
from ..policy.explain import Explanation, explain

Side = Literal["egress", "ingress"]
DEFAULT_DENY_LABEL = DEFAULT_DENY_NAME  # the engine's name for its default deny


class ConnectionAttempt:
    """Policy decisions, sources tried and the audit record of one relayed connection."""

    __slots__ = (
        "_clock",
        "chosen",
        "decision",
        "engine",
        "explanation",
        "metrics",
        "side",
        "started",
        "tried",
    )

    def __init__(
        self,
        side: Side,
        engine: PolicyEngine,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.side = side
        self.engine = engine
        self.metrics = metrics
        self._clock = clock
        self.started = clock()
        self.tried: list[dict[str, Any]] = []  # egress: one record per source tried
        self.chosen: str | None = None  # the peer that carries it, once connected
        self.decision: Decision | None = None  # the last decision taken
        self.explanation: Explanation | None = None  # why, for the last decision if a deny

    def decide(
        self, src: Mapping[str, str], dst: Mapping[str, str], client_ip: IPAddress | None
    ) -> Decision:
        """Decide by policy on this side and count the decision; a deny is explained (the
        refusal log line names the policy, its tier and selectors: ``refusal_fields``)."""
        decision = self.engine.decide(src, dst, client_ip)
        self.decision = decision
        # Same engine state (no await in between): the explanation names this very decision.
        if not decision.allowed:
            self.explanation = explain(self.engine, src, dst, client_ip, full=False)
        else:
            self.explanation = None
        self.metrics.decisions.labels(
            self.side, decision.action, decision.policy or DEFAULT_DENY_LABEL
        ).inc()
        return decision

    def refusal_fields(self) -> dict[str, Any]:
        """Log fields of the last deny: ``decision``, ``policy``, ``tier``, ``selector``."""
        if self.explanation is not None:
            return self.explanation.log_fields()
        return {"decision": str(self.decision)}

    def source(self, peer: str, export: str) -> dict[str, Any]:
        """Start trying one source (egress); fill in its ``result`` (and ``egress``) as it goes."""
        step: dict[str, Any] = {"peer": peer, "export": export}
        self.tried.append(step)
        return step

    def connected(self, step: dict[str, Any]) -> None:
        step["result"] = "connected"
        self.chosen = step["peer"]

    def record(self, head: Mapping[str, Any], bytes_in: int, bytes_out: int) -> dict[str, Any]:
        """The audit line's fields once the connection ended (``head`` first)."""
        out = dict(head)
        if self.side == "egress":
            out.update(peer=self.chosen, tried=self.tried)
        elif self.decision is not None:
            out["ingress"] = str(self.decision)
        out.update(
            duration_s=round(self._clock() - self.started, 3),
            bytes_in=bytes_in,
            bytes_out=bytes_out,
        )
        return out
