"""The splice state machine of a relay (no sockets): bytes both ways with counters, flow
control end to end, half-close preserved, a reset on either end resets the other."""

from __future__ import annotations

from typing import Any

import pytest

from clusterlink_gateway.peering.splice import DOWN, UP, Action, SpliceCore, StreamSplice
from clusterlink_gateway.peering.stream import StreamError


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


class FakeStream:
    """Records what the splice does to a stream; ``protocol`` is the splice's end."""

    def __init__(self) -> None:
        self.protocol: Any = None
        self.written: list[bytes] = []
        self.calls: list[str] = []

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def write_eof(self) -> None:
        self.calls.append("eof")

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def reset(self, code: int = 8) -> None:
        self.calls.append("reset")


@pytest.mark.asyncio
async def test_stream_splice_applies_the_core_to_two_streams() -> None:
    up, down = FakeStream(), FakeStream()
    recorded: list[bytes] = []
    counted: list[tuple[int, int]] = []
    splice = StreamSplice(
        up,  # type: ignore[arg-type]
        down,  # type: ignore[arg-type]
        record=recorded.append,
        count=lambda side, n: counted.append((side, n)),
    )
    up.protocol.stream_data_received(b"ciphertext")
    assert down.written == [b"ciphertext"] and recorded == [b"ciphertext"]
    assert counted == [(UP, 10)]
    down.protocol.stream_pause_writing()  # the destination's window is used up
    assert up.calls == ["pause"]
    down.protocol.stream_resume_writing()
    assert up.calls == ["pause", "resume"]
    up.protocol.stream_eof_received()
    assert down.calls == ["eof"]
    down.protocol.stream_data_received(b"answer")
    assert up.written == [b"answer"] and counted[-1] == (DOWN, 6)
    down.protocol.stream_closed(StreamError("reset", 8))
    assert up.calls[-1] == "reset" and not splice.done.done()
    up.protocol.stream_closed(StreamError("reset", 8))
    assert splice.done.done() and splice.core.failed
