"""Memory of a tunnel pair holding many idle relayed connections.

The harness opens ``count`` client connections through the tunnel to the hold sink, from
several loopback source addresses (127.0.0.2, .3, ...) so the ephemeral ports of one address
never run out, and checks that each one received the sink's greeting byte. The pair's RSS
(VmRSS of each process and its descendants) is read before and after.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h; not exported by the socket module


@dataclass
class IdleResult:
    requested: int
    opened: int
    seconds_to_open: float
    failures: dict[str, int] = field(default_factory=dict)


def source_addresses(count: int, per_address: int = 8000) -> list[str]:
    return [f"127.0.0.{2 + i}" for i in range(max(1, -(-count // per_address)))]


async def _open_all(
    port: int, count: int, concurrency: int, limit_s: float
) -> tuple[list[socket.socket], dict[str, int]]:
    loop = asyncio.get_running_loop()
    sources = source_addresses(count)
    gate = asyncio.Semaphore(concurrency)
    opened: list[socket.socket] = []
    failures: dict[str, int] = {}

    async def one(index: int) -> None:
        async with gate:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((sources[index % len(sources)], 0))
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), limit_s)
                greeting = await asyncio.wait_for(loop.sock_recv(sock, 1), limit_s)
                if greeting != b"+":
                    raise ConnectionError("closed before the sink's greeting")
            except (OSError, TimeoutError) as exc:
                sock.close()
                key = type(exc).__name__ + (
                    f" errno {exc.errno}" if getattr(exc, "errno", 0) else ""
                )
                failures[key] = failures.get(key, 0) + 1
                return
            opened.append(sock)

    await asyncio.gather(*(one(i) for i in range(count)))
    return opened, failures


def open_idle(
    port: int, count: int, *, concurrency: int = 128, timeout: float = 30.0
) -> tuple[list[socket.socket], IdleResult]:
    """Open ``count`` connections through ``port``; the caller closes the returned sockets."""
    started = time.monotonic()
    opened, failures = asyncio.run(_open_all(port, count, concurrency, timeout))
    return opened, IdleResult(count, len(opened), time.monotonic() - started, failures)


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()
    socks.clear()
