"""The sans-IO HTTP/2 core, driven with bytes only: no sockets, no event loop."""

from __future__ import annotations

import h2.connection
import h2.events
import hyperframe.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterlink_gateway.peering import h2core
from clusterlink_gateway.peering.h2core import (
    CannotOpenStream,
    ConnectionFailed,
    DataReceived,
    GoAwayReceived,
    H2Core,
    Limits,
    RequestReceived,
    ResponseReceived,
    SendResumed,
    StreamClosed,
    StreamEnded,
    StreamGone,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Pair:
    """A client core and a server core joined by an in-memory wire."""

    def __init__(self, client: Limits | None = None, server: Limits | None = None) -> None:
        self.c = H2Core(client_side=True, limits=client)
        self.s = H2Core(client_side=False, limits=server)
        self.c.initiate()
        self.s.initiate()
        self.c_events: list[h2core.Event] = []
        self.s_events: list[h2core.Event] = []
        self.pump()
        self.c_events.clear()
        self.s_events.clear()

    def pump(self, rounds: int = 20) -> None:
        """Move bytes both ways until both sides are quiet."""
        for _ in range(rounds):
            to_s, to_c = self.c.data_to_send(), self.s.data_to_send()
            self.c_events += self.c.pop_events()
            self.s_events += self.s.pop_events()
            if not to_s and not to_c:
                return
            if to_s:
                self.s_events += self.s.receive(to_s)
            if to_c:
                self.c_events += self.c.receive(to_c)
        raise AssertionError("cores kept talking")

    def take(self, side: str) -> list[h2core.Event]:
        events = self.c_events if side == "c" else self.s_events
        out = list(events)
        events.clear()
        return out

    def connect(self, headers: dict[str, str] | None = None) -> int:
        sid = self.c.open_stream("CONNECT", "cl1:443", headers=headers)
        self.pump()
        req = self.take("s")
        assert isinstance(req[0], RequestReceived)
        self.s.send_response(sid, 200)
        self.pump()
        assert [type(e) for e in self.take("c")] == [ResponseReceived]
        return sid


def data_of(events: list[h2core.Event], sid: int | None = None) -> bytes:
    return b"".join(
        e.data
        for e in events
        if isinstance(e, DataReceived) and (sid is None or e.stream_id == sid)
    )


def frame_types(wire: bytes) -> list[int]:
    types, pos = [], 0
    while pos + 9 <= len(wire):
        types.append(wire[pos + 3])
        pos += 9 + int.from_bytes(wire[pos : pos + 3], "big")
    return types


def ack_all(core: H2Core, events: list[h2core.Event]) -> None:
    for e in events:
        if isinstance(e, DataReceived):
            core.ack(e.stream_id, e.flow_len)


# -- request / response ------------------------------------------------------------------------


def test_request_response_roundtrip() -> None:
    p = Pair()
    sid = p.c.open_stream("GET", "cl1", path="/healthz", headers={"X-Trace": "1"}, end_stream=True)
    p.pump()
    req, end = p.take("s")
    assert isinstance(req, RequestReceived)
    assert (req.method, req.path, req.authority) == ("GET", "/healthz", "cl1")
    assert req.headers == {"x-trace": "1"}
    assert end == StreamEnded(sid)

    p.s.send_response(sid, 200, {"content-type": "application/json"})
    p.s.send_data(sid, b'{"name": "cl1"}')
    p.s.end_stream(sid)
    p.pump()
    events = p.take("c")
    assert events[0] == ResponseReceived(sid, 200, {"content-type": "application/json"})
    assert data_of(events) == b'{"name": "cl1"}'
    assert events[-2:] == [StreamEnded(sid), StreamClosed(sid, None, by_peer=False)]
    assert StreamClosed(sid, None, by_peer=False) in p.take("s")
    assert p.c.active_streams == p.s.active_streams == 0


def test_connect_accepted_carries_bytes_both_ways_with_half_close() -> None:
    p = Pair()
    sid = p.c.open_stream("CONNECT", "cl1:443", headers={"x-clusterlink-export": "db"})
    p.pump()
    (req,) = p.take("s")
    assert isinstance(req, RequestReceived)
    assert (req.method, req.path, req.authority) == ("CONNECT", None, "cl1:443")
    assert req.headers["x-clusterlink-export"] == "db"

    p.s.send_response(sid, 200)
    p.pump()
    assert p.take("c") == [ResponseReceived(sid, 200, {})]

    # client -> server, then the client half-closes
    p.c.send_data(sid, b"ping")
    p.c.end_stream(sid)
    p.pump()
    events = p.take("s")
    assert data_of(events) == b"ping"
    assert events[-1] == StreamEnded(sid)
    with pytest.raises(StreamGone):
        p.c.send_data(sid, b"more")

    # the server can still answer on its half, then closes it
    p.s.send_data(sid, b"pong")
    p.pump()
    assert data_of(p.take("c")) == b"pong"
    p.s.end_stream(sid)
    p.pump()
    assert p.take("c") == [StreamEnded(sid), StreamClosed(sid, None, by_peer=False)]
    assert p.take("s") == [StreamClosed(sid, None, by_peer=False)]


def test_server_half_closes_first() -> None:
    p = Pair()
    sid = p.connect()
    p.s.send_data(sid, b"banner")
    p.s.end_stream(sid)
    p.pump()
    events = p.take("c")
    assert data_of(events) == b"banner"
    assert events[-1] == StreamEnded(sid)
    p.c.send_data(sid, b"still talking")
    p.pump()
    assert data_of(p.take("s")) == b"still talking"
    p.c.end_stream(sid)
    p.pump()
    assert StreamClosed(sid, None, by_peer=False) in p.take("c")


def test_connect_refused_with_json_body() -> None:
    p = Pair()
    sid = p.c.open_stream("CONNECT", "cl1:443", headers={"x-clusterlink-export": "db"})
    p.pump()
    p.take("s")
    p.s.send_response(sid, 403, {"content-type": "application/json"})
    p.s.send_data(sid, b'{"error": "denied"}')
    p.s.end_stream(sid)
    p.pump()
    events = p.take("c")
    assert events[0] == ResponseReceived(sid, 403, {"content-type": "application/json"})
    assert data_of(events) == b'{"error": "denied"}'
    assert events[-1] == StreamEnded(sid)


def test_reset_reaches_the_peer_and_closes_locally() -> None:
    p = Pair()
    sid = p.connect()
    p.c.reset_stream(sid)
    assert p.c.pop_events() == [StreamClosed(sid, h2core.CANCEL, by_peer=False)]
    p.pump()
    assert p.take("s") == [StreamClosed(sid, h2core.CANCEL, by_peer=True)]
    with pytest.raises(StreamGone):
        p.s.send_data(sid, b"late")
    with pytest.raises(StreamGone):
        p.c.send_data(sid, b"late")


def test_data_in_flight_to_a_reset_stream_does_not_leak_connection_window() -> None:
    lim = Limits(stream_window=100_000, connection_window=150_000)
    p = Pair(lim, lim)
    for _ in range(5):
        sid = p.connect()
        p.c.send_data(sid, b"x" * 60_000)
        p.s.reset_stream(sid)  # the bytes are in flight: the server never delivers them
        p.pump()
        p.take("s")
        p.take("c")
    sid = p.connect()
    p.c.send_data(sid, b"y" * 90_000)
    p.pump()
    assert data_of(p.take("s"), sid) == b"y" * 90_000


# -- flow control ------------------------------------------------------------------------------


def test_stream_window_bounds_unacknowledged_data_and_ack_reopens_it() -> None:
    lim = Limits(stream_window=100_000, send_high=20_000, send_low=10_000)
    p = Pair(lim, lim)
    sid = p.connect()
    assert p.c.send_data(sid, b"a" * 250_000) is True  # above send_high: writer should pause
    p.pump()
    events = p.take("s")
    assert len(data_of(events)) == 100_000  # exactly the stream window
    assert p.c.unsent(sid) == 150_000
    p.pump()
    assert data_of(p.take("s")) == b""  # nothing more until acknowledged

    ack_all(p.s, events)
    p.pump()
    events = p.take("s")
    assert len(data_of(events)) == 100_000
    assert p.c.unsent(sid) == 50_000
    assert SendResumed(sid) not in p.take("c")  # still above send_low

    ack_all(p.s, events)
    p.pump()
    assert len(data_of(p.take("s"))) == 50_000
    assert p.take("c") == [SendResumed(sid)]
    assert p.c.unsent(sid) == 0


def test_acks_are_batched() -> None:
    lim = Limits(stream_window=100_000)
    p = Pair(lim, lim)
    sid = p.connect()
    p.c.send_data(sid, b"a" * 20_000)
    p.pump()
    events = p.take("s")
    ack_all(p.s, events)  # 20 000 < a quarter of the window: no WINDOW_UPDATE yet
    assert p.s.data_to_send() == b""
    p.c.send_data(sid, b"a" * 20_000)
    p.pump()
    ack_all(p.s, p.take("s"))
    assert p.s.data_to_send() != b""


def test_a_stalled_stream_does_not_starve_others() -> None:
    # Two streams' windows together exceed the connection window: only works because the
    # connection window is handed back on receipt, not when the consumer acknowledges.
    lim = Limits(stream_window=100_000, connection_window=150_000)
    p = Pair(lim, lim)
    stalled, busy = p.connect(), p.connect()
    p.c.send_data(stalled, b"s" * 100_000)
    p.pump()
    assert len(data_of(p.take("s"), stalled)) == 100_000  # never acknowledged
    for _ in range(5):
        p.c.send_data(busy, b"b" * 100_000)
        p.pump()
        events = p.take("s")
        assert len(data_of(events, busy)) == 100_000
        ack_all(p.s, [e for e in events if getattr(e, "stream_id", 0) == busy])
    assert p.c.unsent(stalled) == 0


def test_blocked_output_holds_data_until_released() -> None:
    p = Pair()
    sid = p.connect()
    p.c.set_output_blocked(True)
    p.c.send_data(sid, b"held")
    p.c.end_stream(sid)
    assert p.c.data_to_send() == b""
    assert p.c.unsent(sid) == 4
    p.c.set_output_blocked(False)
    p.pump()
    events = p.take("s")
    assert data_of(events) == b"held"
    assert events[-1] == StreamEnded(sid)


def test_end_stream_waits_for_buffered_data() -> None:
    lim = Limits(stream_window=10_000)
    p = Pair(lim, lim)
    sid = p.connect()
    p.c.send_data(sid, b"z" * 25_000)
    p.c.end_stream(sid)
    received = b""
    for _ in range(5):
        p.pump()
        events = p.take("s")
        received += data_of(events)
        ack_all(p.s, events)
        if StreamEnded(sid) in events:
            break
    assert received == b"z" * 25_000


def test_large_writes_are_split_into_frames_of_the_peer_limit() -> None:
    lim = Limits(max_frame_size=16384, stream_window=1 << 20)
    p = Pair(lim, lim)
    sid = p.connect()
    p.c.send_data(sid, bytes(range(256)) * 400)  # 102 400 bytes
    p.pump()
    frames = [e for e in p.take("s") if isinstance(e, DataReceived)]
    assert len(frames) == 7
    assert max(len(f.data) for f in frames) == 16384
    assert b"".join(f.data for f in frames) == bytes(range(256)) * 400


# -- GOAWAY ------------------------------------------------------------------------------------


def test_goaway_refuses_unprocessed_streams_and_lets_accepted_ones_finish() -> None:
    p = Pair()
    first = p.connect()  # stream 1, accepted
    second = p.c.open_stream("CONNECT", "cl1:443")  # stream 3, in flight
    to_server = p.c.data_to_send()
    p.s.goaway(last_stream_id=first)
    p.s.send_data(first, b"after goaway")  # same flight as the GOAWAY frame
    p.s_events += p.s.receive(to_server)  # crosses the GOAWAY: refused by the server
    p.pump()
    events = p.take("c")
    assert GoAwayReceived(first, h2core.NO_ERROR, [second]) in events
    assert data_of(events, first) == b"after goaway"
    assert not p.c.can_open
    with pytest.raises(CannotOpenStream):
        p.c.open_stream("CONNECT", "cl1:443")
    assert not any(isinstance(e, RequestReceived) for e in p.take("s"))

    # the accepted stream still works both ways until it ends
    p.c.send_data(first, b"reply")
    p.c.end_stream(first)
    p.s.end_stream(first)
    p.pump()
    assert data_of(p.take("s"), first) == b"reply"
    assert p.c.active_streams == 0


def test_goaway_refuses_a_stream_already_received_above_last_id() -> None:
    p = Pair()
    sid = p.c.open_stream("CONNECT", "cl1:443")
    p.pump()
    p.take("s")
    p.s.goaway(last_stream_id=0)
    assert p.s.pop_events() == [StreamClosed(sid, h2core.REFUSED_STREAM, by_peer=False)]
    p.pump()
    assert GoAwayReceived(0, h2core.NO_ERROR, [sid]) in p.take("c")


def test_goaway_with_error_fails_the_connection() -> None:
    p = Pair()
    p.connect()
    p.s.goaway(error_code=h2core.INTERNAL_ERROR)
    p.pump()
    (ev,) = p.take("c")
    assert isinstance(ev, GoAwayReceived)
    assert ev.error_code == h2core.INTERNAL_ERROR
    assert p.c.failed


def test_stream_limit_of_the_peer_is_respected() -> None:
    p = Pair(server=Limits(max_concurrent_streams=2))
    p.connect()
    p.connect()
    assert not p.c.can_open
    with pytest.raises(CannotOpenStream):
        p.c.open_stream("CONNECT", "cl1:443")


# -- limits and garbage ------------------------------------------------------------------------


def raw_request(core: H2Core, headers: list[tuple[bytes, bytes]]) -> None:
    """Send HEADERS through the underlying h2 connection, past the core's own size check."""
    conn = core._h2
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(b":method", b"CONNECT"), (b":authority", b"cl1:443"), *headers])


