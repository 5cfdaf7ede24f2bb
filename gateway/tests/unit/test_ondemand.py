"""The dial-on-demand state machine: single flight, backoff, who waits and who is refused."""

from __future__ import annotations

from clusterlink_gateway.peering.ondemand import Action, OnDemand


def test_first_client_dials_the_others_join() -> None:
    sm = OnDemand(base=0.05, cap=1.0)
    assert sm.decide(0.0, 3.0).action is Action.DIAL
    sm.started(0.0)
    assert [sm.decide(t, 3.0).action for t in (0.01, 0.5, 2.9)] == [Action.JOIN] * 3
    sm.finished(0.2, ok=True)
    assert sm.decide(0.2, 3.0).action is Action.DIAL and sm.dials == 1


def test_failed_dials_back_off_exponentially_up_to_the_cap() -> None:
    sm = OnDemand(base=0.05, cap=1.0)
    now, gaps = 0.0, []
    for _ in range(8):
        assert sm.decide(now, 10.0).action is Action.DIAL
        sm.started(now)
        sm.finished(now, ok=False)
        decision = sm.decide(now, 10.0)
        assert decision.action is Action.WAIT
        gaps.append(round(decision.until - now, 3))
        now = decision.until
    assert gaps == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_waits_for_the_next_dial_only_within_its_budget() -> None:
    sm = OnDemand(base=0.5, cap=4.0)
    for _ in range(4):  # backoff now 4 s
        sm.started(0.0)
        sm.finished(0.0, ok=False)
    assert sm.decide(0.0, 3.0).action is Action.REFUSE  # next dial in 4 s, budget 3 s
    assert sm.decide(0.0, 3.0).until == 4.0
    waiting = sm.decide(1.5, 3.0)
    assert waiting.action is Action.WAIT and waiting.until == 4.0
    assert sm.decide(4.0, 3.0).action is Action.DIAL


def test_a_success_clears_the_backoff() -> None:
    sm = OnDemand(base=0.05, cap=1.0)
    for t in range(5):
        sm.started(float(t))
        sm.finished(float(t), ok=False)
    sm.started(10.0)
    sm.finished(10.0, ok=True)
    assert sm.failures == 0 and sm.decide(10.0, 0.0).action is Action.DIAL
    sm.started(11.0)
    sm.finished(11.0, ok=False)
    assert sm.decide(11.0, 1.0).until == 11.05  # starts again from the base
