"""The main process's side of data-plane workers: start, notify, restart, stop.

Each worker is a child process (``dataplane.worker``) whose stdin is a pipe from here: a line
after every object change tells it to re-read the store; closing the pipe (or this process
dying, which closes it too) tells it to stop. A worker that exits on its own is started again
after a delay that grows while it keeps failing. Each worker also gets one end of a socketpair
(``--metrics-fd``) on which the metrics listener asks it for its metrics
(``telemetry.channel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..telemetry.channel import WorkerMetricsClient
from ..telemetry.gather import Fetch

log = logging.getLogger("clusterlink.workers")

RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
STOP_TIMEOUT = 10.0


def _worker_env() -> dict[str, str]:
    """This process's environment without systemd's: only the main process talks to systemd
    (readiness, the fd store) and inherits its sockets."""
    return {
        k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET" and not k.startswith("LISTEN_")
    }


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.metrics: WorkerMetricsClient | None = None


class WorkerPool:
    """``count`` worker processes serving the data plane beside this one."""

    def __init__(self, config_path: Path, count: int) -> None:
        self.config_path = config_path
        self._slots = [_Slot(i + 1) for i in range(count)]
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.returncode is None]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for slot in self._slots:
            await self._spawn(slot)
            slot.task = loop.create_task(self._supervise(slot), name=f"worker-{slot.index}")

    def metrics_fetchers(self, kind: str = "metrics") -> dict[str, Fetch]:
        """Per worker index ("1", "2", ...): ask that worker about ``kind`` (see
        ``telemetry.channel``)."""
        return {
            str(s.index): functools.partial(s.metrics.fetch, kind=kind)
            for s in self._slots
            if s.metrics is not None
        }

    async def _spawn(self, slot: _Slot) -> None:
        if slot.metrics is not None:
            slot.metrics.close()
            slot.metrics = None
        ours, theirs = socket.socketpair()
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "clusterlink_gateway.dataplane.worker",
                "--config",
                str(self.config_path),
                "--parent",
                str(os.getpid()),
                "--metrics-fd",
                str(theirs.fileno()),
                stdin=asyncio.subprocess.PIPE,
                env=_worker_env(),
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        slot.metrics = WorkerMetricsClient(ours)
        log.info("data-plane worker spawned", extra={"worker": slot.index, "pid": slot.proc.pid})

    async def _supervise(self, slot: _Slot) -> None:
        delay = RESTART_DELAY
        while True:
            assert slot.proc is not None
            started = time.monotonic()
            code = await slot.proc.wait()
            if self._stopping:
                return
            log.warning(
                "data-plane worker exited; restarting",
                extra={"worker": slot.index, "pid": slot.proc.pid, "code": code, "delay": delay},
            )
            await asyncio.sleep(delay)
            ran_long = time.monotonic() - started > MAX_RESTART_DELAY
            delay = RESTART_DELAY if ran_long else min(delay * 2, MAX_RESTART_DELAY)
            if self._stopping:
                return
            try:
                await self._spawn(slot)
            except OSError as exc:
                log.error("cannot start a data-plane worker", extra={"error": str(exc)})

    async def on_change(self, *_: Any) -> None:
        """Registry observer: every worker re-reads the store."""
        for slot in self._slots:
            proc = slot.proc
            if proc is not None and proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    proc.stdin.write(b"\n")

    def signal(self, sig: signal.Signals) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    async def stop(self) -> None:
        """Close every worker's pipe (it drains and exits); SIGKILL what is left after a while."""
        self._stopping = True
        for slot in self._slots:
            if slot.task is not None:
                slot.task.cancel()
            if slot.metrics is not None:
                slot.metrics.close()
            if slot.proc is not None and slot.proc.stdin is not None:
                slot.proc.stdin.close()
        procs = [s.proc for s in self._slots if s.proc is not None]
        if not procs:
            return
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(p.wait()) for p in procs], timeout=STOP_TIMEOUT
        )
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for fut in pending:
            await fut