def test_client_refuses_headers_above_the_peer_limit() -> None:
    p = Pair(server=Limits(max_header_bytes=4096))
    with pytest.raises(h2core.HeadersTooLarge):
        p.c.open_stream("CONNECT", "cl1:443", headers={"x-big": "v" * 8000})
    assert p.c.data_to_send() == b""
    p.connect()  # the connection is fine


def test_oversized_header_block_fails_the_connection_with_goaway() -> None:
    p = Pair(server=Limits(max_header_bytes=4096))
    raw_request(p.c, [(b"x-big", b"v" * 8000)])
    p.pump()
    failures = [e for e in p.take("s") if isinstance(e, ConnectionFailed)]
    assert failures
    assert failures[0].error_code == h2core.PROTOCOL_ERROR
    assert p.s.failed
    goaways = [e for e in p.take("c") if isinstance(e, GoAwayReceived)]
    assert goaways
    assert goaways[0].error_code == h2core.PROTOCOL_ERROR


def test_header_list_limit_applies_to_decoded_size() -> None:
    # Many small headers: compressed block is under the guard, decoded list is over the limit.
    p = Pair(server=Limits(max_header_bytes=2048))
    raw_request(p.c, [(f"x-h{i}".encode(), b"v" * 40) for i in range(60)])
    p.pump()
    assert any(isinstance(e, ConnectionFailed) for e in p.take("s"))


