"""The admin API: JSON over HTTP/1.1 under ``/v1``, served by aiohttp."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web

from .. import __version__
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..model.common import DNS_LABEL
from ..model.objects import KINDS, Kind
from ..policy.attributes import parse_client_ip
from ..registry import NotFound, Registry, RegistryError
from ..store.sqlite import StoreError
from .limits import (
    BAD_JSON,
    BODY_TIMEOUT,
    BODY_TOO_LARGE,
    MAX_JSON_DEPTH,
    UNSUPPORTED_MEDIA_TYPE,
    BadJSON,
    Refusals,
    media_type_problem,
    parse_json,
)
from .openapi import openapi_document

log = logging.getLogger("clusterlink.api")

REGISTRY: web.AppKey[Registry] = web.AppKey("registry", Registry)
DAEMON_INFO: web.AppKey[dict[str, Any]] = web.AppKey("daemon_info", dict)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)
OffersFn = Callable[[str], Awaitable[list[dict[str, Any]]]]
OFFERS: web.AppKey[OffersFn] = web.AppKey("offers")
ExplainFn = Callable[[str, str, str | None], Awaitable[dict[str, Any]]]
EXPLAIN: web.AppKey[ExplainFn] = web.AppKey("explain")
METRICS: web.AppKey[Callable[[], bytes]] = web.AppKey("metrics")
BODY_SECONDS: web.AppKey[float] = web.AppKey("body_timeout", float)
REFUSALS: web.AppKey[Refusals] = web.AppKey("refusals", Refusals)

_DNS_LABEL = re.compile(DNS_LABEL)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, message: str, *, field: str | None = None, details: list | None = None
) -> web.Response:
    body: dict[str, Any] = {
        "status": status,
        "reason": HTTPStatus(status).phrase,
        "message": message,
    }
    if field is not None:
        body["field"] = field
    if details:
        body["details"] = details
    return web.json_response(body, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as a JSON body naming what went wrong."""
    try:
        return await handler(request)
    except RegistryError as exc:
        return error_response(exc.status, exc.message, field=exc.field, details=exc.details)
    except StoreError as exc:
        log.error("store write failed", extra={"error": str(exc)})
        return error_response(507, str(exc))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY]
        _refused(request, BODY_TOO_LARGE, f"body larger than {limit} bytes")
        return error_response(413, f"request body too large (limit {limit} bytes)")
    except BodyTimedOut as exc:
        return await _close_with(request, error_response(408, str(exc)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("admin API request failed", extra={"path": request.path})
        return error_response(500, "internal error; see the gateway log")


def _kind(request: web.Request) -> Kind:
    plural = request.match_info["kind"]
    kind = KINDS.get(plural)
    if kind is None:
        raise NotFound(f"unknown kind {plural!r}; expected one of {', '.join(KINDS)}")
    return kind


class UnsupportedMediaType(RegistryError):
    status = 415


class BodyTimedOut(Exception):
    """The request body did not arrive within admin.body_timeout."""


def _refused(request: web.Request, reason: str, detail: str) -> None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else None
    listener = "tcp" if request.secure else "unix"
    request.app[REFUSALS](reason, detail, listener=listener, client=client)


async def _close_with(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` and close the connection at once, without draining the body."""
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass
    request.protocol.force_close()
    return response


async def _body(request: web.Request) -> Any:
    """The request body as strict JSON: Content-Type application/json, complete within
    admin.body_timeout, no duplicate keys, nesting at most MAX_JSON_DEPTH."""
    if request.body_exists:
        content_type = request.content_type if hdrs.CONTENT_TYPE in request.headers else None
        problem = media_type_problem(content_type, request.charset)
        if problem is not None:
            _refused(request, UNSUPPORTED_MEDIA_TYPE, problem)
            raise UnsupportedMediaType(problem, field="Content-Type")
    timeout = request.app[BODY_SECONDS]
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        detail = f"request body not complete within {timeout:g} s (admin.body_timeout)"
        _refused(request, BODY_TIMEOUT, detail)
        raise BodyTimedOut(detail) from None
    if not raw:
        raise RegistryError("request body is empty; expected a JSON object", field="(body)")
    try:
        return parse_json(raw, MAX_JSON_DEPTH)
    except BadJSON as exc:
        _refused(request, BAD_JSON, str(exc))
        raise RegistryError(str(exc), field="(body)") from None


async def list_objects(request: web.Request) -> web.Response:
    kind = _kind(request)
    registry = request.app[REGISTRY]
    return web.json_response([registry.document(e) for e in registry.list(kind)])


async def get_object(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    entry = registry.get(_kind(request), request.match_info["name"])
    return web.json_response(registry.document(entry))


async def create_object(request: web.Request) -> web.Response:
    kind = _kind(request)
    registry = request.app[REGISTRY]
    entry = await registry.create(kind, await _body(request))
    log.info("object created", extra={"kind": kind.singular, "object": entry.name})
    return web.json_response(
        registry.document(entry),
        status=201,
        headers={"Location": f"/v1/{kind.plural}/{entry.name}"},
    )


async def replace_object(request: web.Request) -> web.Response:
    kind = _kind(request)
    registry = request.app[REGISTRY]
    entry = await registry.replace(kind, request.match_info["name"], await _body(request))
    log.info("object updated", extra={"kind": kind.singular, "object": entry.name})
    return web.json_response(registry.document(entry))


async def delete_object(request: web.Request) -> web.Response:
    kind = _kind(request)
    name = request.match_info["name"]
    await request.app[REGISTRY].delete(kind, name)
    log.info("object deleted", extra={"kind": kind.singular, "object": name})
    return web.Response(status=204)


async def offers(request: web.Request) -> web.Response:
    """The exports a remote peer offers us, asked over our link to it."""
    name = request.match_info["name"]
    request.app[REGISTRY].get(KINDS["peers"], name)  # 404 for an unknown peer
    try:
        items = await request.app[OFFERS](name)
    except (OSError, TimeoutError, ValueError) as exc:
        return error_response(
            502, f"peer {name!r} did not answer: {str(exc) or type(exc).__name__}"
        )
    return web.json_response(items)


def _query_name(request: web.Request, field: str) -> str:
    value = request.query.get(field)
    if not value:
        raise RegistryError(f"query parameter {field!r} is required", field=field)
    if not _DNS_LABEL.fullmatch(value):
        raise RegistryError(f"{field} {value[:64]!r} is not a DNS label", field=field)
    return value


async def explain(request: web.Request) -> web.Response:
    """Which policy decides, at this gateway and (asked over the link) at the peer, both ways;
    read-only."""
    peer = _query_name(request, "peer")
    export = _query_name(request, "export")
    client_ip = request.query.get("client_ip")
    if client_ip is not None:
        try:
            client_ip = str(parse_client_ip(client_ip))
        except ValueError:
            message = f"client_ip {client_ip[:64]!r} is not an IP address"
            raise RegistryError(message, field="client_ip") from None
    if peer not in request.app[REGISTRY].objects[KINDS["peers"].plural]:
        raise NotFound(f"peer {peer!r} not found", field="peer")
    return web.json_response(await request.app[EXPLAIN](peer, export, client_ip))


async def status(request: web.Request) -> web.Response:
    info = request.app[DAEMON_INFO]
    body = {
        "peer_name": info["peer_name"],
        "labels": info["labels"],
        "version": __version__,
        "uptime_seconds": round(time.monotonic() - info["started"], 3),
        "ready": info["ready"],
        **request.app[REGISTRY].summary(),
    }
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS]()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[DAEMON_INFO]["ready"]
    return web.json_response({"ready": ready}, status=200 if ready else 503)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def build_app(
    registry: Registry,
    info: dict[str, Any],
    *,
    max_body: int,
    offers_fn: OffersFn,
    explain_fn: ExplainFn,
    metrics_fn: Callable[[], bytes],
    body_timeout: float = 30.0,
    refusals: Refusals | None = None,
    grants: Any = None,
) -> web.Application:
    """The admin application, shared by the unix-socket and the TCP listener."""
    app = web.Application(middlewares=[json_errors], client_max_size=max_body)
    app[BODY_SECONDS] = body_timeout
    app[REFUSALS] = refusals if refusals is not None else Refusals(lambda reason: None)
    app[REGISTRY] = registry
    app[DAEMON_INFO] = info
    app[MAX_BODY] = max_body
    app[OFFERS] = offers_fn
    app[EXPLAIN] = explain_fn
    app[METRICS] = metrics_fn
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/v1/status", status, allow_head=False)
    app.router.add_get("/v1/openapi.json", openapi, allow_head=False)
    app.router.add_get("/v1/peers/{name}/offers", offers, allow_head=False)
    app.router.add_get("/v1/explain", explain, allow_head=False)
    if grants is not None:  # a dataplane.grants.GrantService
        from .grants import add_routes

        add_routes(app, grants, _body)
    kind = r"{kind:(?!status$|openapi\.json$|explain$|grants(?:$|/))[^/]+}"
    app.router.add_get(f"/v1/{kind}", list_objects, allow_head=False)
    app.router.add_post(f"/v1/{kind}", create_object)
    app.router.add_get(f"/v1/{kind}/{{name}}", get_object, allow_head=False)
    app.router.add_put(f"/v1/{kind}/{{name}}", replace_object)
    app.router.add_delete(f"/v1/{kind}/{{name}}", delete_object)
    return app
