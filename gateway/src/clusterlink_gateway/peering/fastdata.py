"""Small DATA frames on open streams without h2's per-frame machinery.

``h2`` passes every DATA frame through its connection and stream state machines, frame objects,
flag sets and serialisation (profiled: about half of a gateway's CPU per relayed small message,
e.g. one request/response of a database client). For a DATA frame without END_STREAM or
padding on a stream that is open in that direction, all that work changes nothing but the
flow-control windows. ``DataShortcut`` does exactly that much, with the same checks (window,
frame size, stream state, content length), and declines (returns False/None) whenever the
frame needs ``h2``: the caller then goes the usual way. Socket-free; ``h2core`` calls it.
"""

from __future__ import annotations

from typing import Any

import h2.connection
import h2.exceptions
import h2.stream

_DATA = 0x0
SEND_MAX = 4096  # larger payloads take h2core's zero-copy path (one frame, uncopied payload)

_OPEN = h2.stream.StreamState.OPEN
_SEND_STATES = frozenset({_OPEN, h2.stream.StreamState.HALF_CLOSED_REMOTE})
_RECV_STATES = frozenset({_OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL})
_CONN_OPEN = frozenset(
    {h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionState.SERVER_OPEN}
)


def frame_header(stream_id: int, size: int, flags: int = 0) -> bytes:
    """The 9-byte header of a DATA frame (RFC 9113 section 4.1)."""
    return size.to_bytes(3, "big") + bytes((_DATA, flags)) + stream_id.to_bytes(4, "big")


def supported(conn: Any) -> bool:
    """True if this h2 version keeps the state the shortcut updates where it expects it."""
    return (
        isinstance(getattr(conn, "_data_to_send", None), bytearray)
        and isinstance(getattr(conn, "outbound_flow_control_window", None), int)
        and hasattr(conn, "_inbound_flow_control_window_manager")
        and isinstance(getattr(conn, "streams", None), dict)
        and hasattr(conn, "state_machine")
    )


class DataShortcut:
    """The shortcut for one ``h2`` connection (see the module docstring)."""

    __slots__ = ("_conn", "enabled")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.enabled = supported(conn)

    def send(self, stream_id: int, data: bytes | memoryview) -> bool:
        """Queue ``data`` as one DATA frame if it is small, fits both windows and the frame
        size, and the stream may send; False (nothing done) otherwise."""
        size = len(data)
        if not self.enabled or not size or size > SEND_MAX:
            return False
        conn = self._conn
        stream = conn.streams.get(stream_id)
        if stream is None or conn.state_machine.state not in _CONN_OPEN:
            return False
        if stream.state_machine.state not in _SEND_STATES:
            return False
        if size > conn.max_outbound_frame_size:
            return False
        if size > conn.outbound_flow_control_window or size > stream.outbound_flow_control_window:
            return False
        buf = conn._data_to_send
        buf += frame_header(stream_id, size)
        buf += data
        conn.outbound_flow_control_window -= size
        stream.outbound_flow_control_window -= size
        return True

    def receive(self, stream_id: int, payload: bytes) -> bool:
        """Account for a received DATA frame (unpadded, without END_STREAM) if its stream is
        open for receiving; False (nothing done) if ``h2`` must handle it. Raises h2's
        ``FlowControlError`` (a connection error) if the peer overran a window."""
        if not self.enabled:
            return False
        conn = self._conn
        stream = conn.streams.get(stream_id)
        if stream is None or conn.state_machine.state not in _CONN_OPEN:
            return False
        if stream.state_machine.state not in _RECV_STATES:
            return False
        if stream._expected_content_length is not None:
            return False
        size = len(payload)
        if size > conn.max_inbound_frame_size:
            raise h2.exceptions.FrameTooLargeError(f"DATA frame of {size} bytes")
        conn._inbound_flow_control_window_manager.window_consumed(size)
        stream._inbound_window_manager.window_consumed(size)
        return True
