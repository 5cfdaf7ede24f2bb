"""The main process asks each data-plane worker for its metrics over a private socketpair.

``WorkerPool`` creates one ``socket.socketpair()`` per worker it spawns and hands the child's
end over by file descriptor (``--metrics-fd``): nothing on the file system, nobody else can
connect, and the pair closes when either process ends. One exchange per question:

* main -> worker: ``<seq> <kind>\\n`` (kind ``metrics``, or ``refusals`` for the fabric page;
  a bare ``<seq>\\n`` asks for metrics)
* worker -> main: ``<seq> <length>\\n`` then ``length`` bytes: ``families.encode`` output for
  ``metrics``, a JSON document for ``refusals``; an unknown kind gets an empty answer.

A worker that answers late is not waited for: the scrape marks it down
(``clusterlink_worker_up 0``) and its late reply, matched by ``seq``, is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("clusterlink.telemetry")

MAX_REPLY = 64 << 20  # a worker's metrics are kilobytes; refuse anything absurd


class WorkerMetricsClient:
    """The main process's end of one worker's pair: one reader task matches replies to
    requests by ``seq``, so a reply that comes after its scrape gave up is simply dropped."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[bytes | None]] = {}
        self._seq = 0
        self.closed = False

    async def fetch(self, within: float, kind: str = "metrics") -> bytes | None:
        """The worker's answer about ``kind`` (its encoded families for ``metrics``), or None
        if it does not answer ``within`` seconds."""
        if self.closed:
            return None
        loop = asyncio.get_running_loop()
        self._seq += 1
        seq = self._seq
        reply: asyncio.Future[bytes | None] = loop.create_future()
        self._pending[seq] = reply
        try:
            async with asyncio.timeout(within):
                if self._writer is None:
                    reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
                    self._reader_task = loop.create_task(self._read(reader))
                self._writer.write(b"%d %s\n" % (seq, kind.encode()))
                await self._writer.drain()
                return await reply
        except TimeoutError:
            return None
        except OSError as exc:
            log.warning("worker metrics channel failed", extra={"error": str(exc)})
            self.close()
            return None
        finally:
            self._pending.pop(seq, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readline()
                if not head.endswith(b"\n"):
                    return  # the worker is gone
                seq, length = (int(x) for x in head.split())
                if not 0 <= length <= MAX_REPLY:
                    raise ValueError(f"a reply of {length} bytes")
                body = await reader.readexactly(length)
                reply = self._pending.pop(seq, None)
                if reply is not None and not reply.done():
                    reply.set_result(body)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            log.warning("worker metrics channel failed", extra={"error": str(exc)})
        finally:
            self.close()

    def close(self) -> None:
        """Stop asking; pending and later fetches get None."""
        self.closed = True
        for reply in self._pending.values():
            if not reply.done():
                reply.set_result(None)
        self._pending.clear()
        if self._writer is not None:
            self._writer.close()
        else:
            self._sock.close()
        task = self._reader_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()


async def serve_worker_metrics(
    sock: socket.socket, collect: Callable[[], bytes], **more: Callable[[], bytes]
) -> None:
    """The worker's end: answer every request with ``collect()`` (kind ``metrics``) or the
    function named by its kind in ``more``, until the pair closes."""
    answers = {"metrics": collect, **more}
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):
                return
            seq_text, _, kind = line.decode().strip().partition(" ")
            seq = int(seq_text)
            answer = answers.get(kind or "metrics")
            body = answer() if answer is not None else b""
            writer.write(b"%d %d\n" % (seq, len(body)) + body)
            await writer.drain()
    except (OSError, ValueError) as exc:
        log.warning("metrics channel to the main process failed", extra={"error": str(exc)})
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
