"""TLS admission on the peer port: every refused handshake is classified, logged and counted.

uvloop's TLS server transport reports a failed handshake nowhere (an ``SSLError`` is an
``OSError``, logged only in loop debug mode). So the peer server listens on plain TCP and its
protocol factory builds the same TLS protocol uvloop's server would, but with a waiter future:
that future carries the handshake's outcome. (``loop.start_tls`` from ``connection_made`` does
not work for a server here: uvloop starts reading right after ``connection_made`` whatever
``pause_reading`` said, so the ClientHello would reach the plain-TCP protocol.) The cost is one
future and one callback per accepted connection; the data path is uvloop's own TLS protocol.

Before any TLS state exists, each accepted connection is counted in a ``gate.HandshakeGate``
(``listen.max_handshakes``, ``listen.max_handshakes_per_source``) until its handshake ended;
over a cap it is reset at once (reason ``overload``). After a burst the heap is trimmed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from .admission import NO_DNS_SAN, UNKNOWN_PEER, WRONG_ANCHOR, RefusalLog
from .gate import HandshakeGate
from .reverse import REASONS as REVERSE_REASONS
from .tls import SERVER_ALPN
from .tuning import trim_heap

log = logging.getLogger("clusterlink.peering")

# Reason classes (the ``reason`` label of clusterlink_peer_handshake_failures_total).
REASONS = (
    "no-certificate",  # the client sent no certificate
    "unknown-ca",  # its certificate is not from a CA in our fabric bundle
    "expired",  # its certificate expired (or is not valid yet)
    "bad-certificate",  # any other certificate verification failure
    "bad-name",  # SNI is not our name
    NO_DNS_SAN,  # the certificate names no site in a DNS SAN (CN only)
    UNKNOWN_PEER,  # its name is not a Peer object here (and listen.open_fabric is off)
    WRONG_ANCHOR,  # its issuer is not an anchor bound to its name (Peer spec.trust)
    "no-alpn",  # it did not negotiate ALPN h2
    "not-tls",  # it does not speak TLS (plain HTTP, garbage)
    "tls-error",  # any other TLS failure (protocol version, cipher, alert from the client)
    "timeout",  # no complete handshake within listen.handshake_timeout
    "closed",  # the client closed or reset the connection during the handshake
    "revoked",  # its certificate is revoked (tls.revocation)
    "overload",  # over listen.max_handshakes or listen.max_handshakes_per_source: reset at once
    *REVERSE_REASONS,  # a reverse link from a peer without dial: false, or over its limit
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

TRIM_SETTLE = 1.0  # after a burst drained, wait this long before trimming the heap
LOG_LINES_PER_SECOND = 10  # above this, refusals are only counted (the next line says how many)
NAMED_LOG_WINDOW = 60.0  # a refusal that names a certificate: one line per reason+name per window

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
    try:
        has_cert = ssl_object is not None and bool(ssl_object.getpeercert(binary_form=True))
    except (ValueError, ssl.SSLError):
        has_cert = False
    if not has_cert:  # the listener verifies optionally (grant redemptions come without one)
        return "no-certificate", "no client certificate"
    alpn = ssl_object.selected_alpn_protocol()
    if alpn not in SERVER_ALPN:
        return "no-alpn", f"ALPN {alpn or 'none'} instead of h2"
    return None  # the certificate's name is judged by ``admission.Admission``


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


def tls_protocol_class(loop: asyncio.AbstractEventLoop) -> type[Any]:
    """The TLS protocol class ``loop``'s own TLS servers use (uvloop's, or asyncio's)."""
    try:
        import uvloop
        from uvloop.loop import SSLProtocol as UVSSLProtocol
    except ImportError:  # pragma: no cover - uvloop is a dependency
        uvloop = None
    if uvloop is not None and isinstance(loop, uvloop.Loop):
        return UVSSLProtocol  # type: ignore[no-any-return]
    from asyncio.sslproto import SSLProtocol

    return SSLProtocol


def _tls_protocol_class(loop: asyncio.AbstractEventLoop) -> type[Any]:
    base = tls_protocol_class(loop)

    class _Accepting(base):  # type: ignore[misc, valid-type]
        """The TLS server protocol, gated: a connection over the acceptor's caps is reset
        before any TLS state exists for it."""

        acceptor: PeerAcceptor
        client_address: tuple[str, int] | None = None
        host: str | None = None  # the source it is counted against in the gate
        settled = False  # refused at accept or released: nothing more to count for it
        app: Any = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peer = transport.get_extra_info("peername")
            self.client_address = (str(peer[0]), int(peer[1])) if peer else None
            if self.acceptor.admit(self, transport):
                super().connection_made(transport)

    return _Accepting


