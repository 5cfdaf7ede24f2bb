"""A TCP sink that holds every connection: it greets each with one byte ("+"), discards what
it receives, and closes on EOF. Run as ``python holdsink.py PORT``; the idle-connection
benchmark opens thousands of connections to it through a tunnel."""

from __future__ import annotations

import asyncio

from sinkserver import run


class Hold(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"+")

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self.transport.close()
        return False


if __name__ == "__main__":
    run(Hold)
