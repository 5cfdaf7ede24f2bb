"""Which heartbeat to send next: a socket-free decision for ``heartbeat.PeerMonitor``.

A full heartbeat (``GET /healthz``, a request on a new HTTP/2 stream answered with the peer's
labels and, for an outbound-only site, ``reverse_links``) costs both gateways a stream, header
compression, a handler and JSON; an HTTP/2 PING still wakes both processes and costs a TLS
record each way. Between them, a reachable peer's link is checked in the kernel (``TCP``:
keepalive probes answered by the peer's kernel, read back with ``TCP_INFO``; no process wakes
on the peer, see ``peering.liveness``), and nothing is sent when a request on its links was
answered within the last interval (the traffic itself proves the peer answers).

A full heartbeat is sent when the peer is not known reachable, after any failure (it also dials
on demand), when no link is up, and every ``full_every``-th probe (labels and the reverse-links
count stay current); a PING every ``ping_every``-th probe (a frozen peer process, whose kernel
still answers keepalives, fails it; its round trip is the RTT); the kernel check otherwise.
``full_every`` = 1 is the old behaviour (a request every time).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Probe(enum.Enum):
    FULL = "full"  # GET /healthz (dials on demand when no link is up)
    PING = "ping"  # HTTP/2 PING on a link that is up
    TCP = "tcp"  # the kernel's keepalive answers on a link that is up (TCP_INFO)
    SKIP = "skip"  # a request was answered within the interval: count it as a success


@dataclass
class ProbePlan:
    """Counts probes since the last full heartbeat and picks the next kind."""

    full_every: int = 30
    ping_every: int = 5
    since_full: int | None = None  # None: no full heartbeat succeeded yet
    last_ok: bool = False

    def decide(
        self,
        *,
        tick: int,
        reachable: bool | None,
        link_up: bool,
        answered_within_interval: bool,
    ) -> Probe:
        """The next probe for a peer whose verdict is ``reachable``. ``tick``: the number of
        the interval on the event loop's clock (``now // interval``), so that the PINGs and
        full heartbeats of all peers fall on the same ticks (one wake-up for all of them);
        ``link_up``: a usable link exists; ``answered_within_interval``: a request on its
        links was answered since the previous probe."""
        if (
            self.full_every <= 1
            or reachable is not True
            or not self.last_ok
            or not link_up
            or self.since_full is None
            or tick % self.full_every == 0
            or self.since_full >= self.full_every  # a missed tick (a slow probe)
        ):
            return Probe.FULL
        if answered_within_interval:
            return Probe.SKIP
        if self.ping_every <= 1 or tick % self.ping_every == 0:
            return Probe.PING
        return Probe.TCP

    def record(self, probe: Probe, ok: bool) -> None:
        """Account the result of ``probe``."""
        self.last_ok = ok
        if probe is Probe.FULL and ok:
            self.since_full = 0
        elif self.since_full is not None:
            self.since_full += 1


def next_tick(now: float, period: float) -> float:
    """The first multiple of ``period`` after ``now`` (the event loop's clock): monitors with
    the same period wake together, one wake-up of the process for all of them."""
    return (math.floor(now / period) + 1) * period
