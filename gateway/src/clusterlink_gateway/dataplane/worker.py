"""A data-plane worker process (``workers: N`` starts N-1 of them beside the main process).

A worker runs the data plane only: the peer port and the import listeners (bound with
SO_REUSEPORT beside the main process's, so the kernel spreads new connections over the
processes), its own links and heartbeats to the peers, ingress and egress policy. It has no
admin API and never writes the store: it reads the objects from the main process's SQLite
database (read-only, WAL) at start and again whenever the main process writes a line to its
stdin (after every object change). End of file on stdin means the main process is gone, even
after ``kill -9``: the worker stops. ``PR_SET_PDEATHSIG`` backs that up on Linux.

Run as ``python -m clusterlink_gateway.dataplane.worker --config PATH --parent PID
[--metrics-fd FD]``; FD is its end of the socketpair on which the main process asks for its
metrics (``telemetry.channel``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

import uvloop

from ..config import Config, ConfigError, load_config, tls_settings
from ..logs import setup_logging
from ..peering import TLSError
from ..peering.tuning import tune_malloc
from ..registry import Registry
from ..store.sqlite import Store
from ..telemetry.channel import serve_worker_metrics
from ..telemetry.families import encode
from .plane import DataPlane

log = logging.getLogger("clusterlink.worker")

_PR_SET_PDEATHSIG = 1


class _Control(asyncio.Protocol):
    """The main process's end of stdin: a line per object change, end of file when it exits."""

    def __init__(self, on_change: asyncio.Event, on_eof: asyncio.Event) -> None:
        self._on_change = on_change
        self._on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        self._on_change.set()

    def eof_received(self) -> bool:
        self._on_eof.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof.set()


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux); exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class Worker:
    """The data plane of one worker process, kept in step with the main process's store."""

    def __init__(self, config_path: Path, config: Config, metrics_fd: int | None = None) -> None:
        self.config_path = config_path
        self.metrics_fd = metrics_fd
        self.config = config
        self.local = {"peer_name": config.peer_name, "labels": dict(config.labels)}
        self.store = Store(config.state_dir / "state.db", readonly=True)
        self.registry = Registry(
            self.store,
            import_bind=config.imports.bind,
            port_range=config.imports.port_range,
            address_range=config.imports.address_range,
        )
        self.plane = DataPlane(config, self.registry, self.local)
        self.changed = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: _Control(self.changed, self.stop), sys.stdin)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.store.open()
        await self.plane.start()
        await self.registry.load()
        await self.plane.serve()
        log.info("data-plane worker started", extra={"pid": os.getpid()})
        tasks = [loop.create_task(self._follow_store(), name="follow-store")]
        if self.metrics_fd is not None:
            sock = socket.socket(fileno=self.metrics_fd)
            registry = self.plane.metrics.registry
            tasks.append(
                loop.create_task(
                    serve_worker_metrics(
                        sock,
                        lambda: encode(registry.collect()),
                        refusals=lambda: self.plane.refusals.encode(),
                    ),
                    name="metrics-channel",
                )
            )
        try:
            await self.stop.wait()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.plane.stop()
            await self.store.close()
            log.info("data-plane worker stopped", extra={"pid": os.getpid()})

    async def _follow_store(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()  # changes that arrive while syncing trigger another round
            try:
                await self.registry.sync()
            except Exception:
                log.exception("worker: reading the store failed; retrying")
                await asyncio.sleep(1.0)
                self.changed.set()

    def reload(self) -> None:
        """SIGHUP (forwarded by the main process): labels, log settings and certificates."""
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("worker reload failed", extra={"error": str(exc)})
            return
        setup_logging(new.log.level, new.log.format, new.log.audit)
        self.local["labels"] = dict(new.labels)
        with contextlib.suppress(TLSError):  # the main process logs the refusal
            self.plane.reload_tls(replace(tls_settings(new), expected_name=self.config.peer_name))
        self.plane.apply_config(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clusterlink-gateway-worker")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--metrics-fd", type=int, default=None)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"clusterlink-gateway worker: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log.level, config.log.format, config.log.audit)
    tune_malloc()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run(args.config, config, args.metrics_fd))
    return 0


async def _run(config_path: Path, config: Config, metrics_fd: int | None = None) -> None:
    await Worker(config_path, config, metrics_fd).run()


if __name__ == "__main__":
    sys.exit(main())
