"""Who may hold a link on the peer port once its certificate verified: the admission rule.

A client certificate that chained to the fabric CA is admitted only if it names its site in a
DNS SAN (the first one is the peer's identity; a CN is never used) and, unless the gateway runs
an open fabric (``listen.open_fabric``), that name is a Peer object here. The peering room does
not know the registry: the data plane passes ``is_peer``, a predicate over names.

``decide`` is the pure rule; ``Admission`` applies it to a handshaken TLS object. Before the
Peer allowlist, ``binding`` (``TLSContexts.bind``, the rule of ``anchors``) says whether the
certificate's issuer may speak for its name at all (reason ``wrong-anchor``); it is None, and
costs nothing, while no Peer carries its own trust anchors. The verdict of an admitted link
says whether it chains to the fabric CA (``fabric``): false for a Peer with ``spec.trust`` (the
exporter then ignores its client attributes by default).

``RefusalLog`` rate-limits the log line of a refusal to one per (reason, name) and window.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Reason classes of a refusal after a verified handshake (clusterlink_peer_handshake_failures).
UNKNOWN_PEER = "unknown-peer"  # its name is not a Peer object here (closed fabric)
NO_DNS_SAN = "no-dns-san"  # its certificate names no site in a DNS SAN (CN only, or nothing)
WRONG_ANCHOR = "wrong-anchor"  # its issuer is not an anchor bound to its name (see anchors)
REASONS = (UNKNOWN_PEER, NO_DNS_SAN, WRONG_ANCHOR)

PeerPredicate = Callable[[str], bool]


@dataclass(frozen=True)
class Admitted:
    """An admitted link: the peer's name and whether its certificate chains to the fabric CA."""

    name: str
    fabric: bool = True


@dataclass(frozen=True)
class Refused:
    """A refused link: reason class, a short detail for the log, the name it claimed (if any)."""

    reason: str
    detail: str
    name: str | None = None


Verdict = Admitted | Refused

# Given the verified peer's ssl object: may it hold a link (on an accepted transport)?
AdmitHook = Callable[[Any], Verdict]
# Given the ssl object and the name it claims: the anchor binding's verdict (None: no foreign
# anchor is configured, the fabric CA vouches for every name as before).
Binding = Callable[[Any, str], "Verdict | None"]


def dns_name(cert: dict[str, Any] | None) -> str | None:
    """The first DNS SAN of a certificate as ``getpeercert()`` describes it; None if none."""
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind == "DNS" and value:
            return str(value)
    return None


def common_name(cert: dict[str, Any] | None) -> str | None:
    """The subject CN (only to name a refused certificate in the log, never as identity)."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)
    return None


def decide(
    cert: dict[str, Any] | None,
    *,
    is_peer: PeerPredicate | None,
    open_fabric: bool,
    fabric: bool = True,
) -> Verdict:
    """The admission rule for a verified client certificate (``getpeercert()`` form).

    ``is_peer`` None means no Peer list is known (a bare peer server): like an open fabric.
    """
    name = dns_name(cert)
    if name is None:
        cn = common_name(cert)
        detail = f"certificate (CN {cn!r}) has no DNS SAN" if cn else "certificate has no name"
        return Refused(NO_DNS_SAN, detail, cn)
    if not open_fabric and is_peer is not None and not is_peer(name):
        return Refused(UNKNOWN_PEER, f"{name!r} is not a Peer on this gateway", name)
    return Admitted(name, fabric)


class Admission:
    """The admission rule with this gateway's settings, applied to a TLS object."""

    def __init__(
        self,
        is_peer: PeerPredicate | None = None,
        *,
        open_fabric: bool = False,
        binding: Binding | None = None,
    ) -> None:
        self.is_peer = is_peer
        self.open_fabric = open_fabric
        self.binding = binding

    def admits(self, name: str) -> bool:
        """Whether a link from ``name`` (already named by a DNS SAN) may stay up."""
        return self.open_fabric or self.is_peer is None or self.is_peer(name)

    def check(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Verdict:
        cert: dict[str, Any] | None = None
        if ssl_object is not None:
            try:
                cert = ssl_object.getpeercert()  # type: ignore[assignment]
            except (ValueError, ssl.SSLError):
                cert = None
        fabric = True
        name = dns_name(cert)
        if name is not None and self.binding is not None:
            bound = self.binding(ssl_object, name)
            if isinstance(bound, Refused):
                return bound
            fabric = bound is None or bound.fabric
        return decide(cert, is_peer=self.is_peer, open_fabric=self.open_fabric, fabric=fabric)


OPEN = Admission()  # any DNS SAN name (bare peer servers, tests)


class RefusalLog:
    """Allows one log line per (reason, name) per ``window`` seconds; counts the rest.

    ``allow`` returns (log it?, lines swallowed for that key since its last line). Keys are
    forgotten once their window passed, and at most ``max_keys`` are kept (the oldest go first),
    so a flood of names costs bounded memory.
    """

    def __init__(
        self,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 4096,
    ) -> None:
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[tuple[str, str], list[float | int]] = {}  # key -> [since, swallowed]

    def allow(self, reason: str, name: str | None) -> tuple[bool, int]:
        now = self.clock()
        key = (reason, name or "")
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window:
            entry[1] += 1
            return False, 0
        swallowed = int(entry[1]) if entry is not None else 0
        self._seen.pop(key, None)
        self._prune(now)
        self._seen[key] = [now, 0]
        return True, swallowed

    def __len__(self) -> int:
        return len(self._seen)

    def _prune(self, now: float) -> None:
        if len(self._seen) < self.max_keys:
            return
        for key in [k for k, (since, _) in self._seen.items() if now - since >= self.window]:
            del self._seen[key]
        while len(self._seen) >= self.max_keys:  # insertion order: oldest first
            del self._seen[next(iter(self._seen))]
