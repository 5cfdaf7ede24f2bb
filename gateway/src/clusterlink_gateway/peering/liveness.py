"""Kernel-level liveness of a link's TCP connection: keepalive probes and ``TCP_INFO``.

With ``SO_KEEPALIVE`` and ``TCP_KEEPIDLE`` = the heartbeat interval, the kernel sends a probe
on a link that received nothing for that long, and the peer's kernel answers it: neither
gateway process wakes up. ``TCP_INFO`` then says how long ago the last ACK arrived and the
smoothed round-trip time, which is what an idle peer's heartbeat needs between the HTTP/2
PINGs and full requests (``dataplane.probing``). Linux only; elsewhere ``tcp_info`` is None
and the heartbeat falls back to PINGs.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

# struct tcp_info (linux/tcp.h): 8 bytes of u8 fields, then u32 fields; the ones read here:
_LAST_ACK_RECV = 56  # ms since the last ACK was received
_RTT = 68  # smoothed RTT, us
_MIN_LEN = 72


@dataclass(frozen=True)
class TcpInfo:
    last_ack_s: float  # seconds since the last ACK (or keepalive answer) arrived
    rtt_s: float  # the kernel's smoothed round-trip time


def parse_tcp_info(raw: bytes) -> TcpInfo | None:
    """The fields of a ``TCP_INFO`` answer the heartbeat uses (None if it is too short)."""
    if len(raw) < _MIN_LEN:
        return None
    (last_ack_ms,) = struct.unpack_from("=I", raw, _LAST_ACK_RECV)
    (rtt_us,) = struct.unpack_from("=I", raw, _RTT)
    return TcpInfo(last_ack_ms / 1000.0, rtt_us / 1e6)


def enable_keepalive(sock: Any, idle: int) -> bool:
    """Kernel keepalive probes after ``idle`` s without anything received; True if set."""
    if not all(hasattr(socket, n) for n in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT")):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 5)
    except (OSError, AttributeError):
        return False
    return True


def tcp_info(sock: Any) -> TcpInfo | None:
    """``TCP_INFO`` of ``sock``, or None where the platform has none."""
    if not hasattr(socket, "TCP_INFO"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    return parse_tcp_info(raw)
