"""The read-only metrics listener: ``GET /metrics`` and, unless ``metrics.fabric_page`` is
false, the live fabric page (``/fabric``, its assets under ``/fabric/``, ``/fabric.json``);
every other path is 404.

It is a separate aiohttp application from the admin API, so no admin route can be reached on
it; it reuses the admin listeners' connection handling (``api.server``: a header timeout, a
connection cap, TLS handshakes classified and counted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from ..api.limits import Refusals
from ..api.server import AdminSite, Listener
from ..config import MetricsListener
from ..metrics import CONTENT_TYPE

log = logging.getLogger("clusterlink.telemetry")

HEADER_TIMEOUT = 10.0  # request headers complete this long after the connection
MAX_CONNECTIONS = 64  # open scraper connections at once

Gather = Callable[[], Awaitable[bytes]]
Fabric = Callable[[], Awaitable[dict[str, Any]]]
GATHER: web.AppKey[Gather] = web.AppKey("gather")
FABRIC: web.AppKey[Fabric] = web.AppKey("fabric")

# the page's files (package data): path under /fabric -> (file, content type)
ASSETS = {
    "": ("fabric.html", "text/html; charset=utf-8"),
    "/app.js": ("fabric.js", "text/javascript; charset=utf-8"),
    "/style.css": ("fabric.css", "text/css; charset=utf-8"),
}
# everything from this origin, nothing inline, nothing fetched from elsewhere
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
}


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[GATHER]()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _fabric_json(request: web.Request) -> web.Response:
    document = await request.app[FABRIC]()
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = {**PAGE_HEADERS, "Content-Type": "application/json", "Cache-Control": "no-store"}
    return web.Response(body=body, headers=headers)


def _asset(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={**PAGE_HEADERS, "Content-Type": content_type})

    return handler


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The page's files, read from the installed package (``telemetry/static``)."""
    static = resources.files(__package__).joinpath("static")
    return {path: (static.joinpath(f).read_bytes(), ct) for path, (f, ct) in ASSETS.items()}


def build_metrics_app(gather: Gather, fabric: Fabric | None = None) -> web.Application:
    """The application: ``/metrics`` (GET, HEAD) and, with ``fabric``, the fabric page."""
    app = web.Application(client_max_size=1024)
    app[GATHER] = gather
    app.router.add_get("/metrics", _metrics)
    if fabric is not None:
        app[FABRIC] = fabric
        app.router.add_get("/fabric.json", _fabric_json)
        for path, (body, content_type) in load_assets().items():
            app.router.add_get(f"/fabric{path}", _asset(body, content_type))
    return app


class MetricsServer:
    """Serves ``gather()`` at ``http(s)://address:port/metrics`` until ``stop``."""

    def __init__(
        self,
        config: MetricsListener,
        gather: Gather,
        refusals: Refusals,
        tls: ssl.SSLContext | None = None,
        fabric: Fabric | None = None,
    ) -> None:
        self.config = config
        self._app = build_metrics_app(gather, fabric)
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
            extra={
                "address": f"{address}:{port}",
                "tls": tls is not None,
                "fabric_page": FABRIC in self._app,
            },
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
