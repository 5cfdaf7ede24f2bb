"""Load balancing across import sources (clusterlink.md 5.2; e2e scenarios 11-13)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Collection

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterlink_gateway.routing.loadbalancer import SCHEMES, LoadBalancer


def connect(
    lb: LoadBalancer,
    n: int,
    failing: Collection[int] = (),
    unreachable: Collection[int] = (),
) -> tuple[int | None, list[int]]:
    """One client connection: try yielded sources until one does not fail."""
    tried: list[int] = []
    for i in lb.attempts(n, lambda i: i not in unreachable):
        tried.append(i)
        if i not in failing:
            return i, tried
    return None, tried


def successes(lb: LoadBalancer, count: int, **kw: Collection[int]) -> list[int | None]:
    return [connect(lb, 3, **kw)[0] for _ in range(count)]


def test_unknown_scheme_rejected() -> None:
    with pytest.raises(ValueError, match="scheme"):
        LoadBalancer("ecmp")  # type: ignore[arg-type]
    assert LoadBalancer().scheme == "round-robin"
    assert set(SCHEMES) == {"round-robin", "random", "static"}


# --- scenario 11: round-robin -------------------------------------------------------------


def test_round_robin_all_healthy() -> None:
    lb = LoadBalancer("round-robin")
    assert successes(lb, 30) == [(i + 1) % 3 for i in range(30)]


def test_round_robin_first_source_failing() -> None:
    lb = LoadBalancer("round-robin")
    assert successes(lb, 30, failing={0}) == [1 + i % 2 for i in range(30)]


def test_round_robin_retry_is_current_plus_one_and_counts() -> None:
    lb = LoadBalancer("round-robin")
    assert connect(lb, 3) == (1, [1])  # counter 1
    assert connect(lb, 3) == (2, [2])  # counter 2
    assert connect(lb, 3, failing={0}) == (1, [0, 1])  # counter 3 and 4
    assert connect(lb, 3) == (2, [2])  # counter 5
    assert connect(lb, 3, failing={0, 1, 2}) == (None, [0, 1, 2])  # counter 6, 7, 8
    assert connect(lb, 3) == (0, [0])  # counter 9


def test_round_robin_two_failing() -> None:
    lb = LoadBalancer("round-robin")
    assert successes(lb, 30, failing={0, 1}) == [2] * 30


def test_round_robin_sequence_after_deletions() -> None:
    """Same balancer through the three phases of scenario 11 (counter persists)."""
    lb = LoadBalancer("round-robin")
    assert successes(lb, 30) == [1, 2, 0] * 10
    phase2 = successes(lb, 30, failing={0})
    assert set(phase2) == {1, 2}
    assert all(a != b for a, b in itertools.pairwise(phase2))  # alternates
    assert successes(lb, 30, failing={0, 1}) == [2] * 30


# --- scenario 12: static ------------------------------------------------------------------


def test_static() -> None:
    lb = LoadBalancer("static")
    assert successes(lb, 30) == [0] * 30
    assert successes(lb, 30, failing={0}) == [1] * 30
    assert successes(lb, 30, failing={0, 1}) == [2] * 30
    assert connect(lb, 3, failing={0, 1}) == (2, [0, 1, 2])
    assert connect(lb, 3, failing={0, 1, 2}) == (None, [0, 1, 2])


# --- scenario 13: random ------------------------------------------------------------------


def test_random_hits_all() -> None:
    lb = LoadBalancer("random", rng=random.Random(1))
    assert set(successes(lb, 100)) == {0, 1, 2}


def test_random_with_failing_source() -> None:
    lb = LoadBalancer("random", rng=random.Random(2))
    assert set(successes(lb, 30, failing={0})) == {1, 2}
    assert successes(lb, 30, failing={0, 1}) == [2] * 30


def test_random_default_rng() -> None:
    lb = LoadBalancer("random")
    results = successes(lb, 200)
    assert set(results) == {0, 1, 2}  # chance of missing one: ~3 * (2/3)**200


def test_random_retry_scans_forward() -> None:
    class Fixed(random.Random):
        def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
            return 1

    lb = LoadBalancer("random", rng=Fixed())
    assert connect(lb, 3, failing={1, 2}) == (0, [1, 2, 0])


# --- unreachable peers are deferred -------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unreachable_tried_last(scheme: str) -> None:
    lb = LoadBalancer(scheme, rng=random.Random(0))  # type: ignore[arg-type]
    for _ in range(20):
        ok, tried = connect(lb, 3, unreachable={0})
        assert ok in (1, 2) and 0 not in tried
        ok, tried = connect(lb, 3, failing={1, 2}, unreachable={0})
        assert ok == 0 and tried[-1] == 0 and sorted(tried) == [0, 1, 2]


def test_static_deferred_in_deferral_order() -> None:
    lb = LoadBalancer("static")
    assert connect(lb, 4, failing={0, 1, 2, 3}, unreachable={1, 2}) == (None, [0, 3, 1, 2])
    assert connect(lb, 4, failing={0, 3}, unreachable={1, 2}) == (1, [0, 3, 1])


def test_round_robin_deferral_counts_as_pick() -> None:
    lb = LoadBalancer("round-robin")
    # counter 1 -> index 1 deferred; counter 2 -> index 2 tried
    assert connect(lb, 3, unreachable={1}) == (2, [2])
    # counter 3 -> index 0 ok
    assert connect(lb, 3, unreachable={1}) == (0, [0])
    # all unreachable: drained in deferral order 1, 2, 0 (counter 4, 5, 6)
    assert connect(lb, 3, failing={1}, unreachable={0, 1, 2}) == (2, [1, 2])
    assert connect(lb, 3) == (1, [1])  # counter 7


# --- general properties -------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_sources(scheme: str) -> None:
    lb = LoadBalancer(scheme)  # type: ignore[arg-type]
    assert list(lb.attempts(0, lambda i: True)) == []
    assert list(lb.attempts(0, None)) == []


@pytest.mark.parametrize("scheme", SCHEMES)
def test_single_source(scheme: str) -> None:
    lb = LoadBalancer(scheme)  # type: ignore[arg-type]
    assert list(lb.attempts(1, lambda i: True)) == [0]
    assert list(lb.attempts(1, lambda i: False)) == [0]


def test_reachable_asked_lazily() -> None:
    asked: list[int] = []

    def reachable(i: int) -> bool:
        asked.append(i)
        return True

    lb = LoadBalancer("static")
    it = lb.attempts(5, reachable)
    assert next(it) == 0
    assert asked == [0]
    it.close()


def _reachability(flags: list[bool]) -> Callable[[int], bool]:
    return lambda i: flags[i]


@given(
    st.sampled_from(SCHEMES),
    st.integers(min_value=0, max_value=8).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.booleans(), min_size=n, max_size=n),
            st.sets(st.integers(0, max(n - 1, 0)), max_size=n),
        )
    ),
    st.integers(min_value=0, max_value=5),
    st.randoms(use_true_random=False),
)
def test_attempt_invariants(
    scheme: str,
    case: tuple[int, list[bool], set[int]],
    warmup: int,
    rnd: random.Random,
) -> None:
    n, flags, failing = case
    lb = LoadBalancer(scheme, rng=rnd)  # type: ignore[arg-type]
    for _ in range(warmup):  # arbitrary counter state
        connect(lb, n, failing=failing)
    tried = list(lb.attempts(n, _reachability(flags)))  # every yielded source fails
    # each index exactly once when all fail
    assert sorted(tried) == list(range(n))
    # reachable sources come first, unreachable ones last
    k = sum(flags)
    assert all(flags[i] for i in tried[:k])
    assert not any(flags[i] for i in tried[k:])
    # a connection fails only when every source failed
    ok, tried2 = connect(lb, n, failing=failing, unreachable={i for i in range(n) if not flags[i]})
    assert len(set(tried2)) == len(tried2)
    if len(failing) < n:
        assert ok is not None and ok not in failing
    else:
        assert ok is None
