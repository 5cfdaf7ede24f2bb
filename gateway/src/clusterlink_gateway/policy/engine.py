"""Access-policy decision engine (no I/O).

Order: privileged deny > privileged allow > regular deny > regular allow > default deny.
A policy matches when the source matches at least one ``from`` element and the
destination matches at least one ``to`` element. Within the deciding tier the
lexicographically first matching policy name is reported. ``policy.explain`` says why
(through ``matches``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from clusterlink_gateway.model.selector import LabelMatcher, PolicySpec, SourceMatcher
from clusterlink_gateway.policy.attributes import IPAddress, parse_client_ip

DEFAULT_DENY_NAME = "<default deny>"


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of one authorization; ``policy`` is None for the default deny."""

    allowed: bool
    action: str
    policy: str | None
    privileged: bool

    def __str__(self) -> str:
        if self.policy is None:
            return f"{self.action} by {DEFAULT_DENY_NAME}"
        tier = "privileged policy" if self.privileged else "policy"
        return f"{self.action} by {tier} {self.policy}"


DEFAULT_DENY = Decision(allowed=False, action="deny", policy=None, privileged=False)


# (name, compiled from-elements, compiled to-elements, decision); buckets sort by name.
_Entry = tuple[str, tuple[SourceMatcher, ...], tuple[LabelMatcher, ...], Decision]


def _tier(spec: PolicySpec) -> int:
    """Bucket index in evaluation order."""
    return (0 if spec.privileged else 2) + (0 if spec.action == "deny" else 1)


def _entry_name(entry: _Entry) -> str:
    return entry[0]


class PolicyEngine:
    """Holds named policies bucketed by tier/action, each bucket sorted by name."""

    __slots__ = ("_buckets", "_specs")

    def __init__(self) -> None:
        self._specs: dict[str, PolicySpec] = {}
        self._buckets: tuple[list[_Entry], ...] = ([], [], [], [])

    def set(self, name: str, spec: PolicySpec) -> None:
        """Add policy ``name``, replacing any existing one (its tier may change)."""
        self.remove(name)
        entry: _Entry = (
            name,
            tuple(sel.matcher for sel in spec.from_),
            tuple(sel.matcher for sel in spec.to),
            Decision(spec.action == "allow", spec.action, name, spec.privileged),
        )
        bisect.insort(self._buckets[_tier(spec)], entry, key=_entry_name)
        self._specs[name] = spec

    def remove(self, name: str) -> bool:
        """Remove policy ``name``; False if it did not exist."""
        spec = self._specs.pop(name, None)
        if spec is None:
            return False
        bucket = self._buckets[_tier(spec)]
        i = bisect.bisect_left(bucket, name, key=_entry_name)
        del bucket[i]
        return True

    def clear(self) -> None:
        """Remove all policies."""
        self._specs.clear()
        for bucket in self._buckets:
            bucket.clear()

    def get(self, name: str) -> PolicySpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def decide(
        self,
        src: Mapping[str, str],
        dst: Mapping[str, str],
        client_ip: IPAddress | str | None = None,
    ) -> Decision:
        """Decide one connection; ``client_ip`` is used for ``clientCIDRs`` only."""
        ip = parse_client_ip(client_ip)
        for bucket in self._buckets:
            for _, sources, destinations, decision in bucket:
                for source in sources:
                    if source.matches(src, ip):
                        break
                else:
                    continue
                for destination in destinations:
                    if destination.matches(dst):
                        return decision
        return DEFAULT_DENY

    def uses_client_cidrs(self) -> bool:
        """Whether any policy's ``from`` element has ``clientCIDRs`` (for explanations)."""
        return any(sel.clientCIDRs for spec in self._specs.values() for sel in spec.from_)

    def matches(
        self,
        src: Mapping[str, str],
        dst: Mapping[str, str],
        client_ip: IPAddress | None = None,
    ) -> Iterator[tuple[PolicySpec, Decision, int, int]]:
        """Every matching policy in evaluation order (the first one decides), with the index of
        its first matching ``from`` and ``to`` element. For explanations, not the hot path."""
        for bucket in self._buckets:
            for name, sources, destinations, decision in bucket:
                for from_index, source in enumerate(sources):  # noqa: B007 - used below
                    if source.matches(src, client_ip):
                        break
                else:
                    continue
                for to_index, destination in enumerate(destinations):
                    if destination.matches(dst):
                        yield self._specs[name], decision, from_index, to_index
                        break
