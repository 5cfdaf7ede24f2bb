"""The shared main of the benchmark's small TCP servers (``holdsink.py``, ``echosink.py``):
serve a protocol on 127.0.0.1:PORT (``argv[1]``) until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable


async def serve(factory: Callable[[], asyncio.Protocol], port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def run(factory: Callable[[], asyncio.Protocol], *, fast_loop: bool = False) -> None:
    """Serve ``factory`` on the port given as the first argument (on uvloop if
    ``fast_loop`` and it is installed)."""
    if fast_loop:
        try:
            import uvloop
        except ImportError:  # the harness's venv has it; the plain loop works too
            pass
        else:
            uvloop.install()
    asyncio.run(serve(factory, int(sys.argv[1])))
