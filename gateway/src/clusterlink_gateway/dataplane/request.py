"""What a peer's CONNECT asks for, read from its pseudo-headers and headers (pure, no I/O).

The caller's identity is not in here on purpose: it comes from the verified certificate only.
A request that tries to state it (an ``x-clusterlink-peer*`` header) is refused, as is anything
malformed; ``RequestError`` carries the 4xx status, a reason class for the metric and a short
message that never echoes a long value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..policy.attributes import parse_client_ip

EXPORT_HEADER = "x-clusterlink-export"
CLIENT_IP_HEADER = "x-clusterlink-client-ip"
IMPORT_HEADER = "x-clusterlink-import"
IDENTITY_PREFIX = "x-clusterlink-peer"  # identity is the certificate's; never a header's
_SINGLE = (EXPORT_HEADER, CLIENT_IP_HEADER, IMPORT_HEADER)
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

HeaderInput = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]

# reason classes of refusals (the ``reason`` label of clusterlink_peer_requests_refused_total)
REASONS = (
    "bad-request",  # malformed CONNECT (pseudo-headers, missing or duplicate fields)
    "spoofed-identity",  # a header claims a peer identity
    "unknown-export",
    "not-allowed",  # not in the export's allowed_peers
    "denied",  # ingress policy
    "export-unreachable",
    "not-found",  # no such endpoint on the peer port
)


class RequestError(ValueError):
    """A request refused before any lookup: ``status`` is 400 or 403."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A well-formed CONNECT: which export, and the client address the importer reports."""

    export: str
    client_ip: str | None
    import_name: str | None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def shorten(value: str, limit: int = 64) -> str:
    """``value`` cut to ``limit`` characters for a log line or an error message."""
    return value if len(value) <= limit else value[:limit] + "..."


def normalise_headers(headers: HeaderInput) -> list[tuple[str, str]]:
    """(lower-case name, value) pairs from a mapping or a raw list of str/bytes pairs."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(_text(name).lower(), _text(value)) for name, value in items]


def parse_connect(
    method: str | None,
    authority: str | None,
    path: str | None,
    headers: HeaderInput,
) -> ConnectRequest:
    """Interpret a CONNECT from a peer; RequestError (400/403) for anything else."""
    if method != "CONNECT":
        raise RequestError(400, "bad-request", "not a CONNECT")
    if not authority:
        raise RequestError(400, "bad-request", "CONNECT without :authority")
    if path is not None:
        raise RequestError(400, "bad-request", "CONNECT must not carry :path")
    return _fields(headers)


def parse_explain(headers: HeaderInput) -> ConnectRequest:
    """Interpret a peer's ``GET /v1/explain``: the same headers as its CONNECT would carry
    (export, client address; never an identity). RequestError (400/403) if malformed."""
    return _fields(headers)


def _fields(headers: HeaderInput) -> ConnectRequest:
    seen: dict[str, str] = {}
    for name, value in normalise_headers(headers):
        if name.startswith(":"):
            continue  # pseudo-headers come separately; a stray one in the list is ignored
        if name.startswith(IDENTITY_PREFIX):
            raise RequestError(
                403, "spoofed-identity", "the caller's identity comes from its certificate only"
            )
        if name in _SINGLE:
            if name in seen:
                raise RequestError(400, "bad-request", f"{name} given more than once")
            seen[name] = value
    export = seen.get(EXPORT_HEADER)
    if not export:
        raise RequestError(400, "bad-request", f"{EXPORT_HEADER} missing")
    if len(export) > 63 or not _NAME.fullmatch(export):
        raise RequestError(400, "bad-request", f"bad export name {shorten(export)!r}")
    client_ip = None
    if (raw_ip := seen.get(CLIENT_IP_HEADER)) is not None:
        try:
            client_ip = str(parse_client_ip(raw_ip.strip()))
        except ValueError:
            raise RequestError(
                400, "bad-request", f"bad {CLIENT_IP_HEADER} {shorten(raw_ip)!r}"
            ) from None
    import_name = seen.get(IMPORT_HEADER)
    if import_name is not None and (len(import_name) > 63 or not _NAME.fullmatch(import_name)):
        import_name = None  # informational only
    return ConnectRequest(export, client_ip, import_name)
