"""Sans-IO HTTP/2 core of a peer link: bytes and calls in, typed events and bytes out.

``H2Core`` wraps one ``h2`` connection and adds what a byte-pipe transport needs on top of it:

* explicit flow control: the connection window is handed back as soon as DATA arrives (the
  bytes are then owned by one stream, whose own window bounds them), a stream's window only when
  the application calls ``ack`` (i.e. after its consumer took the bytes);
* per-stream send buffers that hold what the peer's windows do not let through yet, flushed
  round-robin when windows open, with a pause/resume signal for the writer;
* a frame guard that rejects oversized frames and header blocks before ``h2`` buffers them;
* GOAWAY that drains: streams the peer accepted keep running, the ones it did not are reported
  so the caller can retry them elsewhere.

No sockets, clocks or tasks here; ``session.py`` drives it.
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
from hyperframe.frame import DataFrame

from .fastdata import DataShortcut

# HTTP/2 error codes (RFC 9113 section 7) used here.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8

_DATA, _HEADERS, _PUSH_PROMISE, _GOAWAY, _CONTINUATION = 0x0, 0x1, 0x5, 0x7, 0x9
_END_STREAM, _END_HEADERS, _PADDED = 0x1, 0x4, 0x8
_PREFACE_LEN = 24
_ZERO_COPY_MIN = 4096  # DATA payloads from this size on are passed through uncopied
_MAX_WINDOW = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes for one link. Windows are what we grant the peer; frames what we accept."""

    max_frame_size: int = 1 << 20
    stream_window: int = 2 << 20  # bounds what one stalled stream holds; 1-4 MiB measured alike
    connection_window: int = 64 << 20
    max_header_bytes: int = 16384
    max_concurrent_streams: int = 10000
    send_high: int = 256 << 10  # per-stream unsent bytes above which the writer should pause
    send_low: int = 64 << 10  # ... and at or below which it may resume


# -- events ------------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestReceived:
    stream_id: int
    method: str
    path: str | None
    authority: str | None
    headers: dict[str, str]


@dataclass(slots=True)
class ResponseReceived:
    stream_id: int
    status: int
    headers: dict[str, str]


@dataclass(slots=True)
class DataReceived:
    stream_id: int
    data: bytes
    flow_len: int  # what to pass to ``ack`` once the bytes are consumed


@dataclass(slots=True)
class StreamEnded:
    """The peer sent END_STREAM: no more data will come on this stream."""

    stream_id: int


@dataclass(slots=True)
class StreamClosed:
    """The stream is gone: both directions ended (error_code None) or it was reset."""

    stream_id: int
    error_code: int | None
    by_peer: bool


@dataclass(slots=True)
class SendResumed:
    """A stream's unsent buffer drained to ``send_low``: its writer may resume."""

    stream_id: int


@dataclass(slots=True)
class GoAwayReceived:
    last_stream_id: int
    error_code: int
    refused: list[int]  # our streams the peer never processed: safe to retry elsewhere


@dataclass(slots=True)
class PingAcked:
    data: bytes


@dataclass(slots=True)
class ConnectionFailed:
    """Protocol violation: a GOAWAY is queued; send what is pending, then close."""

    error_code: int
    reason: str


Event = (
    RequestReceived
    | ResponseReceived
    | DataReceived
    | StreamEnded
    | StreamClosed
    | SendResumed
    | GoAwayReceived
    | PingAcked
    | ConnectionFailed
)


class StreamGone(Exception):
    """The stream is closed, reset or unknown."""


class HeadersTooLarge(ValueError):
    """The request's headers exceed what the peer (or we) accept; nothing was sent."""


class CannotOpenStream(Exception):
    """No new stream on this connection: it is going away, failed, or at its stream limit."""


# -- h2 adapter --------------------------------------------------------------------------------


class _QuietDataFrame(DataFrame):
    """A DataFrame whose repr does not hex-dump the payload (h2 formats every received frame)."""

    def __repr__(self) -> str:
        return f"DataFrame(stream_id={self.stream_id}, len={len(self.data)})"


_STREAM_OPEN = getattr(h2.stream, "STREAM_OPEN", None)
_CLOSED = h2.stream.StreamState.CLOSED


