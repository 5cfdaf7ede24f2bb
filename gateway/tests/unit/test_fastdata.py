"""The DATA shortcut (``peering/fastdata.py``): the same bytes on the wire, the same events
and the same flow-control state as through ``h2``, and every frame it must not take goes to
``h2``. Bytes only: no sockets, no event loop."""

from __future__ import annotations

import h2.connection
import h2.errors
import h2.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterlink_gateway.peering import fastdata, h2core
from clusterlink_gateway.peering.h2core import (
    ConnectionFailed,
    DataReceived,
    H2Core,
    Limits,
    RequestReceived,
    ResponseReceived,
    StreamClosed,
)


class Pair:
    """A client core and a server core joined by an in-memory wire; ``shortcut`` on or off."""

    def __init__(self, shortcut: bool = True, limits: Limits | None = None) -> None:
        self.c = H2Core(client_side=True, limits=limits)
        self.s = H2Core(client_side=False, limits=limits)
        self.c.initiate()
        self.s.initiate()
        self.c._shortcut.enabled = self.s._shortcut.enabled = shortcut
        self.wire: list[bytes] = []  # everything sent, both ways, in order
        self.events: list[h2core.Event] = []
        self.pump()

    def pump(self) -> None:
        for _ in range(20):
            to_s, to_c = self.c.data_to_send(), self.s.data_to_send()
            if not to_s and not to_c:
                return
            self.wire += [b"C" + to_s, b"S" + to_c]
            if to_s:
                self.events += self.s.receive(to_s)
            if to_c:
                self.events += self.c.receive(to_c)
        raise AssertionError("cores kept talking")

    def connect(self) -> int:
        sid = self.c.open_stream("CONNECT", "cl1:443")
        self.pump()
        assert any(isinstance(e, RequestReceived) for e in self.events)
        self.s.send_response(sid, 200)
        self.pump()
        assert any(isinstance(e, ResponseReceived) for e in self.events)
        self.events.clear()
        return sid


def windows(core: H2Core, sid: int) -> tuple[int, ...]:
    conn = core._h2
    stream = conn.streams[sid]
    return (
        conn.outbound_flow_control_window,
        stream.outbound_flow_control_window,
        conn._inbound_flow_control_window_manager.current_window_size,
        stream._inbound_window_manager.current_window_size,
    )


def test_the_shortcut_is_supported_by_the_pinned_h2() -> None:
    core = H2Core(client_side=True)
    core.initiate()
    assert fastdata.supported(core._h2)
    assert core._shortcut.enabled


def test_small_data_skips_h2_both_ways() -> None:
    p = Pair()
    sid = p.connect()
    calls: list[str] = []
    for side, conn in (("c", p.c._h2), ("s", p.s._h2)):
        send, recv = conn.send_data, conn.receive_ready_data
        conn.send_data = lambda *a, _f=send, _s=side, **k: (
            calls.append(_s + " send"),
            _f(*a, **k),
        )[1]  # type: ignore[method-assign]
        conn.receive_ready_data = lambda *a, _f=recv, _s=side: (calls.append(_s + " recv"), _f(*a))[
            1
        ]  # type: ignore[method-assign]
    for _ in range(3):
        p.c.send_data(sid, b"ping" * 16)
        p.pump()
        p.s.send_data(sid, b"pong" * 16)
        p.pump()
    got = [(e.stream_id, e.data, e.flow_len) for e in p.events if isinstance(e, DataReceived)]
    assert got == [(sid, b"ping" * 16, 64), (sid, b"pong" * 16, 64)] * 3
    assert calls == []  # neither h2's send_data nor its frame processing ran


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.booleans(), st.integers(min_value=1, max_value=6000), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_same_wire_events_and_windows_as_h2(steps: list[tuple[bool, int, bool]]) -> None:
    """Any sequence of writes (either way, sizes around the shortcut's limit and the windows),
    acknowledged or not: byte-identical to h2's own handling."""
    limits = Limits(stream_window=20_000, connection_window=70_000, max_frame_size=16384)
    pairs = [Pair(shortcut=True, limits=limits), Pair(shortcut=False, limits=limits)]
    sids = [p.connect() for p in pairs]
    for from_client, size, ack in steps:
        for p, sid in zip(pairs, sids, strict=True):
            sender, receiver = (p.c, p.s) if from_client else (p.s, p.c)
            sender.send_data(sid, bytes([size % 251]) * size)
            p.pump()
            if ack:
                for e in p.events:
                    if isinstance(e, DataReceived):
                        receiver.ack(e.stream_id, e.flow_len)
                p.pump()
    fast, slow = pairs
    assert fast.wire == slow.wire
    assert [repr(e) for e in fast.events] == [repr(e) for e in slow.events]
    for core_f, core_s in ((fast.c, slow.c), (fast.s, slow.s)):
        assert windows(core_f, sids[0]) == windows(core_s, sids[1])


