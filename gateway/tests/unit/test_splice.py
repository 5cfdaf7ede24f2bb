"""The splice state machine of a relay (no sockets): bytes both ways with counters, flow
control end to end, half-close preserved, a reset on either end resets the other."""

from __future__ import annotations

from clusterlink_gateway.peering.splice import DOWN, UP, Action, SpliceCore


def test_bytes_go_to_the_other_end_and_are_counted() -> None:
    core = SpliceCore()
    assert core.data(UP, b"hello") == [Action("write", DOWN, b"hello")]
    assert core.data(DOWN, b"hi") == [Action("write", UP, b"hi")]
    assert core.data(UP, b"") == []
    assert (core.bytes_up, core.bytes_down) == (5, 2)


def test_flow_control_is_end_to_end() -> None:
    core = SpliceCore()
    # the destination's stream cannot take more: stop handing window back to the source
    assert core.send_blocked(DOWN) == [Action("pause", UP)]
    assert core.send_unblocked(DOWN) == [Action("resume", UP)]
    assert core.send_blocked(UP) == [Action("pause", DOWN)]


def test_half_close_is_forwarded_and_the_other_way_keeps_flowing() -> None:
    core = SpliceCore()
    assert core.eof(UP) == [Action("eof", DOWN)]
    assert core.eof(UP) == []  # once
    assert core.data(DOWN, b"answer") == [Action("write", UP, b"answer")]
    assert core.eof(DOWN) == [Action("eof", UP)]
    assert core.stream_closed(UP, error=False) == []
    assert core.stream_closed(DOWN, error=False) == []
    assert core.done and not core.failed


def test_a_reset_on_either_end_resets_the_other() -> None:
    for side in (UP, DOWN):
        core = SpliceCore()
        core.data(UP, b"x")
        assert core.stream_closed(side, error=True) == [Action("reset", 1 - side)]
        assert core.failed
        assert core.data(1 - side, b"late") == []  # nothing more is forwarded
        assert core.stream_closed(1 - side, error=True) == []
        assert core.done


def test_an_end_closing_without_its_end_stream_counts_as_a_reset() -> None:
    core = SpliceCore()
    assert core.stream_closed(DOWN, error=False) == [Action("reset", UP)]
    assert core.failed