class _StreamTally:
    """Open streams per stream-id parity, and the streams that closed since the last count."""

    __slots__ = ("closed", "open")

    def __init__(self) -> None:
        self.open = [0, 0]
        self.closed: list[int] = []

    def moved(
        self, stream_id: int, before: h2.stream.StreamState, after: h2.stream.StreamState
    ) -> None:
        delta = _STREAM_OPEN[after] - _STREAM_OPEN[before]  # type: ignore[index]
        if delta:
            self.open[stream_id & 1] += delta
        if after is _CLOSED:
            self.closed.append(stream_id)


class _CountingStateMachine(h2.stream.H2StreamStateMachine):
    """h2's stream state machine, reporting each state change to its connection's tally."""

    tally: _StreamTally

    def process_input(self, input_):  # type: ignore[no-untyped-def]
        before = self.state
        try:
            return super().process_input(input_)
        finally:
            if self.state is not before:
                self.tally.moved(self.stream_id, before, self.state)


class _Connection(h2.connection.H2Connection):
    """h2's connection, with two shortcuts for DATA (each checked to exist in this h2 version):

    * received DATA frames are formatted without hex-dumping the payload (h2 calls ``repr`` on
      every received frame, which costs about 1 ms per MB);
    * ``receive_ready_data`` takes a DATA frame already cut out of the byte stream, skipping
      h2's frame buffer and its copies;
    * sent DATA payloads are not copied into h2's output buffer: ``output`` returns them as
      separate chunks for ``transport.writelines``.

    h2 drops its output buffer when a GOAWAY arrives; here that is left to the core, which
    lets the streams the peer accepted finish.

    h2 counts open streams (for every HEADERS that opens one, sent or received) by walking all
    streams; here the counts are kept up to date as streams change state, and the closed
    streams h2's walk would drop are dropped from the list of those that closed since.
    """

    # How many closed streams h2 remembers (to answer late frames of a reset stream with a
    # stream error instead of failing the link). h2's 65,536 cost ~6 MB per busy link; 8,192
    # still covers seconds of churn at the highest measured rates.
    MAX_CLOSED_STREAMS = 8192

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        table = getattr(self, "_frame_dispatch_table", None)
        self.fast_data = (
            isinstance(table, dict)
            and DataFrame in table
            and callable(getattr(super(), "_receive_frame", None))
        )
        if self.fast_data:
            table[_QuietDataFrame] = table[DataFrame]  # type: ignore[index]
        self._fast_send = isinstance(getattr(self, "_data_to_send", None), bytearray) and callable(
            getattr(super(), "_prepare_for_sending", None)
        )
        self._chunks: list[bytes | memoryview] = []
        self._tally = _StreamTally()
        self._counting = (
            _STREAM_OPEN is not None
            and isinstance(getattr(self, "_closed_streams", None), dict)
            and callable(getattr(super(), "_open_streams", None))
            and callable(getattr(super(), "_begin_new_stream", None))
        )

    def _begin_new_stream(self, stream_id, allowed_ids):  # type: ignore[no-untyped-def]
        stream = super()._begin_new_stream(stream_id, allowed_ids)  # type: ignore[misc]
        if self._counting:
            machine = stream.state_machine
            machine.__class__ = _CountingStateMachine
            machine.tally = self._tally
        return stream

    def _open_streams(self, remainder: int) -> int:
        if not self._counting:
            return super()._open_streams(remainder)  # type: ignore[misc,no-any-return]
        tally = self._tally
        if tally.closed:
            streams, gone = self.streams, self._closed_streams
            for sid in tally.closed:
                stream = streams.get(sid)
                if stream is not None and stream.closed:
                    del streams[sid]
                    gone[sid] = stream.closed_by
            tally.closed.clear()
        return tally.open[remainder]

    def _prepare_for_sending(self, frames):  # type: ignore[no-untyped-def]
        if self._fast_send and len(frames) == 1:
            frame = frames[0]
            size = len(frame.data) if frame.__class__ is DataFrame else 0
            if size >= _ZERO_COPY_MIN and not frame.pad_length:
                flags = _END_STREAM if "END_STREAM" in frame.flags else 0
                buf = self._data_to_send
                buf += size.to_bytes(3, "big")
                buf.append(_DATA)
                buf.append(flags)
                buf += frame.stream_id.to_bytes(4, "big")
                self._chunks.append(bytes(buf))
                buf.clear()
                self._chunks.append(frame.data)
                return
        super()._prepare_for_sending(frames)  # type: ignore[misc]

    def output(self) -> list[bytes | memoryview]:
        """Everything to send, in order, as chunks (payloads are not copied)."""
        chunks, self._chunks = self._chunks, []
        if self._data_to_send:
            chunks.append(bytes(self._data_to_send))
            self._data_to_send.clear()
        return chunks

    def data_to_send(self, amount: int | None = None) -> bytes:
        if self._chunks:
            self._chunks.append(bytes(self._data_to_send))
            self._data_to_send[:] = b"".join(self._chunks)
            self._chunks = []
        return super().data_to_send(amount)

    def clear_outbound_data_buffer(self) -> None:
        """Called by h2 on GOAWAY; the core decides what still goes out (see class doc)."""

    def _receive_frame(self, frame):  # type: ignore[no-untyped-def]
        if self.fast_data and frame.__class__ is DataFrame:
            frame.__class__ = _QuietDataFrame
        return super()._receive_frame(frame)  # type: ignore[misc]

    def receive_ready_data(self, stream_id: int, end_stream: bool, payload: bytes) -> list:  # type: ignore[type-arg]
        """Like ``receive_data`` for exactly one unpadded DATA frame."""
        frame = _QuietDataFrame(stream_id, data=payload)
        if end_stream:
            frame.flags.add("END_STREAM")
        try:
            return self._receive_frame(frame)  # type: ignore[no-any-return]
        except h2.exceptions.ProtocolError as exc:
            self.close_connection(error_code=exc.error_code)
            raise