def test_a_peer_overrunning_the_stream_window_fails_the_link() -> None:
    p = Pair(limits=Limits(stream_window=1000))
    sid = p.connect()
    frame = fastdata.frame_header(sid, 1500) + b"x" * 1500  # a peer ignoring our window
    events = p.s.receive(frame)
    failed = [e for e in events if isinstance(e, ConnectionFailed)]
    assert failed and failed[0].error_code == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR
    assert p.s.failed
    assert not any(isinstance(e, DataReceived) for e in events)


def test_data_after_the_peer_half_closed_goes_to_h2_and_resets_the_stream() -> None:
    p = Pair()
    sid = p.connect()
    p.c.end_stream(sid)
    p.pump()
    p.events.clear()
    # The client already sent END_STREAM: more DATA on that stream is a stream error.
    events = p.s.receive(fastdata.frame_header(sid, 4) + b"late")
    assert not any(isinstance(e, DataReceived) for e in events)
    assert any(isinstance(e, StreamClosed) and e.stream_id == sid for e in events)
    assert not p.s.failed


def test_send_declines_what_it_must_not_take() -> None:
    p = Pair(limits=Limits(stream_window=100))
    sid = p.connect()
    shortcut = p.c._shortcut
    assert not shortcut.send(sid, b"")  # nothing to frame
    assert not shortcut.send(sid, b"x" * (fastdata.SEND_MAX + 1))  # the zero-copy path's
    assert not shortcut.send(sid, b"x" * 101)  # above the peer's stream window
    assert not shortcut.send(sid + 2, b"x")  # no such stream
    assert shortcut.send(sid, b"x" * 100)
    assert not shortcut.send(sid, b"x")  # the window is used up
    p.c.end_stream(sid)
    assert not shortcut.send(sid, b"x")  # half-closed (local)


def test_frame_header() -> None:
    assert fastdata.frame_header(3, 64) == bytes([0, 0, 64, 0, 0, 0, 0, 0, 3])
    assert fastdata.frame_header(2**31 - 1, 2**24 - 1, 1)[3:5] == bytes([0, 1])
    assert isinstance(h2.exceptions.FlowControlError(), h2.exceptions.ProtocolError)
    assert h2.connection.H2Connection  # the shortcut reads its state: pinned version only


def test_a_chunk_that_is_exactly_one_data_frame_is_cut_without_the_walk() -> None:
    framer = h2core._Framer(server=False, max_frame=16384, max_header=16384, fast=True)
    frame = fastdata.frame_header(5, 3, flags=1) + b"abc"
    [item] = framer.feed(frame)
    assert isinstance(item, h2core._Data)
    assert (item.stream_id, item.end_stream, item.payload) == (5, True, b"abc")
    # not exactly one frame: the general walk (same result for the whole, split or joined)
    assert h2core._whole_data_frame(frame + b"x", 16384) is None
    assert h2core._whole_data_frame(frame[:-1], 16384) is None
    assert h2core._whole_data_frame(fastdata.frame_header(0, 3) + b"abc", 16384) is None
    assert h2core._whole_data_frame(fastdata.frame_header(5, 3, flags=0x8) + b"abc", 16384) is None
    assert h2core._whole_data_frame(fastdata.frame_header(5, 3) + b"abc", 2) is None
    split = framer.feed(frame[:4]) + framer.feed(frame[4:])
    assert [(d.stream_id, d.payload) for d in split if isinstance(d, h2core._Data)] == [(5, b"abc")]