def test_frame_above_the_limit_is_rejected_from_its_header_alone() -> None:
    s = H2Core(client_side=False, limits=Limits(max_frame_size=16384))
    s.initiate()
    s.receive(PREFACE + hyperframe.frame.SettingsFrame(0).serialize())
    header = (1 << 20).to_bytes(3, "big") + bytes([0x0, 0x0]) + (1).to_bytes(4, "big")
    events = s.receive(header)  # no payload at all: rejected before buffering 1 MiB
    assert [type(e) for e in events] == [ConnectionFailed]
    assert events[0].error_code == h2core.FRAME_SIZE_ERROR  # type: ignore[union-attr]
    assert 0x7 in frame_types(s.data_to_send())  # GOAWAY


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00" + b"\x00" * 64, b"\xff" * 100],
    ids=["http1", "tls-hello", "junk"],
)
def test_garbage_instead_of_the_preface_fails_the_connection(garbage: bytes) -> None:
    s = H2Core(client_side=False)
    s.initiate()
    events = s.receive(garbage)
    assert any(isinstance(e, ConnectionFailed) for e in events)
    assert s.failed
    assert s.receive(b"more") == []  # stays failed, no exceptions


def test_data_repr_is_cheap() -> None:
    # h2 formats every received frame with repr(); ours must not hex-dump payloads.
    p = Pair()
    sid = p.connect()
    conn = p.s._h2
    p.s._shortcut.enabled = False  # frames the shortcut declines go through h2 (fastdata.py)
    seen: list[str] = []
    original = conn._receive_frame

    def spy(frame):  # type: ignore[no-untyped-def]
        seen.append(repr(frame))
        return original(frame)

    conn._receive_frame = spy
    p.c.send_data(sid, b"q" * 50_000)
    p.pump()
    assert seen and all(len(r) < 200 for r in seen)
    assert isinstance(conn, h2.connection.H2Connection)


