"""What the admin API refuses before a handler runs, as pure pieces.

Strict JSON bodies (one value per key, bounded nesting, no NaN), the media types a body may
have, the connection slots of one listener, and the refusal reasons with their rate-limited
log line. The I/O around them (timers, sockets, TLS) is in ``api/server.py``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from ..peering.accept import LOG_LINES_PER_SECOND, _RateLimit

log = logging.getLogger("clusterlink.api")

MAX_JSON_DEPTH = 32  # arrays and objects nested deeper than this are refused

# The ``reason`` label of clusterlink_admin_refusals_total. TLS handshake failures on the admin
# TCP listener are ``tls-<class>`` with the classes of ``peering.accept.classify``
# (tls-no-certificate, tls-unknown-ca, tls-expired, tls-timeout, tls-closed, ...).
HEADER_TIMEOUT = "header-timeout"  # request headers not complete within admin.header_timeout
BODY_TIMEOUT = "body-timeout"  # request body not complete within admin.body_timeout
TOO_MANY_CONNECTIONS = "too-many-connections"  # the listener holds admin.max_connections
BAD_JSON = "bad-json"  # not JSON, duplicate keys, nested too deep
UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"  # a body that is not application/json
BODY_TOO_LARGE = "body-too-large"  # larger than admin.max_body_bytes
TLS_PREFIX = "tls-"

JSON_MEDIA_TYPE = "application/json"

# A JSON string (escapes included) or one bracket: the tokens that decide nesting depth.
_DEPTH_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class BadJSON(ValueError):
    """A request body the admin API does not accept as JSON; the message says why."""


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (brackets inside strings do not
    count); linear, without recursion, so any input is safe to measure."""
    depth = deepest = 0
    for match in _DEPTH_TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BadJSON(f"duplicate key {key!r} in a JSON object")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON value")


def parse_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a request body as strict JSON: UTF-8, no duplicate keys, no NaN/Infinity,
    nesting at most ``max_depth``. Raises BadJSON with a message for the client."""
    depth = json_depth(raw)
    if depth > max_depth:
        raise BadJSON(f"JSON nested deeper than {max_depth} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJSON(f"request body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:  # only if max_depth were raised past the interpreter's limit
        raise BadJSON(f"JSON nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise BadJSON(f"request body is not valid JSON: {exc}") from None


def media_type_problem(content_type: str | None, charset: str | None) -> str | None:
    """Why a request body of this Content-Type is refused (415), or None if it is JSON."""
    if not content_type:
        return f"a request body needs Content-Type: {JSON_MEDIA_TYPE}"
    if content_type.lower() != JSON_MEDIA_TYPE:
        return f"Content-Type {content_type} is not supported; send {JSON_MEDIA_TYPE}"
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        return f"charset {charset} is not supported; JSON bodies are UTF-8"
    return None


class Slots:
    """Open connections of one listener, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def acquire(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def release(self) -> None:
        self.used = max(0, self.used - 1)


CountFn = Callable[[str], None]


class Refusals:
    """Count every refusal (``count(reason)``) and log it, at most LOG_LINES_PER_SECOND lines a
    second; the next line says how many were not logged (``suppressed``)."""

    def __init__(
        self,
        count: CountFn,
        per_second: int = LOG_LINES_PER_SECOND,
        message: str = "admin request refused",
    ) -> None:
        self.count = count
        self.message = message
        self._limit = _RateLimit(per_second)

    def __call__(
        self, reason: str, detail: str, *, listener: str, client: str | None = None
    ) -> None:
        self.count(reason)
        ok, suppressed = self._limit.allow()
        if not ok:
            return
        extra: dict[str, Any] = {"listener": listener, "reason": reason, "detail": detail}
        if client:
            extra["client_address"] = client
        if suppressed:
            extra["suppressed"] = suppressed
        quiet = reason == f"{TLS_PREFIX}closed"  # probes and clients that hang up: not alarming
        (log.info if quiet else log.warning)(self.message, extra=extra)