class PeerAcceptor:
    """Builds the per-connection protocol of the peer port, caps unauthenticated connections
    (``gate``) and reports every refusal."""

    def __init__(
        self,
        context: ssl.SSLContext,
        handshake_timeout: float,
        on_failure: FailureHook | None = None,
        *,
        gate: HandshakeGate | None = None,
        trim: Callable[[], object] = trim_heap,
    ) -> None:
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.on_failure = on_failure
        self.gate = gate or HandshakeGate()
        self.loop = asyncio.get_running_loop()
        self._protocol_class = _tls_protocol_class(self.loop)
        self._limit = _RateLimit(LOG_LINES_PER_SECOND)
        self._named = RefusalLog(NAMED_LOG_WINDOW)
        self._trim = trim
        self._trim_timer: asyncio.TimerHandle | None = None

    def protocol(self, make_app: Callable[[], Any]) -> asyncio.BaseProtocol:
        """The protocol for one accepted TCP connection (a ``create_server`` factory's result).
        ``make_app()`` builds its link (``connection_made`` once the handshake succeeded);
        ``app.refused`` may name a post-handshake refusal. The link is a small shell until
        then: its HTTP/2 state is built in ``connection_made`` (``H2Core.initiate``)."""
        waiter = self.loop.create_future()
        app = make_app()
        protocol = self._protocol_class(
            self.loop,
            app,
            self.context,
            waiter,
            server_side=True,
            server_hostname=None,
            ssl_handshake_timeout=self.handshake_timeout,
        )
        protocol.acceptor = self
        protocol.app = app
        waiter.add_done_callback(lambda fut: self._done(fut, protocol))
        return protocol  # type: ignore[no-any-return]

    def admit(self, protocol: Any, transport: asyncio.BaseTransport) -> bool:
        """At accept: count the connection in the gate, or reset it (False)."""
        address = protocol.client_address
        host = address[0] if address else ""
        refusal = self.gate.admit(host)
        if refusal is not None:
            protocol.settled = True
            transport.abort()  # a reset: no TLS state, no TIME_WAIT here
            self.report("overload", refusal, address)
            return False
        protocol.host = host
        return True

    def _settle(self, protocol: Any) -> None:
        """The connection left the unauthenticated state (either way): free its slot."""
        protocol.settled = True
        if protocol.host is not None:
            self.gate.release(protocol.host)
        if self._trim_timer is None:
            delay = self.gate.trim_delay()
            if delay is not None:
                self._trim_timer = self.loop.call_later(TRIM_SETTLE + delay, self._trim_now)

    def _trim_now(self) -> None:
        self._trim_timer = None
        delay = self.gate.trim_delay()
        if delay is None:
            return
        if delay > 0:
            self._trim_timer = self.loop.call_later(delay, self._trim_now)
            return
        self._trim()
        self.gate.trimmed()

    def _done(self, fut: asyncio.Future[None], protocol: Any) -> None:
        if protocol.settled:
            return  # refused at accept: already counted
        self._settle(protocol)
        if fut.cancelled():
            return
        exc = fut.exception()
        app = protocol.app
        refused = getattr(app, "refused", None)
        if exc is None and refused is None:
            if getattr(app, "peer", ""):
                return  # admitted
            refused = classify(None)  # closed before the handshake completed
        reason, detail = refused if refused is not None else classify(exc)
        self.report(reason, detail, protocol.client_address, getattr(app, "refused_name", None))

    def report(
        self,
        reason: str,
        detail: str,
        address: tuple[str, int] | None,
        name: str | None = None,
    ) -> None:
        """Count one refusal and log it: at most one line per reason and certificate name per
        minute for a refused certificate (``name``: the name it claimed, set by the link as
        ``refused_name``), otherwise at most LOG_LINES_PER_SECOND lines."""
        if self.on_failure is not None:
            self.on_failure(reason)
        if name is not None or reason in (NO_DNS_SAN, UNKNOWN_PEER, WRONG_ANCHOR):
            ok, suppressed = self._named.allow(reason, name)
        else:
            ok, suppressed = self._limit.allow()
        if not ok:
            return
        extra: dict[str, Any] = {
            "client_address": f"{address[0]}:{address[1]}" if address else None,
            "reason": reason,
            "detail": detail,
        }
        if name is not None:
            extra["peer_name"] = name
        if suppressed:
            extra["suppressed"] = suppressed
        (log.info if reason == "closed" else log.warning)("peer handshake refused", extra=extra)