# -- chunking ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=40_000), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=50),
)
def test_any_chunking_of_the_wire_delivers_the_same_bytes(
    payloads: list[bytes], cuts: list[int]
) -> None:
    lim = Limits(max_frame_size=16384)
    p = Pair(lim, lim)
    sid = p.c.open_stream("CONNECT", "cl1:443", headers={"x-clusterlink-export": "e" * 100})
    for payload in payloads:
        p.c.send_data(sid, payload)
    p.c.end_stream(sid)
    wire = p.c.data_to_send()
    events: list[h2core.Event] = []
    pos, i = 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        events += p.s.receive(wire[pos : pos + step])
        pos += step
        i += 1
    assert not any(isinstance(e, ConnectionFailed) for e in events)
    assert isinstance(events[0], RequestReceived)
    assert data_of(events) == b"".join(payloads)
    assert events[-1] == StreamEnded(sid)


def _chunked(core: H2Core, wire: bytes, cuts: list[int]) -> list[h2core.Event]:
    events: list[h2core.Event] = []
    pos, i = 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        events += core.receive(wire[pos : pos + step])
        pos += step
        i += 1
    return events


@settings(max_examples=80, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=20_000), min_size=1, max_size=5),
    padded_at=st.integers(min_value=0, max_value=4),
    cuts=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=30),
)
def test_whole_connection_in_any_chunks_with_padded_frames(
    payloads: list[bytes], padded_at: int, cuts: list[int]
) -> None:
    # From the first byte (preface split anywhere), mixing the fast path (plain DATA) with
    # frames h2 must parse itself (padded DATA, SETTINGS, PING, HEADERS).
    lim = Limits(max_frame_size=16384)
    c = H2Core(client_side=True, limits=lim)
    c.initiate()
    sid = c.open_stream("CONNECT", "cl1:443")
    wire = c.data_to_send()
    expected = b""
    for i, payload in enumerate(payloads):
        if i == padded_at % len(payloads):
            frame = hyperframe.frame.DataFrame(sid, data=payload, pad_length=7)
            frame.flags.add("PADDED")
            wire += frame.serialize() + hyperframe.frame.PingFrame(0).serialize()
        else:
            wire += hyperframe.frame.DataFrame(sid, data=payload).serialize()
        expected += payload
    s = H2Core(client_side=False, limits=lim)
    s.initiate()
    events = _chunked(s, wire, cuts)
    assert not any(isinstance(e, ConnectionFailed) for e in events), events
    assert isinstance(events[0], RequestReceived)
    assert data_of(events, sid) == expected


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=30))
def test_goaway_in_any_chunks_keeps_the_accepted_stream_working(cuts: list[int]) -> None:
    p = Pair()
    first = p.connect()
    second = p.c.open_stream("CONNECT", "cl1:443")
    p.c.data_to_send()  # never reaches the server
    p.s.send_data(first, b"before ")
    p.s.goaway(last_stream_id=first)
    p.s.send_data(first, b"after")
    p.s.ping(b"12345678")
    wire = p.s.data_to_send()
    events = _chunked(p.c, wire, cuts)
    assert not any(isinstance(e, ConnectionFailed) for e in events), events
    assert GoAwayReceived(first, h2core.NO_ERROR, [second]) in events
    assert data_of(events, first) == b"before after"
    assert not p.c.failed


