"""Daemon lifecycle: start-up, signal handling (TERM/INT stop, HUP reloads), shutdown."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import grp
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiohttp import web

from . import systemd
from .api.app import build_app
from .api.limits import Refusals
from .api.server import AdminSite, Listener
from .config import (
    Config,
    ConfigError,
    check_runtime,
    load_config,
    merge_live,
    reload_plan,
    tls_settings,
)
from .dataplane import DataPlane
from .dataplane.refusals import merge as merge_refusals
from .logs import setup_logging
from .model.objects import Kind
from .peering import TLSError
from .peering.tls import AdminTLS
from .registry import Entry, Registry
from .store.sqlite import Store

if TYPE_CHECKING:  # imported where used: only some configurations need them (RSS, start-up)
    from .dataplane.workers import WorkerPool
    from .names import NameServer
    from .telemetry.gather import Fetch
    from .telemetry.listener import MetricsServer

log = logging.getLogger("clusterlink.daemon")


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


class Daemon:
    """One gateway process: its store, registry and listeners."""

    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.info: dict[str, Any] = {
            "peer_name": config.peer_name,
            "labels": dict(config.labels),
            "started": time.monotonic(),
            "ready": False,
        }
        self.store = Store(config.state_dir / "state.db")
        self.registry = Registry(
            self.store,
            import_bind=config.imports.bind,
            port_range=config.imports.port_range,
            address_range=config.imports.address_range,
        )
        self._stop = asyncio.Event()
        self._lock_file: IO[str] | None = None
        self._runner: web.AppRunner | None = None
        self._admin_tls: AdminTLS | None = None
        self.dataplane: DataPlane | None = None
        self.workers: WorkerPool | None = None
        self._metrics_server: MetricsServer | None = None
        self.names: NameServer | None = None

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then shut down cleanly."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self._stop.wait()
        finally:
            try:
                await self.shutdown()  # a second stop signal during the drain exits at once
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)

    async def start(self) -> None:
        problems = check_runtime(self.config)
        if problems:
            raise StartupError("; ".join(problems))
        self._lock_state_dir()
        try:
            self.dataplane = DataPlane(self.config, self.registry, self.info)
        except TLSError as exc:
            raise StartupError(f"tls: {exc}") from None
        await self.store.open()
        self.dataplane.enable_grants(self.store)  # the main process serves redemptions
        try:
            await self.dataplane.start()
        except OSError as exc:
            raise StartupError(
                f"listen: cannot listen on {self.config.listen.address}:{self.config.listen.port}: "
                f"{exc.strerror}"
            ) from None
        await self.registry.load()
        await self.dataplane.serve()  # not before: a peer would be refused as unknown
        systemd.close_unclaimed()
        await self._start_names()
        await self._start_admin()
        if self.config.workers > 1:
            from .dataplane.workers import WorkerPool

            self.workers = WorkerPool(self.config_path.absolute(), self.config.workers - 1)
            self.registry.observers.append(self.workers.on_change)
            await self.workers.start()
        await self._start_metrics()
        # The start-up heap (modules, models, the app: ~65,000 objects) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise cost an idle
        # gateway tens of ms each (see docs/benchmarks.md, "Idle mesh").
        gc.collect()
        gc.freeze()
        self.info["ready"] = True
        systemd.notify("READY=1", f"STATUS=serving as {self.config.peer_name}")
        log.info(
            "gateway started",
            extra={
                "peer_name": self.config.peer_name,
                "admin_socket": str(self.config.admin.socket),
                "objects": {k: len(v) for k, v in self.registry.objects.items()},
                "invalid_objects": len(self.registry.invalid),
            },
        )

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("second stop signal: exiting now")
            os._exit(1)
        log.info("stop signal received", extra={"signal": sig.name})
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        self.info["ready"] = False
        systemd.notify("STOPPING=1", "STATUS=draining")
        if self._metrics_server is not None:
            await self._metrics_server.stop()
            self._metrics_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.workers is not None:
            await self.workers.stop()
        if self.names is not None:
            await self.names.close()
            self.names = None
        if self.dataplane is not None:
            await self.dataplane.stop(self.config.dataplane.drain_timeout)
        with suppress(FileNotFoundError):
            self.config.admin.socket.unlink()
        await self.store.close()
        if self._lock_file is not None:
            self._lock_file.close()
        log.info("gateway stopped")

    def reload(self) -> None:
        """SIGHUP: re-read the config file and certificates; nothing is applied unless all of it
        is accepted. Settings that cannot change live are named in ``needs_restart``."""
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload failed; keeping the running configuration", extra={"error": str(exc)})
            return
        problems = check_runtime(new, tls=self.dataplane is None)
        staged_tls = staged_admin = None
        if self.dataplane is not None:  # the acceptance rule; refusals are counted there
            try:
                # our name stays the running one: a new peer_name needs a restart
                settings = replace(tls_settings(new), expected_name=self.config.peer_name)
                staged_tls = self.dataplane.tls.prepare(settings)
            except TLSError as exc:
                problems.append(
                    f"tls: cannot load certificate, key, CA bundle or revocation list: {exc}"
                )
            if new.admin.tcp is not None:
                tcp = new.admin.tcp
                try:
                    staged_admin = AdminTLS.prepare(tcp.cert, tcp.key, tcp.client_ca)
                except TLSError as exc:
                    self.dataplane.metrics.tls_reload_failures.labels(exc.reason).inc()
                    problems.append(f"admin.tcp: cannot load certificate, key or client CA: {exc}")
        if problems:
            log.error(
                "reload failed; keeping the running configuration",
                extra={"error": "; ".join(problems)},
            )
            return
        live, restart_needed = reload_plan(self.config, new)
        setup_logging(new.log.level, new.log.format, new.log.audit)
        self.info["labels"] = dict(new.labels)
        if self.workers is not None:
            self.workers.signal(signal.SIGHUP)
        if self._admin_tls is not None and staged_admin is not None:
            self._admin_tls.commit(staged_admin)
        if self.dataplane is not None:
            if staged_tls is not None:
                self.dataplane.tls.commit(staged_tls)
            self.dataplane.apply_config(new)
        self.config = merge_live(self.config, new, live)
        (log.warning if restart_needed else log.info)(
            "configuration reloaded",
            extra={"applied": live, "needs_restart": restart_needed},
        )

    # -- helpers -----------------------------------------------------------------------------

    def _lock_state_dir(self) -> None:
        state_dir = self.config.state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        lock = open(state_dir / "gateway.lock", "a+")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(
                    f"state_dir {state_dir} is in use by another running gateway"
                ) from None
            raise
        self._lock_file = lock

    async def _start_names(self) -> None:
        """The import name server (only this main process answers DNS, never a worker), and
        the hosts-file copy of the names, rewritten on every import change."""
        dns = self.config.dns
        if dns is None:
            return
        from .names import NameServer, parse_zone  # dnspython: only with dns configured
        from .names.records import hosts_lines, import_records, write_hosts_file

        registry = self.registry
        self.names = NameServer(
            parse_zone(dns.zone),
            dns.address,
            dns.port,
            lambda: import_records(registry),
            ttl=dns.ttl,
        )
        try:
            await self.names.start()
        except OSError as exc:
            self.names = None
            raise StartupError(
                f"dns: cannot listen on {dns.address}:{dns.port}: {exc.strerror}"
            ) from None
        if dns.hosts_file is not None:
            hosts_file = dns.hosts_file

            def write() -> None:
                try:
                    write_hosts_file(hosts_file, hosts_lines(dns.zone, import_records(registry)))
                except OSError as exc:
                    log.error(
                        "cannot write dns.hosts_file",
                        extra={"path": str(hosts_file), "error": exc.strerror},
                    )

            async def on_change(kind: Kind, _n: str, _o: Entry | None, _e: Entry | None) -> None:
                if kind.plural == "imports":
                    write()

            write()
            registry.observers.append(on_change)

    async def _start_admin(self) -> None:
        admin = self.config.admin
        assert self.dataplane is not None
        counter = self.dataplane.metrics.admin_refusals
        refusals = Refusals(lambda reason: counter.labels(reason).inc())
        app = build_app(
            self.registry,
            self.info,
            max_body=admin.max_body_bytes,
            offers_fn=self.dataplane.offers,
            explain_fn=self.dataplane.explain,
            metrics_fn=self.dataplane.metrics.render,
            body_timeout=admin.body_timeout,
            refusals=refusals,
            grants=self.dataplane.grants,
        )
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        assert self._runner.server is not None
        loop = asyncio.get_running_loop()

        def listener(name: str, tls: Callable[[], ssl.SSLContext | None] | None = None) -> Listener:
            assert self._runner is not None and self._runner.server is not None
            return Listener(
                name,
                self._runner.server,
                header_timeout=admin.header_timeout,
                max_connections=admin.max_connections,
                refusals=refusals,
                tls=tls,
            )

        _prepare_socket_path(admin.socket)
        old_umask = os.umask(0o777 & ~admin.socket_mode)
        try:
            await AdminSite(
                self._runner,
                listener("unix"),
                lambda f: loop.create_unix_server(f, str(admin.socket)),
            ).start()
        finally:
            os.umask(old_umask)
        os.chmod(admin.socket, admin.socket_mode)
        if admin.socket_group is not None:
            gid = grp.getgrnam(admin.socket_group).gr_gid
            if os.stat(admin.socket).st_gid != gid:  # no chown needed when run as that group
                os.chown(admin.socket, -1, gid)
        if admin.tcp is not None:
            tcp = admin.tcp
            try:
                self._admin_tls = AdminTLS(tcp.cert, tcp.key, tcp.client_ca)
            except TLSError as exc:
                raise StartupError(f"admin.tcp: {exc}") from None
            self.dataplane.admin_tls = self._admin_tls  # its expiry in status and metrics
            await AdminSite(
                self._runner,
                listener("tcp", self._admin_tls.context),
                lambda f: loop.create_server(f, tcp.address, tcp.port),
            ).start()

    async def _start_metrics(self) -> None:
        """The read-only metrics listener (``metrics:``), serving every process's metrics."""
        config = self.config.metrics
        if config is None:
            return
        from .telemetry.fabric import snapshot  # only with a metrics listener
        from .telemetry.gather import collect, gather, gather_documents
        from .telemetry.listener import MetricsServer
        from .telemetry.tls import server_context

        assert self.dataplane is not None
        metrics = self.dataplane.metrics
        try:
            tls = server_context(config.tls) if config.tls is not None else None
        except TLSError as exc:
            raise StartupError(f"metrics.tls: {exc}") from None
        workers = self.workers

        recent = self.dataplane.refusals

        def fetchers(kind: str = "metrics") -> dict[str, Fetch]:
            return workers.metrics_fetchers(kind) if workers is not None else {}

        async def scrape() -> bytes:
            return await gather(metrics.registry, fetchers())

        async def fabric() -> dict[str, Any]:
            (families, answered), documents = await asyncio.gather(
                collect(metrics.registry, fetchers()),
                gather_documents(recent.document(), fetchers("refusals")),
            )
            refusals, total = merge_refusals(documents)
            return snapshot(
                self.registry, self.info, families, answered, refusals, refusals_total=total
            )

        counter = metrics.metrics_refusals
        refusals = Refusals(
            lambda reason: counter.labels(reason).inc(), message="metrics request refused"
        )
        page = fabric if config.fabric_page else None
        server = MetricsServer(config, scrape, refusals, tls, fabric=page)
        try:
            await server.start()
        except OSError as exc:
            raise StartupError(
                f"metrics: cannot listen on {config.address}:{config.port}: {exc.strerror}"
            ) from None
        self._metrics_server = server


def _prepare_socket_path(path: Path) -> None:
    """Create the socket's directory; remove a stale socket, refuse a live one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise StartupError(f"admin.socket {path} is served by another running process")
