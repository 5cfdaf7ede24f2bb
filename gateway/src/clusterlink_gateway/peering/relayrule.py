"""Whether this gateway relays one stream (pure: no I/O, no config objects).

A relay splices a source peer's stream to a destination peer's stream, and only where its
configuration says so: ``relay.enabled``, then its relay policies (deny by default, a deny
beats an allow) over the two peers' attributes, then a bound of concurrent streams per source.
Loop guard: a stream that itself arrived relayed is never relayed again, and no stream is
relayed to its own source or to this gateway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# result classes (the ``result`` label of clusterlink_relay_streams_total)
OK = "ok"
DENIED = "denied"
DISABLED = "disabled"
OVER_LIMIT = "over-limit"
UNREACHABLE = "unreachable"
LOOP = "loop"
RESULTS = (OK, DENIED, DISABLED, OVER_LIMIT, UNREACHABLE, LOOP)

RELAY_HEADER = "clusterlink-relay"  # on S's CONNECT to the relay; :authority names D
RELAYED_FROM_HEADER = "clusterlink-relayed-from"  # informational only: never trusted
RELAY_ACCEPT = "relay-accept"  # :authority of the relay's CONNECT to the destination


class Matcher(Protocol):
    def matches(self, attrs: Mapping[str, str]) -> bool: ...


@dataclass(frozen=True)
class RelayPolicy:
    name: str
    allow: bool
    sources: tuple[Matcher, ...]  # any of them
    destinations: tuple[Matcher, ...]

    def applies(self, source: Mapping[str, str], destination: Mapping[str, str]) -> bool:
        return any(m.matches(source) for m in self.sources) and any(
            m.matches(destination) for m in self.destinations
        )


@dataclass(frozen=True)
class Verdict:
    result: str  # one of RESULTS
    detail: str
    policy: str | None = None

    @property
    def allowed(self) -> bool:
        return self.result == OK


@dataclass(frozen=True)
class RelayRule:
    enabled: bool = False
    max_streams_per_source: int = 64
    policies: tuple[RelayPolicy, ...] = ()

    def decide(
        self,
        *,
        local: str,
        source: str,
        destination: str,
        source_attrs: Mapping[str, str],
        destination_attrs: Mapping[str, str],
        active: int,
        arrived_relayed: bool,
    ) -> Verdict:
        """The verdict for one relay request: ``source`` from the verified certificate,
        ``active`` its relayed streams open now, ``arrived_relayed`` the request came over a
        relayed link."""
        if not self.enabled:
            return Verdict(DISABLED, "relay is not enabled on this gateway")
        if arrived_relayed:
            return Verdict(LOOP, "a relayed stream is never relayed again")
        if destination in (local, source):
            return Verdict(LOOP, f"destination {destination!r} is the relay or the source")
        policy = decide_policies(self.policies, source_attrs, destination_attrs)
        if policy is None or not policy.allow:
            name = policy.name if policy is not None else None
            why = f"denied by relay policy {name!r}" if name else "no relay policy allows it"
            return Verdict(DENIED, f"{source} -> {destination}: {why}", name)
        if active >= self.max_streams_per_source:
            return Verdict(
                OVER_LIMIT,
                f"{source} holds {active} relayed streams (max {self.max_streams_per_source})",
                policy.name,
            )
        return Verdict(OK, f"allowed by relay policy {policy.name!r}", policy.name)


def decide_policies(
    policies: Sequence[RelayPolicy],
    source: Mapping[str, str],
    destination: Mapping[str, str],
) -> RelayPolicy | None:
    """The deciding policy: the first applicable deny, else the first applicable allow, else
    None (the default deny)."""
    allow: RelayPolicy | None = None
    for policy in policies:
        if policy.applies(source, destination):
            if not policy.allow:
                return policy
            if allow is None:
                allow = policy
    return allow


def via_refusal(local: str, peer: str, via: Sequence[str]) -> str | None:
    """Why a Peer's ``via`` list cannot be used from this gateway, or None (loop guard at the
    source: a chain naming ourselves or the destination)."""
    if local in via:
        return f"peer {peer!r}: via names this gateway ({local!r})"
    if peer in via:
        return f"peer {peer!r}: via names the peer itself"
    return None
