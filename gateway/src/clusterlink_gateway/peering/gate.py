"""Bounded cost for strangers: the count of unauthenticated connections on the peer port.

A connection is *unauthenticated* from its TCP accept until its TLS handshake ended (either
way). ``HandshakeGate`` caps how many there are at once, in total and per source (an IPv4
address, or an IPv6 /64: one host or site usually owns a whole /64), and says when a burst of
them has drained so that freed heap can be handed back to the system. It is socket-free; the
acceptor (``accept.PeerAcceptor``) does the I/O.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

MAX_HANDSHAKES = 512  # defaults of listen.max_handshakes / listen.max_handshakes_per_source
MAX_HANDSHAKES_PER_SOURCE = 64
TRIM_AFTER = 256  # a burst of at least this many unauthenticated connections that drained
TRIM_INTERVAL = 10.0  # to a quarter: trim the heap, at most once in this long


def source_key(host: str) -> str:
    """What the per-source cap counts by: the IPv4 address, or the /64 of an IPv6 address."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class HandshakeGate:
    """Admits or refuses one unauthenticated connection at a time; ``release`` when its
    handshake ended or it closed (exactly once per admitted connection)."""

    def __init__(
        self,
        max_total: int = MAX_HANDSHAKES,
        max_per_source: int = MAX_HANDSHAKES_PER_SOURCE,
        *,
        trim_after: int = TRIM_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_total < 1 or max_per_source < 1:
            raise ValueError("handshake caps must be at least 1")
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.trim_after = trim_after
        self._clock = clock
        self._by_source: dict[str, int] = {}
        self.pending = 0
        self.refused_total = 0  # refusals since start, by which cap
        self.refused_per_source = 0
        self._peak = 0  # highest ``pending`` since the last trim
        self._last_trim = float("-inf")

    def admit(self, host: str) -> str | None:
        """None if a connection from ``host`` may start its handshake, else why not."""
        if self.pending >= self.max_total:
            self.refused_total += 1
            return f"over listen.max_handshakes ({self.max_total}) unauthenticated connections"
        key = source_key(host)
        count = self._by_source.get(key, 0)
        if count >= self.max_per_source:
            self.refused_per_source += 1
            return (
                f"over listen.max_handshakes_per_source ({self.max_per_source}) "
                f"unauthenticated connections from {key}"
            )
        self._by_source[key] = count + 1
        self.pending += 1
        self._peak = max(self._peak, self.pending)
        return None

    def release(self, host: str) -> None:
        """One admitted connection from ``host`` is authenticated, refused or gone."""
        key = source_key(host)
        count = self._by_source.get(key, 0)
        if count <= 0:
            raise RuntimeError(f"release without admit for {key}")
        if count == 1:
            del self._by_source[key]
        else:
            self._by_source[key] = count - 1
        self.pending -= 1

    def from_source(self, host: str) -> int:
        """Unauthenticated connections now counted against ``host``'s source."""
        return self._by_source.get(source_key(host), 0)

    def trim_delay(self) -> float | None:
        """None if no burst drained; else seconds until the heap may be trimmed (0: now)."""
        if self._peak < self.trim_after or self.pending > self._peak // 4:
            return None
        return max(0.0, self._last_trim + TRIM_INTERVAL - self._clock())

    def trimmed(self) -> None:
        """The heap was trimmed: the next burst is measured from here."""
        self._last_trim = self._clock()
        self._peak = self.pending
