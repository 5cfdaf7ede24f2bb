"""Socket-free load balancing across an import's sources (clusterlink.md section 5.2).

One ``LoadBalancer`` per import holds the round-robin counter (process memory only).
For each client connection, iterate ``attempts()``: try the yielded source index and
``break`` on success; resuming the iterator marks the last index as failed.

    for i in lb.attempts(len(sources), lambda i: peers.reachable(sources[i].peer)):
        if await try_source(sources[i]):
            break
    else:
        reset_client()

Sources whose peer is not reachable are deferred and tried only after every other
source failed, in the order they were deferred. Each index is yielded at most once.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from typing import Literal, get_args

Scheme = Literal["round-robin", "random", "static"]
SCHEMES: tuple[str, ...] = get_args(Scheme)
DEFAULT_SCHEME: Scheme = "round-robin"


def _always(_: int) -> bool:
    return True


class LoadBalancer:
    """Per-import source selection state and the per-connection attempt sequence."""

    __slots__ = ("_counter", "_rng", "_scheme")

    def __init__(self, scheme: Scheme = DEFAULT_SCHEME, rng: random.Random | None = None):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown load-balancing scheme {scheme!r}")
        self._scheme = scheme
        self._rng = rng if rng is not None else random.Random()
        self._counter = 0

    @property
    def scheme(self) -> Scheme:
        return self._scheme

    def attempts(
        self, n_sources: int, reachable: Callable[[int], bool] | None = None
    ) -> Iterator[int]:
        """Yield source indices to try, in order, for one client connection."""
        return self._attempts(n_sources, reachable or _always)

    def _attempts(self, n: int, reachable: Callable[[int], bool]) -> Iterator[int]:
        current: int | None = None
        failed: set[int] = set()
        delayed: deque[int] = deque()
        while True:
            # select(): the previous pick (tried or deferred) counts as failed.
            if current is not None:
                failed.add(current)
            if len(failed) >= n:
                break
            current = self._pick(n, current, failed)
            if reachable(current):
                yield current
            else:
                delayed.append(current)
        # Everything else failed: drain the deferred sources in deferral order.
        yield from delayed

    def _pick(self, n: int, current: int | None, failed: set[int]) -> int:
        scheme = self._scheme
        if scheme == "round-robin":
            # Counter moves on every pick, retries included; a retry takes current + 1.
            self._counter += 1
            return self._counter % n if current is None else (current + 1) % n
        if scheme == "static":
            return 0 if current is None else current + 1
        i = self._rng.randrange(n)
        while i in failed:
            i = (i + 1) % n
        return i