class _GuardError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(slots=True)
class _Data:
    """A complete, unpadded DATA frame, cut out of the byte stream by the framer."""

    stream_id: int
    end_stream: bool
    payload: bytes


class _Framer:
    """Walks the frame headers of the incoming byte stream (O(frames), not O(bytes)).

    * rejects frames above the frame size limit and header blocks above the header limit as
      soon as their 9-byte header is seen, before anything buffers them;
    * cuts plain DATA frames out (one copy of the payload) so the core can hand them to ``h2``
      as ready frames: its own frame buffer copies every byte three times;
    * passes every other frame through as raw bytes, split right after each GOAWAY so the core
      can restore the connection state before the frames that follow it.

    ``feed`` returns, in wire order: raw byte runs (``memoryview``) and ``_Data`` frames.
    """

    __slots__ = (
        "_block",
        "_data_end",
        "_data_sid",
        "_fast",
        "_goaway",
        "_head",
        "_left",
        "_max_frame",
        "_max_header",
        "_pieces",
        "_preface",
        "_raw",
    )

    def __init__(self, *, server: bool, max_frame: int, max_header: int, fast: bool) -> None:
        self._preface = _PREFACE_LEN if server else 0
        self._max_frame = max_frame
        self._max_header = max_header
        self._fast = fast
        self._head = b""
        self._left = 0  # body bytes of the current frame still to come
        self._raw = True  # the current frame goes to h2 as bytes
        self._goaway = False
        self._block = 0  # header block bytes so far (HEADERS + CONTINUATION)
        self._data_sid = 0
        self._data_end = False
        self._pieces: list[memoryview] = []

    def feed(self, data: bytes) -> list[memoryview | _Data]:
        if self._fast and not (self._left or self._head or self._preface or self._block):
            one = _whole_data_frame(data, self._max_frame)  # a small message: the common case
            if one is not None:
                return [one]
        out: list[memoryview | _Data] = []
        view = memoryview(data)
        pos, n = 0, len(view)
        run = 0  # start of the raw bytes not yet put into ``out``
        if self._preface:
            pos = min(self._preface, n)
            self._preface -= pos
        while pos < n:
            if self._left:
                take = min(self._left, n - pos)
                if not self._raw:
                    self._pieces.append(view[pos : pos + take])
                pos += take
                self._left -= take
                if not self._raw:
                    run = pos
                if not self._left:
                    run = self._frame_done(out, view, run, pos)
                continue
            start = pos
            if self._head or n - pos < 9:  # a header split across chunks
                need = 9 - len(self._head)
                self._head += bytes(view[pos : pos + need])
                pos += min(need, n - pos)
                if len(self._head) < 9:
                    if start > run:
                        out.append(view[run:start])
                    run = pos
                    break
                head, self._head = self._head, b""
                split = True
            else:
                head = bytes(view[pos : pos + 9])
                pos += 9
                split = False
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            if length > self._max_frame:
                raise _GuardError(FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds the limit")
            if ftype in (_HEADERS, _CONTINUATION, _PUSH_PROMISE):
                self._block += length
                if self._block > self._max_header:
                    raise _GuardError(PROTOCOL_ERROR, "header block exceeds the header size limit")
                if flags & _END_HEADERS:
                    self._block = 0
            if self._fast and ftype == _DATA and sid and not flags & _PADDED and not self._block:
                if start > run:
                    out.append(view[run:start])
                run = pos
                self._raw = False
                self._data_sid, self._data_end = sid, bool(flags & _END_STREAM)
            else:
                self._raw = True
                if split:  # its first bytes were held back: send the whole header now
                    if start > run:
                        out.append(view[run:start])
                    out.append(memoryview(head))
                    run = pos
            self._goaway = ftype == _GOAWAY
            self._left = length
            if not length:
                run = self._frame_done(out, view, run, pos)
        if pos > run:
            out.append(view[run:pos])
        return out

    def _frame_done(
        self, out: list[memoryview | _Data], view: memoryview, run: int, pos: int
    ) -> int:
        """The current frame ends at ``pos``; returns where the pending raw bytes start."""
        if not self._raw:
            pieces, self._pieces = self._pieces, []
            payload = b"".join(pieces) if len(pieces) != 1 else pieces[0].tobytes()
            out.append(_Data(self._data_sid, self._data_end, payload))
            self._raw = True
            return pos
        if self._goaway:  # cut here: the core restores h2's state before what follows
            self._goaway = False
            if pos > run:
                out.append(view[run:pos])
            return pos
        return run


def _whole_data_frame(data: bytes, max_frame: int) -> _Data | None:
    """``data`` as one unpadded DATA frame if it is exactly that (nothing before or after)."""
    n = len(data)
    if n < 10 or data[3] != _DATA or data[4] & _PADDED or n - 9 > max_frame:
        return None
    if int.from_bytes(data[:3], "big") != n - 9:
        return None
    sid = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
    return _Data(sid, bool(data[4] & _END_STREAM), bytes(data[9:])) if sid else None


class _Stream:
    __slots__ = (
        "end_queued",
        "id",
        "local_closed",
        "paused",
        "pending",
        "remote_closed",
        "unacked",
        "unsent",
    )

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.pending: deque[bytes | memoryview] = deque()
        self.unsent = 0
        self.end_queued = False
        self.local_closed = False
        self.remote_closed = False
        self.unacked = 0
        self.paused = False


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], dict[str, str]]:
    pseudo: dict[str, str] = {}
    headers: dict[str, str] = {}
    for name_b, value_b in raw:
        name = name_b.decode("ascii", "replace")
        value = value_b.decode("utf-8", "replace")
        if name.startswith(":"):
            pseudo[name] = value
        elif name in headers:
            headers[name] += ", " + value
        else:
            headers[name] = value
    return pseudo, headers


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")
_CONNECTION_SPECIFIC = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
}


