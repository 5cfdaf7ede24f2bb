"""The admin API's peering-grant routes (``/v1/grants``): create, list, revoke, redeem.

The grant text is in the answer to its creation only; listings show metadata, never the
secret. A refused redemption answers 409 with ``result`` (the reason class) and ``message``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..dataplane.grants import GrantService

log = logging.getLogger("clusterlink.api")

GRANTS: web.AppKey[GrantService] = web.AppKey("grants", GrantService)
BodyFn = Callable[[web.Request], Awaitable[Any]]
OK_RESULTS = ("accepted", "already-redeemed")


def add_routes(app: web.Application, service: GrantService, body: BodyFn) -> None:
    """Register the routes (before the generic ``/v1/{kind}`` ones)."""
    app[GRANTS] = service

    async def create(request: web.Request) -> web.Response:
        record, text = await request.app[GRANTS].create(await body(request))
        doc = {**record.metadata(request.app[GRANTS].clock()), "grant": text}
        return web.json_response(
            doc,
            status=201,
            headers={"Location": f"/v1/grants/{record.id}", "Cache-Control": "no-store"},
        )

    async def list_grants(request: web.Request) -> web.Response:
        return web.json_response(await request.app[GRANTS].list())

    async def revoke(request: web.Request) -> web.Response:
        return web.json_response(await request.app[GRANTS].revoke(request.match_info["id"]))

    async def redeem(request: web.Request) -> web.Response:
        answer = await request.app[GRANTS].redeem(await body(request))
        status = 200 if answer.get("result") in OK_RESULTS else 409
        if status == 409:
            answer = {"status": 409, "reason": "Conflict", "field": "grant", **answer}
        return web.json_response(answer, status=status)

    app.router.add_post("/v1/grants/redeem", redeem)
    app.router.add_post("/v1/grants", create)
    app.router.add_get("/v1/grants", list_grants, allow_head=False)
    app.router.add_delete("/v1/grants/{id:(?!redeem$)[^/]+}", revoke)
