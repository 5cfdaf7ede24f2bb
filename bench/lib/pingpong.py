"""One connection, small messages back and forth through an echo server: the round-trip time
a request/response protocol pays per call (what a database or RPC client sees)."""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass

from .proc import BenchError


@dataclass
class PingPongResult:
    round_trips: int
    seconds: float
    p50_us: float
    p99_us: float
    mean_us: float
    max_us: float


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ascending values, nearest rank."""
    if not sorted_values:
        raise ValueError("no values")
    rank = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def ping_pong(
    port: int, round_trips: int, size: int = 64, warmup: int = 200, timeout: float = 10.0
) -> PingPongResult:
    """``round_trips`` timed exchanges of ``size`` bytes on one connection (after ``warmup``
    untimed ones); each waits for the whole echo before the next is sent."""
    message = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    try:
        samples = _exchange(port, round_trips, message, warmup, timeout)
    except OSError as exc:
        raise BenchError(f"ping-pong: {exc}") from None
    samples.sort()
    return PingPongResult(
        round_trips=round_trips,
        seconds=sum(samples) / 1e6,
        p50_us=percentile(samples, 0.50),
        p99_us=percentile(samples, 0.99),
        mean_us=statistics.fmean(samples),
        max_us=samples[-1],
    )


def _exchange(
    port: int, round_trips: int, message: bytes, warmup: int, timeout: float
) -> list[float]:
    size = len(message)
    buf = bytearray(size)
    view = memoryview(buf)
    samples: list[float] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clock = time.perf_counter_ns
        for i in range(warmup + round_trips):
            t0 = clock()
            sock.sendall(message)
            got = 0
            while got < size:
                n = sock.recv_into(view[got:])
                if n == 0:
                    raise BenchError(f"ping-pong: connection closed after {i} round trips")
                got += n
            t1 = clock()
            if buf != message:
                raise BenchError("ping-pong: the echo differs from what was sent")
            if i >= warmup:
                samples.append((t1 - t0) / 1000)
    return samples
