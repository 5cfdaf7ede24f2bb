"""The read-only metrics listener: ``GET /metrics`` and nothing else (every other path 404).

It is a separate aiohttp application from the admin API, so no admin route can be reached on
it; it reuses the admin listeners' connection handling (``api.server``: a header timeout, a
connection cap, TLS handshakes classified and counted).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..api.limits import Refusals
from ..api.server import AdminSite, Listener
from ..config import MetricsListener
from ..metrics import CONTENT_TYPE

log = logging.getLogger("clusterlink.telemetry")

HEADER_TIMEOUT = 10.0  # request headers complete this long after the connection
MAX_CONNECTIONS = 64  # open scraper connections at once

Gather = Callable[[], Awaitable[bytes]]
GATHER: web.AppKey[Gather] = web.AppKey("gather")


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[GATHER]()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def build_metrics_app(gather: Gather) -> web.Application:
    """The application: ``/metrics`` (GET, HEAD) only."""
    app = web.Application(client_max_size=1024)
    app[GATHER] = gather
    app.router.add_get("/metrics", _metrics)
    return app


class MetricsServer:
    """Serves ``gather()`` at ``http(s)://address:port/metrics`` until ``stop``."""

    def __init__(
        self,
        config: MetricsListener,
        gather: Gather,
        refusals: Refusals,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self._app = build_metrics_app(gather)
        self._refusals = refusals
        self._tls = tls
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; OSError if the address cannot be bound."""
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        assert runner.server is not None
        tls = self._tls
        listener = Listener(
            "metrics",
            runner.server,
            header_timeout=HEADER_TIMEOUT,
            max_connections=MAX_CONNECTIONS,
            refusals=self._refusals,
            tls=(lambda: tls) if tls is not None else None,
        )
        loop = asyncio.get_running_loop()
        address, port = self.config.address, self.config.port
        try:
            await AdminSite(
                runner, listener, lambda f: loop.create_server(f, address, port)
            ).start()
        except OSError:
            await self.stop()
            raise
        log.info(
            "metrics listener started",
            extra={"address": f"{address}:{port}", "tls": tls is not None},
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
