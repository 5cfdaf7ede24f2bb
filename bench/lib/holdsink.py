"""A TCP sink that holds every connection: it greets each with one byte ("+"), discards what
it receives, and closes on EOF. Run as ``python holdsink.py PORT``; the idle-connection
benchmark opens thousands of connections to it through a tunnel."""

from __future__ import annotations

import asyncio
import signal
import sys


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


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Hold, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
