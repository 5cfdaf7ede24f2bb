"""TLS admission on the peer port: every refused handshake is classified, logged and counted.

uvloop's TLS server transport reports a failed handshake nowhere (an ``SSLError`` is an
``OSError``, logged only in loop debug mode). So the peer server listens on plain TCP and its
protocol factory builds the same TLS protocol uvloop's server would, but with a waiter future:
that future carries the handshake's outcome. (``loop.start_tls`` from ``connection_made`` does
not work for a server here: uvloop starts reading right after ``connection_made`` whatever
``pause_reading`` said, so the ClientHello would reach the plain-TCP protocol.) The cost is one
future and one callback per accepted connection; the data path is uvloop's own TLS protocol.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from .tls import ALPN, peer_identity

log = logging.getLogger("clusterlink.peering")

# Reason classes (the ``reason`` label of clusterlink_peer_handshake_failures_total).
REASONS = (
    "no-certificate",  # the client sent no certificate
    "unknown-ca",  # its certificate is not from a CA in our fabric bundle
    "expired",  # its certificate expired (or is not valid yet)
    "bad-certificate",  # any other certificate verification failure
    "bad-name",  # SNI is not our name, or the certificate carries no name
    "no-alpn",  # it did not negotiate ALPN h2
    "not-tls",  # it does not speak TLS (plain HTTP, garbage)
    "tls-error",  # any other TLS failure (protocol version, cipher, alert from the client)
    "timeout",  # no complete handshake within listen.handshake_timeout
    "closed",  # the client closed or reset the connection during the handshake
    "revoked",  # its certificate is revoked (tls.revocation)
)

_VERIFY_CODES = {
    2: "unknown-ca",  # unable to get issuer certificate
    18: "unknown-ca",  # self-signed certificate
    19: "unknown-ca",  # self-signed certificate in chain
    20: "unknown-ca",  # unable to get local issuer certificate
    21: "unknown-ca",  # unable to verify the first certificate
    9: "expired",  # certificate is not yet valid
    10: "expired",  # certificate has expired
}
_NOT_TLS = {"HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL"}

LOG_LINES_PER_SECOND = 10  # above this, refusals are only counted (the next line says how many)

FailureHook = Callable[[str], None]


def classify(exc: BaseException | None) -> tuple[str, str]:
    """(reason class, short detail) of a failed server-side handshake; never certificate bytes."""
    if exc is None:
        return "closed", "connection closed during the TLS handshake"
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = _VERIFY_CODES.get(exc.verify_code, "bad-certificate")
        return reason, f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        code = exc.reason or ""
        if code == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no-certificate", "no client certificate"
        if code == "CALLBACK_FAILED":  # only our SNI callback fails the handshake
            return "bad-name", "server name (SNI) is not this gateway's name"
        if code in _NOT_TLS:
            return "not-tls", code.lower().replace("_", " ")
        return "tls-error", (code or type(exc).__name__).lower().replace("_", " ")
    if isinstance(exc, ConnectionAbortedError) and "taking longer" in str(exc):
        return "timeout", "TLS handshake not completed in time"
    if isinstance(exc, (ConnectionError, EOFError)):
        return "closed", "connection closed during the TLS handshake"
    return "tls-error", type(exc).__name__


def admission_refusal(
    ssl_object: Any, revoked: Callable[[Any], str | None] | None = None
) -> tuple[str, str] | None:
    """After a completed handshake: why the link must still be refused, or None.
    ``revoked`` (``TLSContexts.revoked``) says why a certificate is revoked."""
    if revoked is not None and (why := revoked(ssl_object)) is not None:
        return "revoked", why
    alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    if alpn not in ALPN:
        return "no-alpn", f"ALPN {alpn or 'none'} instead of h2"
    if not peer_identity(ssl_object):
        return "bad-name", "certificate carries no name"
    return None


class _RateLimit:
    """At most ``per_second`` lines a second; counts what it swallowed."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self.window = 0.0
        self.used = 0
        self.suppressed = 0

    def allow(self) -> tuple[bool, int]:
        now = time.monotonic()
        if now - self.window >= 1.0:
            self.window, self.used = now, 0
        if self.used < self.per_second:
            self.used += 1
            suppressed, self.suppressed = self.suppressed, 0
            return True, suppressed
        self.suppressed += 1
        return False, 0


def _tls_protocol_class(loop: asyncio.AbstractEventLoop) -> type[Any]:
    try:
        import uvloop
        from uvloop.loop import SSLProtocol as UVSSLProtocol
    except ImportError:  # pragma: no cover - uvloop is a dependency
        uvloop = None
    if uvloop is not None and isinstance(loop, uvloop.Loop):
        base: type[Any] = UVSSLProtocol
    else:
        from asyncio.sslproto import SSLProtocol as base

    class _Accepting(base):  # type: ignore[misc, valid-type]
        """The TLS server protocol, remembering the client's address for the log line."""

        client_address: tuple[str, int] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peername")
            self.client_address = (str(peer[0]), int(peer[1])) if peer else None
            super().connection_made(transport)

    return _Accepting


class PeerAcceptor:
    """Builds the per-connection TLS protocol of the peer port and reports every refusal."""

    def __init__(
        self,
        context: ssl.SSLContext,
        handshake_timeout: float,
        on_failure: FailureHook | None = None,
    ) -> None:
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.on_failure = on_failure
        self._loop = asyncio.get_running_loop()
        self._protocol_class = _tls_protocol_class(self._loop)
        self._limit = _RateLimit(LOG_LINES_PER_SECOND)

    def wrap(self, app: Any) -> asyncio.BaseProtocol:
        """The protocol for one accepted TCP connection; ``app`` gets ``connection_made`` once
        the handshake succeeded. ``app.refused`` may name a post-handshake refusal."""
        waiter = self._loop.create_future()
        protocol = self._protocol_class(
            self._loop,
            app,
            self.context,
            waiter,
            server_side=True,
            server_hostname=None,
            ssl_handshake_timeout=self.handshake_timeout,
        )
        waiter.add_done_callback(lambda fut: self._done(fut, protocol, app))
        return protocol  # type: ignore[no-any-return]

    def _done(self, fut: asyncio.Future[None], protocol: Any, app: Any) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        refused = getattr(app, "refused", None)
        if exc is None and refused is None:
            if getattr(app, "peer", ""):
                return  # admitted
            refused = classify(None)  # closed before the handshake completed
        reason, detail = refused if refused is not None else classify(exc)
        self.report(reason, detail, protocol.client_address)

    def report(self, reason: str, detail: str, address: tuple[str, int] | None) -> None:
        """Count one refusal and log it (rate-limited)."""
        if self.on_failure is not None:
            self.on_failure(reason)
        ok, suppressed = self._limit.allow()
        if not ok:
            return
        extra: dict[str, Any] = {
            "client_address": f"{address[0]}:{address[1]}" if address else None,
            "reason": reason,
            "detail": detail,
        }
        if suppressed:
            extra["suppressed"] = suppressed
        (log.info if reason == "closed" else log.warning)("peer handshake refused", extra=extra)
