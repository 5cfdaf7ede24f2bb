"""Splicing two HTTP/2 streams (a relay): a sans-IO state machine and its binding to streams.

``SpliceCore`` decides, for events of the two ends ``UP`` (the source's stream) and ``DOWN``
(the destination's stream), which actions to take: forward bytes, pause or resume reading
(flow control end to end: while one end cannot send, the other stops handing window back to
its sender), forward END_STREAM (half-close), reset the other end when one is reset. It
counts the bytes each way. ``StreamSplice`` binds it to two ``Stream`` objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from . import h2core
from .stream import Stream

UP, DOWN = 0, 1  # UP: the source's stream (bytes up: source -> destination)


def other(side: int) -> int:
    return 1 - side


@dataclass(frozen=True)
class Action:
    op: str  # write | eof | pause | resume | reset
    side: int  # the end it applies to
    data: bytes = b""


@dataclass
class SpliceCore:
    """The splice's state; every method returns the actions to apply, in order."""

    bytes_up: int = 0
    bytes_down: int = 0
    eof_in: list[bool] = field(default_factory=lambda: [False, False])  # END_STREAM received
    closed: list[bool] = field(default_factory=lambda: [False, False])
    failed: bool = False

    @property
    def done(self) -> bool:
        return all(self.closed)

    def data(self, side: int, data: bytes) -> list[Action]:
        if self.failed or self.closed[other(side)] or not data:
            return []
        if side == UP:
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)
        return [Action("write", other(side), data)]

    def send_blocked(self, side: int) -> list[Action]:
        """``side`` cannot take more (its window and buffer are full): stop reading the other."""
        return [] if self.failed else [Action("pause", other(side))]

    def send_unblocked(self, side: int) -> list[Action]:
        return [] if self.failed else [Action("resume", other(side))]

    def eof(self, side: int) -> list[Action]:
        """END_STREAM from ``side``: half-close towards the other end."""
        if self.failed or self.eof_in[side]:
            return []
        self.eof_in[side] = True
        return [Action("eof", other(side))]

    def stream_closed(self, side: int, error: bool) -> list[Action]:
        """``side``'s stream is gone (``error``: reset or link lost)."""
        if self.closed[side]:
            return []
        self.closed[side] = True
        if (error or not self.eof_in[side]) and not self.closed[other(side)]:
            self.failed = True
            return [Action("reset", other(side))]
        return []


class _End:
    """The ``StreamProtocol`` of one end, forwarding its events to the splice."""

    def __init__(self, splice: StreamSplice, side: int) -> None:
        self.splice = splice
        self.side = side

    def stream_data_received(self, data: bytes) -> None:
        self.splice._apply(self.splice.core.data(self.side, data), record=self.side)

    def stream_eof_received(self) -> None:
        self.splice._apply(self.splice.core.eof(self.side))

    def stream_closed(self, exc: Exception | None) -> None:
        self.splice._apply(self.splice.core.stream_closed(self.side, exc is not None))
        self.splice._maybe_done()

    def stream_pause_writing(self) -> None:
        self.splice._apply(self.splice.core.send_blocked(self.side))

    def stream_resume_writing(self) -> None:
        self.splice._apply(self.splice.core.send_unblocked(self.side))


class StreamSplice:
    """Two streams spliced; ``done`` resolves when both are closed. ``record`` (a test hook)
    gets every spliced chunk; ``tamper`` (a test hook) may rewrite chunks going up."""

    def __init__(
        self,
        up: Stream,
        down: Stream,
        *,
        record: Callable[[bytes], None] | None = None,
        tamper: Callable[[bytes], bytes] | None = None,
        count: Callable[[int, int], None] | None = None,
    ) -> None:
        self.core = SpliceCore()
        self.streams = (up, down)
        self.record = record
        self.tamper = tamper
        self.count = count  # (direction UP/DOWN, bytes) for every chunk spliced
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        down.set_protocol(_End(self, DOWN))
        up.set_protocol(_End(self, UP))

    def _apply(self, actions: list[Action], record: int | None = None) -> None:
        for action in actions:
            stream = self.streams[action.side]
            if action.op == "write":
                data = action.data
                if self.record is not None:
                    self.record(data)
                if self.count is not None:
                    self.count(other(action.side), len(data))
                if self.tamper is not None and record == UP:
                    data = self.tamper(data)
                stream.write(data)
            elif action.op == "eof":
                stream.write_eof()
            elif action.op == "pause":
                stream.pause_reading()
            elif action.op == "resume":
                stream.resume_reading()
            elif action.op == "reset":
                stream.reset(h2core.CANCEL)

    def _maybe_done(self) -> None:
        if self.core.done and not self.done.done():
            self.done.set_result(None)

    def reset(self) -> None:
        for stream in self.streams:
            stream.reset(h2core.CANCEL)
