"""The reachability state machine: 5 failures down, 3 successes up, 1 s / 10 s intervals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterlink_gateway.config import Heartbeat
from clusterlink_gateway.dataplane.heartbeat import PeerMonitor, Reachability


def run(results: list[bool]) -> list[bool | None]:
    state = Reachability()
    out = []
    for ok in results:
        state.record(ok)
        out.append(state.reachable)
    return out


def test_first_result_decides() -> None:
    assert run([True]) == [True]
    assert run([False]) == [False]


def test_five_failures_mark_down() -> None:
    states = run([True] + [False] * 5)
    assert states == [True, True, True, True, True, False]


def test_a_success_resets_the_failure_count() -> None:
    assert run([True, False, False, False, False, True, False, False, False, False])[-1] is True


def test_three_successes_mark_up() -> None:
    states = run([False, True, True, True])
    assert states == [False, False, False, True]
    assert run([False, True, True, False, True, True])[-1] is False


def test_intervals() -> None:
    state = Reachability()
    assert state.next_interval(1, 10) == 1  # unknown: find out fast
    state.record(True)
    assert state.next_interval(1, 10) == 1
    for _ in range(5):
        state.record(False)
    assert state.reachable is False and state.next_interval(1, 10) == 10
    state.record(True)  # recovering: probe fast until 3 successes
    assert state.reachable is False and state.next_interval(1, 10) == 1
    state.record(False)
    assert state.next_interval(1, 10) == 10


def test_record_reports_changes_only() -> None:
    state = Reachability()
    assert state.record(True) is True
    assert [state.record(False) for _ in range(5)] == [False, False, False, False, True]
    assert [state.record(True) for _ in range(3)] == [False, False, True]


@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_verdict_only_flips_on_a_full_run(results: list[bool]) -> None:
    """Reachable only after >= 3 straight successes (or the first result); down only after 5."""
    state = Reachability()
    streak_ok = streak_fail = 0
    for i, ok in enumerate(results):
        before = state.reachable
        changed = state.record(ok)
        streak_ok = streak_ok + 1 if ok else 0
        streak_fail = 0 if ok else streak_fail + 1
        if changed and i > 0:
            if state.reachable:
                assert streak_ok >= 3
            else:
                assert streak_fail >= 5
        assert changed == (before != state.reachable)


class _Pool:
    """Stands in for a PeerPool: answers /healthz when ``up``; the monitor sets on_link_up."""

    def __init__(self) -> None:
        self.up = False
        self.on_link_up: object = None
        self.last_answer = 0.0

    @property
    def connected(self) -> bool:
        return self.up

    async def request(self, *args: object, **kwargs: object) -> object:
        if not self.up:
            raise ConnectionError("refused")
        return SimpleNamespace(status=200, body=b'{"labels": {}}')


async def _until(condition: Callable[[], bool]) -> None:
    for _ in iter(condition, True):  # polls: the monitor has no event to wait on
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_a_new_link_wakes_the_monitor_of_an_unreachable_peer() -> None:
    """Reachability follows a link that comes up (e.g. a client's dial on demand) at the fast
    interval instead of waiting out the slow unreachable interval (60 s here)."""
    pool = _Pool()
    timings = Heartbeat(interval=0.01, unreachable_interval=60, failures_down=1, successes_up=3)
    monitor = PeerMonitor("p", pool, timings)  # type: ignore[arg-type]
    assert pool.on_link_up == monitor.link_up
    monitor.start()
    try:
        async with asyncio.timeout(10):
            await _until(lambda: monitor.health.state.reachable is False)
            pool.up = True
            monitor.link_up()
            await _until(lambda: monitor.health.state.reachable is True)
    finally:
        await monitor.stop()