def _encode_headers(headers: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    """Extra (non-pseudo) headers as h2 wants them; ValueError for what HTTP/2 forbids."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in (headers or {}).items():
        raw_name = name.lower().encode("ascii", "replace")
        raw_value = str(value).encode("utf-8")
        if not _TOKEN.fullmatch(raw_name) or raw_name in _CONNECTION_SPECIFIC or raw_name == b"te":
            raise ValueError(f"header name {name!r} is not allowed in HTTP/2")
        if _BAD_VALUE.search(raw_value):
            raise ValueError(f"header {name!r} has a value HTTP/2 does not allow")
        out.append((raw_name, raw_value))
    return out


# -- the core ----------------------------------------------------------------------------------


class H2Core:
    """One HTTP/2 connection, either side. Call ``initiate`` first, then feed and drain."""

    # Built by ``initiate`` (see there): absent on a core that was never started.
    _h2: _Connection
    _framer: _Framer
    _shortcut: DataShortcut

    def __init__(self, *, client_side: bool, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.client_side = client_side
        self.started = False
        self._open_state = (
            h2.connection.ConnectionState.CLIENT_OPEN
            if client_side
            else h2.connection.ConnectionState.SERVER_OPEN
        )
        self._streams: dict[int, _Stream] = {}
        self._blocked: dict[int, _Stream] = {}  # streams with unsent data, in flush order
        self._events: list[Event] = []
        self._local_open = 0  # streams we opened that are not closed yet
        self._conn_unacked = 0
        self._ack_stream_at = max(1, self.limits.stream_window // 4)
        self._ack_conn_at = max(1, self.limits.connection_window // 4)
        self._output_blocked = False
        self.goaway_sent: int | None = None  # last stream id we promised to process
        self.goaway_received: int | None = None
        self.failed: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def initiate(self) -> None:
        """Build the HTTP/2 state, queue the preface and SETTINGS, open the connection window.

        The connection state (HPACK tables, settings, frame buffers: ~16 KiB) is built here,
        not in ``__init__``: a link's core exists from TCP accept, and only a peer that passed
        the TLS handshake and admission gets this far, so strangers never cost it.
        """
        lim = self.limits
        # Outbound headers are built and checked here (``_encode_headers``); h2's own outbound
        # normalisation and validation walk them again, several generators per header.
        config = h2.config.H2Configuration(
            client_side=self.client_side,
            header_encoding=None,
            validate_inbound_headers=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._h2 = conn = _Connection(config)
        self._shortcut = DataShortcut(conn)
        conn.local_settings = h2.settings.Settings(
            client=self.client_side,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: lim.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: lim.max_header_bytes,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: lim.stream_window,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: lim.max_frame_size,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        conn.max_inbound_frame_size = lim.max_frame_size
        conn.decoder.max_header_list_size = lim.max_header_bytes
        self._framer = _Framer(
            server=not self.client_side,
            max_frame=lim.max_frame_size,
            max_header=lim.max_header_bytes + 1024,  # HPACK may encode slightly longer
            fast=conn.fast_data,
        )
        self.started = True
        self._h2.initiate_connection()
        extra = self.limits.connection_window - 65535
        if extra > 0:
            self._h2.increment_flow_control_window(min(extra, _MAX_WINDOW - 65535))

    def data_to_send(self) -> bytes:
        return self._h2.data_to_send() if self.started else b""

    def output(self) -> list[bytes | memoryview]:
        """What to send, as chunks for ``writelines`` (bulk payloads are not copied)."""
        return self._h2.output() if self.started else []

    def has_output(self) -> bool:
        """True if ``output`` would return something (cheap: no copy)."""
        return self.started and bool(self._h2._chunks or self._h2._data_to_send)

    def pop_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    @property
    def can_open(self) -> bool:
        """True while new local streams are allowed (no GOAWAY, no failure, below the limit)."""
        if self.failed is not None or self.goaway_sent is not None:
            return False
        if self.goaway_received is not None or not self.started:
            return False
        return self._local_open < self._h2.remote_settings.max_concurrent_streams

    def unsent(self, stream_id: int) -> int:
        rec = self._streams.get(stream_id)
        return rec.unsent if rec is not None else 0

    def total_unsent(self) -> int:
        return sum(rec.unsent for rec in self._blocked.values())

    # -- input ---------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; returns the events they caused (and any queued before)."""
        if self.failed is not None or not self.started:  # not started: a refused link
            return self.pop_events()
        try:
            items = self._framer.feed(data)
        except _GuardError as exc:
            self._fail(exc.code, str(exc))
            return self.pop_events()
        for item in items:
            if item.__class__ is _Data:
                self._feed_data(item)  # type: ignore[arg-type]
            else:
                self._feed(item)  # type: ignore[arg-type]
            if self.failed is not None:
                break
        if self._conn_unacked >= self._ack_conn_at and self.failed is None:
            self._h2.increment_flow_control_window(self._conn_unacked)
            self._conn_unacked = 0
        return self.pop_events()

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._failed_by(exc)
            return
        self._process(h2_events)

    def _feed_data(self, item: _Data) -> None:
        if not item.end_stream:
            try:
                taken = self._shortcut.receive(item.stream_id, item.payload)
            except h2.exceptions.ProtocolError as exc:
                self._h2.close_connection(error_code=exc.error_code)
                self._failed_by(exc)
                return
            if taken:
                self._data(item.stream_id, len(item.payload), item.payload)
                return
        try:
            h2_events = self._h2.receive_ready_data(item.stream_id, item.end_stream, item.payload)
        except h2.exceptions.ProtocolError as exc:
            self._failed_by(exc)
            return
        self._process(h2_events)

    def _failed_by(self, exc: h2.exceptions.ProtocolError) -> None:
        self.failed = str(exc) or exc.__class__.__name__
        code = int(getattr(exc, "error_code", PROTOCOL_ERROR) or PROTOCOL_ERROR)
        self._events.append(ConnectionFailed(code, self.failed))

    def _process(self, h2_events: list[h2.events.Event]) -> None:
        flush = False
        for ev in h2_events:
            cls = ev.__class__
            if cls is h2.events.DataReceived:
                self._on_data(ev)  # type: ignore[arg-type]
            elif cls is h2.events.WindowUpdated or cls is h2.events.RemoteSettingsChanged:
                flush = True
            elif cls is h2.events.StreamEnded:
                self._on_remote_end(ev.stream_id)  # type: ignore[attr-defined]
            elif cls is h2.events.RequestReceived:
                self._on_request(ev)  # type: ignore[arg-type]
            elif cls is h2.events.ResponseReceived:
                self._on_response(ev)  # type: ignore[arg-type]
            elif cls is h2.events.StreamReset:
                self._on_reset(ev)  # type: ignore[arg-type]
            elif cls is h2.events.ConnectionTerminated:
                self._on_goaway(ev)  # type: ignore[arg-type]
            elif cls is h2.events.PingAckReceived:
                self._events.append(PingAcked(ev.ping_data))  # type: ignore[attr-defined]
        if flush and self.failed is None:
            self._flush()

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        self._data(ev.stream_id, ev.flow_controlled_length or 0, ev.data)

    def _data(self, sid: int, flow: int, data: bytes) -> None:
        self._conn_unacked += flow
        if data and sid in self._streams:
            self._events.append(DataReceived(sid, data, flow))
        elif flow and self.failed is None:
            # Padding only, or not ours any more (reset while DATA was in flight): give it back.
            self._ack_stream_h2(sid, flow)

    def _on_request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        if self.goaway_sent is not None and sid > self.goaway_sent:
            self._h2.reset_stream(sid, REFUSED_STREAM)
            return
        pseudo, headers = _decode_headers(ev.headers)  # type: ignore[arg-type]
        self._streams[sid] = _Stream(sid)
        self._events.append(
            RequestReceived(
                sid,
                pseudo.get(":method", ""),
                pseudo.get(":path"),
                pseudo.get(":authority"),
                headers,
            )
        )

    def _on_response(self, ev: h2.events.ResponseReceived) -> None:
        if ev.stream_id not in self._streams:
            return
        pseudo, headers = _decode_headers(ev.headers)  # type: ignore[arg-type]
        try:
            status = int(pseudo.get(":status", "0"))
        except ValueError:
            status = 0
        self._events.append(ResponseReceived(ev.stream_id, status, headers))

    def _on_remote_end(self, sid: int) -> None:
        rec = self._streams.get(sid)
        if rec is None:
            return
        rec.remote_closed = True
        self._events.append(StreamEnded(sid))
        self._maybe_closed(rec)

    def _on_reset(self, ev: h2.events.StreamReset) -> None:
        rec = self._forget(ev.stream_id)
        if rec is None:
            return
        code = int(ev.error_code) if ev.error_code is not None else CANCEL
        self._events.append(StreamClosed(rec.id, code, by_peer=ev.remote_reset))

    def _on_goaway(self, ev: h2.events.ConnectionTerminated) -> None:
        last = int(ev.last_stream_id or 0)
        code = int(ev.error_code) if ev.error_code is not None else NO_ERROR
        self.goaway_received = last
        refused = sorted(
            sid for sid in self._streams if sid > last and (sid % 2 == 1) == self.client_side
        )
        for sid in refused:
            self._forget(sid)
        if code == NO_ERROR:
            # h2 treats any GOAWAY as the end; we let the streams the peer accepted finish.
            self._h2.state_machine.state = self._open_state
        else:
            self.failed = f"peer sent GOAWAY with error code {code}"
        self._events.append(GoAwayReceived(last, code, refused))

    # -- output --------------------------------------------------------------------------------

    def open_stream(
        self,
        method: str,
        authority: str,
        *,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        end_stream: bool = False,
    ) -> int:
        """Send a request's HEADERS; returns the new stream id."""
        if not self.can_open:
            raise CannotOpenStream(self.failed or "connection is going away or at its stream limit")
        block = [(b":method", method.encode()), (b":authority", authority.encode())]
        if method != "CONNECT":
            block += [(b":scheme", b"https"), (b":path", (path or "/").encode())]
        block += _encode_headers(headers)
        size = sum(len(name) + len(value) + 32 for name, value in block)  # RFC 9113 6.5.2
        peer_limit = self._h2.remote_settings.max_header_list_size
        limit = min(self.limits.max_header_bytes, peer_limit or self.limits.max_header_bytes)
        if size > limit:
            raise HeadersTooLarge(f"request headers of {size} bytes exceed the limit of {limit}")
        sid = self._h2.get_next_available_stream_id()
        try:
            self._h2.send_headers(sid, block, end_stream=end_stream)
        except h2.exceptions.TooManyStreamsError as exc:
            raise CannotOpenStream(str(exc)) from None
        rec = self._streams[sid] = _Stream(sid)
        rec.local_closed = end_stream
        self._local_open += 1
        return sid

    def send_response(
        self,
        stream_id: int,
        status: int,
        headers: dict[str, str] | None = None,
        *,
        end_stream: bool = False,
    ) -> None:
        rec = self._writable(stream_id)
        block = [(b":status", str(status).encode()), *_encode_headers(headers)]
        self._h2.send_headers(stream_id, block, end_stream=end_stream)
        if end_stream:
            rec.local_closed = True
            self._maybe_closed(rec)

    def send_data(self, stream_id: int, data: bytes | memoryview) -> bool:
        """Send what the windows allow now and buffer the rest; True means: writer, pause."""
        rec = self._writable(stream_id)
        if not data:
            return rec.paused
        if rec.unsent or self._output_blocked:
            rec.pending.append(data)
            rec.unsent += len(data)
        else:
            sent = self._send_now(stream_id, data)
            if sent < len(data):
                rest = memoryview(data)[sent:]
                rec.pending.append(rest)
                rec.unsent += len(rest)
        if rec.unsent:
            self._blocked.setdefault(stream_id, rec)
            if rec.unsent > self.limits.send_high:
                rec.paused = True
        return rec.paused

    def end_stream(self, stream_id: int) -> None:
        """END_STREAM after whatever is still buffered for the stream."""
        rec = self._writable(stream_id)
        if rec.unsent:
            rec.end_queued = True
            return
        self._h2.end_stream(stream_id)
        rec.local_closed = True
        self._maybe_closed(rec)

    def reset_stream(self, stream_id: int, error_code: int = CANCEL) -> None:
        rec = self._forget(stream_id)
        if rec is None:
            return
        if self.failed is None:
            with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                self._h2.reset_stream(stream_id, error_code)
        self._events.append(StreamClosed(stream_id, error_code, by_peer=False))

    def ack(self, stream_id: int, size: int) -> None:
        """The application consumed ``size`` flow-controlled bytes of the stream."""
        rec = self._streams.get(stream_id)
        if rec is None or rec.remote_closed or self.failed is not None:
            return
        rec.unacked += size
        if rec.unacked >= self._ack_stream_at:
            size, rec.unacked = rec.unacked, 0
            self._ack_stream_h2(stream_id, size)

    def set_output_blocked(self, blocked: bool) -> None:
        """The transport is full (True) or has room again (False): hold or release DATA."""
        self._output_blocked = blocked
        if not blocked and self._blocked and self.failed is None:
            self._flush()

    def ping(self, data: bytes = b"\0" * 8) -> None:
        if self.started:
            self._h2.ping(data)

    def goaway(self, error_code: int = NO_ERROR, last_stream_id: int | None = None) -> None:
        """Send GOAWAY. With NO_ERROR, streams up to ``last_stream_id`` may still finish."""
        if self.failed is not None or not self.started:
            return
        last = self._h2.highest_inbound_stream_id if last_stream_id is None else last_stream_id
        self._h2.close_connection(error_code=error_code, last_stream_id=last)
        if error_code != NO_ERROR:
            self.failed = f"GOAWAY sent with error code {error_code}"
            return
        self._h2.state_machine.state = self._open_state
        self.goaway_sent = last
        remote_parity = 0 if self.client_side else 1
        for sid in [s for s in self._streams if s > last and s % 2 == remote_parity]:
            self.reset_stream(sid, REFUSED_STREAM)

    # -- internals -----------------------------------------------------------------------------

    def _writable(self, stream_id: int) -> _Stream:
        rec = self._streams.get(stream_id)
        if rec is None or rec.local_closed or rec.end_queued or self.failed is not None:
            raise StreamGone(stream_id)
        return rec

    def _send_now(self, stream_id: int, data: bytes | memoryview) -> int:
        if self._shortcut.send(stream_id, data):
            return len(data)
        conn = self._h2
        n = min(len(data), conn.local_flow_control_window(stream_id))
        if n <= 0:
            return 0
        frame = conn.max_outbound_frame_size
        if n == len(data) and n <= frame:
            conn.send_data(stream_id, data)
            return n
        view = memoryview(data)
        for off in range(0, n, frame):
            conn.send_data(stream_id, view[off : min(off + frame, n)])
        return n

    def _flush(self) -> None:
        """Push buffered DATA as the windows allow, fairly across streams."""
        low = self.limits.send_low
        for sid, rec in list(self._blocked.items()):
            if self._output_blocked or self._h2.outbound_flow_control_window <= 0:
                break
            while rec.pending:
                chunk = rec.pending[0]
                sent = self._send_now(sid, chunk)
                rec.unsent -= sent
                if sent < len(chunk):
                    rec.pending[0] = memoryview(chunk)[sent:]
                    break
                rec.pending.popleft()
            del self._blocked[sid]
            if rec.pending:
                self._blocked[sid] = rec  # to the back of the queue
            elif rec.end_queued:
                rec.end_queued = False
                self._h2.end_stream(sid)
                rec.local_closed = True
            if rec.paused and rec.unsent <= low:
                rec.paused = False
                self._events.append(SendResumed(sid))
            if rec.local_closed:
                self._maybe_closed(rec)

    def _ack_stream_h2(self, stream_id: int, size: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self._h2.increment_flow_control_window(size, stream_id)

    def _maybe_closed(self, rec: _Stream) -> None:
        if rec.local_closed and rec.remote_closed and self._forget(rec.id) is not None:
            self._events.append(StreamClosed(rec.id, None, by_peer=False))

    def _forget(self, stream_id: int) -> _Stream | None:
        rec = self._streams.pop(stream_id, None)
        if rec is not None:
            self._blocked.pop(stream_id, None)
            if (stream_id % 2 == 1) == self.client_side:
                self._local_open -= 1
        return rec

    def _fail(self, code: int, reason: str) -> None:
        self.failed = reason
        self._h2.close_connection(error_code=code)
        self._events.append(ConnectionFailed(code, reason))
