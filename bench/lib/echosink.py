"""A TCP echo server: every byte received is written back at once (TCP_NODELAY). Run as
``python echosink.py PORT``; the ping-pong benchmark bounces small messages off it."""

from __future__ import annotations

import asyncio
import socket

from sinkserver import run


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.transport.close()
        return False


if __name__ == "__main__":
    run(Echo, fast_loop=True)
