"""Why a decision was taken: the deciding policy, its tier and the selectors that matched (no I/O).

``explain(engine, src, dst, client_ip)`` builds an ``Explanation``: the same ``Decision`` as
``engine.decide`` plus the first ``from`` and ``to`` element of the deciding policy that matched
(index and selector as written), and every other matching policy it outranked, in evaluation
order. Used by ``gwctl explain`` (through the admin API and the peer protocol) and by the
refusal log lines; not on the hot path (``decide`` is).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .attributes import IPAddress, parse_client_ip
from .engine import DEFAULT_DENY, DEFAULT_DENY_NAME, Decision, PolicyEngine

TIER_PRIVILEGED = "privileged"
TIER_REGULAR = "regular"
TIER_DEFAULT = "default"  # the default deny: no policy matched
TIERS = (TIER_PRIVILEGED, TIER_REGULAR, TIER_DEFAULT)


def tier_of(decision: Decision) -> str:
    """``privileged``, ``regular`` or ``default`` (the default deny)."""
    if decision.policy is None:
        return TIER_DEFAULT
    return TIER_PRIVILEGED if decision.privileged else TIER_REGULAR


@dataclass(frozen=True, slots=True)
class SelectorMatch:
    """One matching element of a policy: ``from[index]`` or ``to[index]`` and the selector."""

    side: str  # "from" or "to"
    index: int
    selector: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.side}[{self.index}]"


@dataclass(frozen=True, slots=True)
class Outranked:
    """A policy that matched too but lost to the deciding one (a higher tier or an earlier name)."""

    policy: str
    action: str
    tier: str

    def document(self) -> dict[str, str]:
        return {"policy": self.policy, "action": self.action, "tier": self.tier}


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision with its reasons. ``source``/``destination`` are None for the default deny."""

    decision: Decision
    source: SelectorMatch | None = None
    destination: SelectorMatch | None = None
    outranked: tuple[Outranked, ...] = ()
    client_ip_known: bool = True
    cidrs_skipped: bool = False  # no client address, and some policy has clientCIDRs

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def tier(self) -> str:
        return tier_of(self.decision)

    @property
    def policy_label(self) -> str:
        """The deciding policy's name, or ``<default deny>``."""
        return self.decision.policy or DEFAULT_DENY_NAME

    def selector(self) -> dict[str, dict[str, Any]] | None:
        """``{"from[i]": selector, "to[j]": selector}`` of the deciding policy, or None."""
        if self.source is None or self.destination is None:
            return None
        return {
            self.source.label: self.source.selector,
            self.destination.label: self.destination.selector,
        }

    def __str__(self) -> str:
        return str(self.decision)

    def document(self) -> dict[str, Any]:
        """The JSON form served by the admin API and the peer protocol."""
        return {
            "allowed": self.decision.allowed,
            "action": self.decision.action,
            "tier": self.tier,
            "policy": self.decision.policy,
            "summary": str(self.decision),
            "selector": self.selector(),
            "outranked": [o.document() for o in self.outranked],
            "client_ip_known": self.client_ip_known,
            "cidrs_skipped": self.cidrs_skipped,
        }

    def log_fields(self) -> dict[str, Any]:
        """Fields of a refusal log line: ``decision`` (as before), ``policy``, ``tier``,
        ``selector``."""
        return {
            "decision": str(self.decision),
            "policy": self.policy_label,
            "tier": self.tier,
            "selector": self.selector(),
        }


def _selector_document(selector: Any) -> dict[str, Any]:
    """A selector as the operator wrote it (defaults left out: ``{}`` matches everything)."""
    return selector.model_dump(by_alias=True, exclude_defaults=True)


def explain(
    engine: PolicyEngine,
    src: Mapping[str, str],
    dst: Mapping[str, str],
    client_ip: IPAddress | str | None = None,
    *,
    full: bool = True,
) -> Explanation:
    """Explain the decision ``engine.decide(src, dst, client_ip)`` takes (same arguments).
    ``full=False`` (a refusal log line): only the decider, not what it outranked nor
    ``cidrs_skipped`` -- about as cheap as ``decide``."""
    ip = parse_client_ip(client_ip)
    skipped = full and ip is None and engine.uses_client_cidrs()
    decider: Explanation | None = None
    outranked: list[Outranked] = []
    for spec, decision, from_index, to_index in engine.matches(src, dst, ip):
        if decider is None:
            decider = Explanation(
                decision,
                SelectorMatch("from", from_index, _selector_document(spec.from_[from_index])),
                SelectorMatch("to", to_index, _selector_document(spec.to[to_index])),
            )
            if not full:
                break
        else:
            assert decision.policy is not None
            outranked.append(Outranked(decision.policy, decision.action, tier_of(decision)))
    known = ip is not None
    if decider is None:
        return Explanation(DEFAULT_DENY, client_ip_known=known, cidrs_skipped=skipped)
    return Explanation(
        decider.decision,
        decider.source,
        decider.destination,
        tuple(outranked),
        client_ip_known=known,
        cidrs_skipped=skipped,
    )


MAX_REMOTE_TEXT = 256  # a peer's policy name or summary, cut to this in our logs and output
MAX_REMOTE_SELECTOR = 2048  # a peer's matching selectors, as compact JSON, at most this


def remote_decision(raw: Any) -> dict[str, Any] | None:
    """A decision document a peer sent (``document()`` or a 403 body's ``decision``), checked
    and bounded: only known fields of the right type, texts cut, oversized selectors dropped.
    None if it is not a decision at all."""
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for key in ("policy", "summary", "action"):
        value = raw.get(key)
        if isinstance(value, str):
            out[key] = value[:MAX_REMOTE_TEXT]
    tier = raw.get("tier")
    if tier in TIERS:
        out["tier"] = tier
    if isinstance(raw.get("allowed"), bool):
        out["allowed"] = raw["allowed"]
    selector = raw.get("selector")
    if isinstance(selector, dict) and len(json.dumps(selector)) <= MAX_REMOTE_SELECTOR:
        out["selector"] = selector
    outranked = raw.get("outranked")
    if isinstance(outranked, list):
        out["outranked"] = [
            {k: str(o.get(k, ""))[:MAX_REMOTE_TEXT] for k in ("policy", "action", "tier")}
            for o in outranked[:16]
            if isinstance(o, dict)
        ]
    for flag in ("client_ip_known", "cidrs_skipped"):
        if isinstance(raw.get(flag), bool):
            out[flag] = raw[flag]
    if "tier" not in out:
        return None
    if out["tier"] == TIER_DEFAULT:
        out.setdefault("policy", None)
    return out
