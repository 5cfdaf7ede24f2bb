"""Peer reachability from heartbeats: a socket-free state machine and the task that drives it.

Rules (upstream ClusterLink): probe every ``interval`` (1 s) while reachable and every
``unreachable_interval`` (10 s) while not; ``failures_down`` (5) consecutive failures mark a
peer unreachable, ``successes_up`` (3) consecutive successes mark it reachable again. The
first result after start decides at once (state unknown -> known). While an unreachable peer
is recovering (some successes, not yet enough) it is probed at the fast interval. A link that
comes up while the peer is not known reachable (e.g. a client's dial on demand) wakes the
monitor for a probe at once, so that reachability follows the link instead of the slow interval.

Which probe is sent is ``probing.ProbePlan``'s choice: a full ``GET /healthz`` every
``full_every``-th probe (and whenever the peer is not known reachable or the previous probe
failed), an HTTP/2 PING every ``ping_every``-th, the kernel's keepalive view of a link
(``TCP_INFO``: an answer within ``interval`` + ``timeout``) otherwise, nothing when a request on
its links was answered since the previous probe. Each counts as one result above.

A peer that holds us as an outbound-only site (its Peer for us has ``dial: false``) says in its
answer how many reverse links it wants (``reverse_links``); ``on_reverse`` gets that figure
(0 when it does not say).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Heartbeat
from ..peering import PeerPool
from .probing import Probe, ProbePlan, next_tick

log = logging.getLogger("clusterlink.heartbeat")


@dataclass
class Reachability:
    """Counts consecutive results and decides reachable / unreachable / unknown (None)."""

    failures_down: int = 5
    successes_up: int = 3
    reachable: bool | None = None
    failures: int = 0
    successes: int = 0

    def record(self, success: bool) -> bool:
        """Account one probe result; True when the verdict changed."""
        if success:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0
        before = self.reachable
        if self.reachable is None:
            self.reachable = success
        elif self.reachable and self.failures >= self.failures_down:
            self.reachable = False
        elif not self.reachable and self.successes >= self.successes_up:
            self.reachable = True
        return self.reachable != before

    def forget(self) -> None:
        """Back to unknown: what was learned no longer describes the peer (its path changed)."""
        self.reachable = None
        self.failures = self.successes = 0

    def next_interval(self, fast: float, slow: float) -> float:
        if self.reachable is None or self.reachable or self.successes:
            return fast
        return slow


@dataclass
class PeerHealth:
    """What the monitor learned about one peer (shown in its status)."""

    state: Reachability
    last_seen: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    rtt_ms: float | None = None
    error: str | None = None


class PeerMonitor:
    """Probes one peer with ``GET /healthz`` over its pool until stopped."""

    def __init__(
        self,
        name: str,
        pool: PeerPool,
        timings: Heartbeat,
    ) -> None:
        self.name = name
        self.pool = pool
        self.timings = timings
        self.health = PeerHealth(Reachability(timings.failures_down, timings.successes_up))
        self.plan = ProbePlan(timings.full_every, timings.ping_every)
        self.probes = {kind: 0 for kind in Probe}  # sent, by kind (the bench reads them)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.on_reverse: Callable[[int], None] | None = None
        pool.on_link_up = self.link_up

    def link_up(self) -> None:
        """The pool has a new link: probe now unless the peer is already known reachable."""
        if self.health.state.reachable is not True:
            self._wake.set()

    def path_changed(self) -> None:
        """The Peer's path changed (dial, endpoints or relays): its reachability is unknown
        until the next heartbeat over the new path, which is sent now. Without this, status
        would say "reachable" from the old path for up to ``failures_down`` intervals."""
        self.health.state.forget()
        self.health.error = None
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"hb-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def probe(self) -> bool:
        """The next heartbeat, of the kind the plan picks; True on success."""
        loop = asyncio.get_running_loop()
        self.plan.full_every = self.timings.full_every  # live on SIGHUP
        self.plan.ping_every = self.timings.ping_every
        kind = self.plan.decide(
            tick=round(loop.time() / self.timings.interval),
            reachable=self.health.state.reachable,
            link_up=self.pool.connected,
            answered_within_interval=loop.time() - self.pool.last_answer < self.timings.interval,
        )
        self.probes[kind] += 1
        if kind is Probe.FULL:
            ok = await self.full_probe()
        elif kind is Probe.TCP:
            ok = self.tcp_probe()
            if ok is None:  # no TCP_INFO here
                ok = await self.ping_probe()
        elif kind is Probe.PING:
            ok = await self.ping_probe()
        else:
            ok = True
            self._seen()
        self.plan.record(kind, ok)
        return ok

    def tcp_probe(self) -> bool | None:
        """A link whose peer's kernel answered within ``interval`` + ``timeout`` (keepalive
        probes every ``interval``, at least 1 s); None where ``TCP_INFO`` is not available."""
        idle = max(1, round(self.timings.interval))
        info = self.pool.tcp_liveness(idle)
        if info is None:
            return None if self.pool.connected else False
        if info.last_ack_s > idle + self.timings.timeout:
            self.health.error = f"no TCP answer for {info.last_ack_s:.1f} s"
            return False
        self._seen()
        return True

    async def ping_probe(self) -> bool:
        """An HTTP/2 PING on a link that is up; its round trip is the RTT."""
        try:
            async with asyncio.timeout(self.timings.timeout):
                rtt = await self.pool.ping()
        except (OSError, TimeoutError) as exc:
            self.health.error = f"ping: {exc}" if str(exc) else "ping timed out"
            return False
        self.health.rtt_ms = round(rtt * 1000, 3)
        self._seen()
        return True

    def _seen(self) -> None:
        self.health.last_seen = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.health.error = None

    async def full_probe(self) -> bool:
        """``GET /healthz``; records labels and round-trip time on success."""
        started = time.monotonic()
        try:
            resp = await self.pool.request(
                "GET", "/healthz", timeout=self.timings.timeout, wait_redial=False
            )
            if resp.status != 200:
                raise ConnectionError(f"healthz answered {resp.status}")
            body = json.loads(resp.body)
            labels = body.get("labels") or {}
            if not isinstance(labels, dict):
                raise ValueError("labels is not an object")
            reverse = body.get("reverse_links", 0)
            if not isinstance(reverse, int) or isinstance(reverse, bool) or not 0 <= reverse <= 64:
                raise ValueError("reverse_links is not a count")
        except (OSError, TimeoutError, ValueError) as exc:
            self.health.error = str(exc) or type(exc).__name__
            return False
        self.health.rtt_ms = round((time.monotonic() - started) * 1000, 3)
        self.health.labels = {str(k): str(v) for k, v in labels.items()}
        self._seen()
        if self.on_reverse is not None:
            self.on_reverse(reverse)
        return True

    async def _run(self) -> None:
        state = self.health.state
        loop = asyncio.get_running_loop()
        while True:
            ok = await self.probe()
            if state.record(ok):
                log.info(
                    "peer reachability changed",
                    extra={
                        "peer": self.name,
                        "reachable": state.reachable,
                        "error": self.health.error,
                    },
                )
            pause = state.next_interval(self.timings.interval, self.timings.unreachable_interval)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                # On a grid of ``pause`` (no task per wait, unlike wait_for): the monitors of
                # every peer wake in one event-loop iteration instead of one wake-up each.
                async with asyncio.timeout_at(next_tick(loop.time(), pause)):
                    await self._wake.wait()