def test_h2_events_are_still_what_the_core_expects() -> None:
    # Guards the private h2 details the core relies on (documented in h2core).
    conn = h2.connection.H2Connection()
    assert isinstance(getattr(conn, "_frame_dispatch_table", None), dict)
    assert hasattr(conn, "state_machine")
    assert h2.events.StreamReset(stream_id=1).remote_reset is True


# -- open-stream counts (kept up to date instead of h2's walk over all streams) -------------


def scanned(conn: h2.connection.H2Connection, parity: int) -> int:
    """What h2's own walk counts, without its side effect of dropping closed streams."""
    return sum(1 for sid, s in conn.streams.items() if s.open and sid % 2 == parity)


def check(core: H2Core) -> None:
    conn = core._h2
    out_parity = int(conn.config.client_side)
    want_out, want_in = scanned(conn, out_parity), scanned(conn, 1 - out_parity)
    closed = {sid for sid, s in conn.streams.items() if s.closed}
    assert conn.open_outbound_streams == want_out
    assert conn.open_inbound_streams == want_in
    # Like h2's walk, counting drops the closed streams and remembers how they closed.
    assert not closed & conn.streams.keys()
    assert closed <= conn._closed_streams.keys()


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["open", "open_end", "respond", "c_end", "s_end", "c_reset", "s_reset"]),
        st.integers(min_value=0, max_value=30),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_open_stream_counts_equal_h2s_walk_over_any_open_close_sequence(
    ops: list[tuple[str, int]],
) -> None:
    p = Pair()
    sids: list[int] = []
    responded: set[int] = set()
    for op, pick in ops:
        if op.startswith("open"):
            if not p.c.can_open:
                continue
            sids.append(p.c.open_stream("CONNECT", "cl1:443", end_stream=op == "open_end"))
        elif sids:
            sid = sids[pick % len(sids)]
            try:
                if op == "respond" and sid not in responded:
                    p.s.send_response(sid, 200)
                    responded.add(sid)
                elif op == "c_end":
                    p.c.end_stream(sid)
                elif op == "s_end" and sid in responded:
                    p.s.end_stream(sid)
                elif op == "c_reset":
                    p.c.reset_stream(sid)
                elif op == "s_reset":
                    p.s.reset_stream(sid)
            except (StreamGone, h2.exceptions.ProtocolError):
                pass
        if pick % 3 == 0:
            p.pump()
        check(p.c)
        check(p.s)
    p.pump()
    check(p.c)
    check(p.s)


class _NoWalk(dict):  # type: ignore[type-arg]
    def items(self):  # type: ignore[no-untyped-def]
        raise AssertionError("h2 walked all streams to count the open ones")

    def values(self):  # type: ignore[no-untyped-def]
        raise AssertionError("h2 walked all streams to count the open ones")


def test_opening_a_stream_does_not_walk_the_streams_already_open() -> None:
    p = Pair()
    for _ in range(50):
        p.c.open_stream("CONNECT", "cl1:443")
    p.pump()
    assert sum(isinstance(e, RequestReceived) for e in p.take("s")) == 50
    p.c._h2.streams = _NoWalk(p.c._h2.streams)
    p.s._h2.streams = _NoWalk(p.s._h2.streams)
    sid = p.c.open_stream("CONNECT", "cl1:443")  # counts outbound streams at the client
    p.pump()  # ... and inbound ones at the server
    assert [e.stream_id for e in p.take("s") if isinstance(e, RequestReceived)] == [sid]
    assert p.c._h2.open_outbound_streams == 51
    assert p.s._h2.open_inbound_streams == 51
