"""Dial on demand: who may dial a peer with no usable link, who waits, who is refused.

A socket-free state machine (times are plain floats from an injected clock). One per peer
pool. When a client needs a link and none is usable, the pool asks ``decide``:

* ``JOIN``   - a dial is in flight: wait for it (single flight, shared by every client);
* ``DIAL``   - start the one dial now (``started``, then ``finished`` with its outcome);
* ``WAIT``   - the backoff after a failed dial ends within the client's budget: sleep until
  ``until`` and ask again (the first to wake dials, the others join it);
* ``REFUSE`` - the backoff ends beyond the client's budget: refuse at once.

A failed dial makes the next one wait ``base * 2**(failures-1)`` seconds, capped at ``cap``;
a successful one clears the backoff. With ``cap`` below the client's budget no client is
refused while the peer is back: it waits for the next dial, which the peer then answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    JOIN = "join"
    DIAL = "dial"
    WAIT = "wait"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    action: Action
    until: float = 0.0  # WAIT: when to ask again; REFUSE: when the next dial may start


@dataclass
class OnDemand:
    """Single-flight and backoff state for the dials waiting clients trigger."""

    base: float = 0.05
    cap: float = 1.0
    in_flight: bool = False
    failures: int = 0
    next_dial: float = 0.0
    dials: int = 0  # dials started, for status and tests

    def decide(self, now: float, budget: float) -> Decision:
        """What a client with ``budget`` seconds left should do at ``now``."""
        if self.in_flight:
            return Decision(Action.JOIN)
        if now >= self.next_dial:
            return Decision(Action.DIAL)
        if self.next_dial - now < budget:
            return Decision(Action.WAIT, self.next_dial)
        return Decision(Action.REFUSE, self.next_dial)

    def started(self, now: float) -> None:
        self.in_flight = True
        self.dials += 1

    def finished(self, now: float, ok: bool) -> None:
        """Account the outcome of the dial in flight."""
        self.in_flight = False
        if ok:
            self.failures, self.next_dial = 0, now
            return
        self.failures += 1
        self.next_dial = now + self.backoff(self.failures)

    def backoff(self, failures: int) -> float:
        return 0.0 if failures <= 0 else min(self.base * 2.0 ** (failures - 1), self.cap)
