"""Connection setup for peer links: dialing and accepting verified TLS transports.

Dialing (``dial``, ``dial_reverse``) and accepting (``start_peer_server``) each end with a
TLS 1.3 transport whose peer certificate was verified, and the peer's name from it; on the
accepting side the admission rule (``admission_hook``: revocation, ALPN, the Peer allowlist)
decides before any HTTP/2 state is built. The HTTP/2 role of the session on that transport is
not fixed by who dialed: a forward link (ALPN h2) has the dialer as the HTTP/2 client, a reverse
link (ALPN ``REVERSE_ALPN``, dialed by an outbound-only site) has it as the HTTP/2 server
(``reverse``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from .accept import FailureHook, PeerAcceptor, admission_refusal
from .admission import OPEN, Admission, AdmitHook, Admitted, Refused
from .gate import MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE, HandshakeGate
from .h2core import Limits
from .requesting import ClientLink
from .reverse import ReverseHost, RoleSwitch
from .serving import Handler, ServerLink
from .session import KEEPALIVE, Session
from .tls import REVERSE_ALPN, TLSContexts, TLSError, peer_identity
from .tunnel import TunnelPort

_S = TypeVar("_S", bound=Session)


def admission_hook(
    admission: Admission, revoked: Callable[[Any], str | None] | None = None
) -> AdmitHook:
    """The accepting side's rule for a verified handshake: revoked certificates, a protocol
    other than h2, then the admission rule (``admission.Admission``)."""

    def admit(ssl_object: Any) -> Admitted | Refused:
        refused = admission_refusal(ssl_object, revoked)
        if refused is not None:
            name = peer_identity(ssl_object) if refused[0] == "revoked" else None
            return Refused(refused[0], refused[1], name)
        return admission.check(ssl_object)

    return admit


async def start_peer_server(
    host: str | None,
    port: int | None,
    tls: TLSContexts,
    handler: Handler,
    *,
    reuse_port: bool = False,
    handshake_timeout: float = 10.0,
    idle_timeout: float = 300.0,
    max_header_bytes: int = 16384,
    max_concurrent_streams: int = 10000,
    limits: Limits | None = None,
    keepalive: float = KEEPALIVE,
    backlog: int = 1024,
    links: set[ServerLink] | None = None,
    on_handshake_failure: FailureHook | None = None,
    sock: socket.socket | None = None,
    admission: Admission = OPEN,
    max_handshakes: int = MAX_HANDSHAKES,
    max_handshakes_per_source: int = MAX_HANDSHAKES_PER_SOURCE,
    gate: HandshakeGate | None = None,
    reverse: ReverseHost | None = None,
    start_serving: bool = True,
    grants: Callable[[], asyncio.Protocol] | None = None,
    tunnels: TunnelPort | None = None,
) -> asyncio.Server:
    """Listen for peer links (mTLS, ALPN h2) and run ``handler`` for every incoming stream.

    With ``sock`` (an already listening socket), ``host``, ``port`` and ``reuse_port`` are unused.

    ``asyncio.Server.close()`` stops accepting; established links live on. Pass a set as
    ``links`` to track them (e.g. to ``goaway()`` or ``close()`` them at shutdown). Every
    refused handshake is logged and passed to ``on_handshake_failure(reason)``. ``admission``
    decides which verified certificates may hold a link (default: any with a DNS SAN name). At most
    ``max_handshakes`` connections (``max_handshakes_per_source`` from one source) may be
    unauthenticated at once; further ones are reset at accept (reason ``overload``). Pass
    ``gate`` to read its counts (it then holds the caps). ``reverse`` accepts reverse links
    (without it, every reverse link is refused, reason ``reverse-unexpected``). With
    ``start_serving`` false, connections queue until ``Server.start_serving()``. ``tunnels``
    gets the same acceptance for relayed streams (``tunnel.TunnelPort``).
    """
    lim = replace(
        limits or Limits(),
        max_header_bytes=max_header_bytes,
        max_concurrent_streams=max_concurrent_streams,
    )
    loop = asyncio.get_running_loop()
    gate = gate or HandshakeGate(max_handshakes, max_handshakes_per_source)
    acceptor = PeerAcceptor(
        tls.server_context(), handshake_timeout, on_handshake_failure, gate=gate
    )

    admit = admission_hook(admission, tls.revoked)

    def make_link() -> ServerLink:
        return ServerLink(
            handler, lim, idle_timeout=idle_timeout, keepalive=keepalive, registry=links
        )

    if tunnels is not None:  # relayed: the same acceptance, no grant redemptions
        tunnels.protocol = lambda: acceptor.protocol(
            lambda: RoleSwitch(make_link, admit, reverse, None)
        )
    return await loop.create_server(
        lambda: acceptor.protocol(lambda: RoleSwitch(make_link, admit, reverse, grants)),
        None if sock else host,
        None if sock else port,
        reuse_port=None if sock else reuse_port or None,
        backlog=backlog,
        sock=sock,
        start_serving=start_serving,
    )


async def dial(
    host: str,
    port: int,
    peer_name: str,
    tls: TLSContexts,
    *,
    timeout: float = 3.0,  # noqa: ASYNC109 - bounds the TCP connect
    handshake_timeout: float | None = None,
    limits: Limits | None = None,
    keepalive: float = KEEPALIVE,
    on_lost: Callable[[ClientLink], None] | None = None,
    on_tcp: Callable[[], None] | None = None,
) -> ClientLink:
    """Open one forward link to ``peer_name`` at ``host:port`` (we are the HTTP/2 client);
    ConnectionError/TimeoutError on failure.

    ``timeout`` bounds the TCP connect, ``handshake_timeout`` (default: ``timeout``) the TLS
    handshake after it (``on_tcp`` is called in between): a restarting peer whose listening
    socket systemd holds accepts the TCP connection at once and answers the handshake when its
    new process is up.
    """
    lim = limits or Limits()
    link = await _open(
        host,
        port,
        peer_name,
        tls,
        lambda: ClientLink(peer_name, lim, keepalive=keepalive, on_lost=on_lost),
        reverse=False,
        timeout=timeout,
        handshake_timeout=handshake_timeout,
        on_tcp=on_tcp,
    )
    if not link.usable:
        raise ConnectionError(f"{peer_name} at {host}:{port}: peer did not negotiate h2")
    link.endpoint = (host, port)
    return link


async def dial_reverse(
    host: str,
    port: int,
    peer_name: str,
    tls: TLSContexts,
    handler: Handler,
    *,
    timeout: float = 3.0,  # noqa: ASYNC109 - bounds the TCP connect
    handshake_timeout: float | None = None,
    limits: Limits | None = None,
    keepalive: float = KEEPALIVE,
    registry: set[ServerLink] | None = None,
) -> ServerLink:
    """Open one reverse link to ``peer_name`` at ``host:port``: we dialed, and we are the
    HTTP/2 server, running ``handler`` for every stream the peer opens on it (as our peer
    server does). ``link.lost`` resolves when it closes. Timeouts as in ``dial``."""
    lim = limits or Limits()
    link = await _open(
        host,
        port,
        peer_name,
        tls,
        lambda: ServerLink(handler, lim, idle_timeout=None, keepalive=keepalive, registry=registry),
        reverse=True,
        timeout=timeout,
        handshake_timeout=handshake_timeout,
    )
    ssl_object = link._transport.get_extra_info("ssl_object") if link._transport else None
    alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    if alpn != REVERSE_ALPN or not link.peer:
        link.abort()
        raise ConnectionError(
            f"{peer_name} at {host}:{port}: peer does not accept reverse links (ALPN {alpn})"
        )
    return link


async def _open(
    host: str,
    port: int,
    peer_name: str,
    tls: TLSContexts,
    make_session: Callable[[], _S],
    *,
    reverse: bool,
    timeout: float,  # noqa: ASYNC109 - bounds the TCP connect
    handshake_timeout: float | None,
    on_tcp: Callable[[], None] | None = None,
) -> _S:
    """TCP connect, TLS handshake (server name and certificate verified: ``peer_name``, against
    its own anchors if its Peer has them), then the anchor binding and revocation; the session
    ``make_session`` builds runs on the transport."""
    loop = asyncio.get_running_loop()
    try:
        context = tls.client_context(reverse=reverse, peer=peer_name)
    except TLSError as exc:
        raise ConnectionError(f"{peer_name} at {host}:{port}: {exc}") from None
    try:
        async with asyncio.timeout(timeout):
            sock = await _tcp_connect(host, port)
        if on_tcp is not None:
            on_tcp()
        try:
            _, link = await loop.create_connection(
                make_session,
                ssl=context,
                server_hostname=peer_name,
                ssl_handshake_timeout=handshake_timeout or timeout,
                sock=sock,
            )
        except BaseException:
            sock.close()
            raise
    except ssl.SSLCertVerificationError as exc:
        raise ConnectionError(
            f"{peer_name} at {host}:{port}: certificate rejected: {exc.verify_message}"
        ) from None
    except ConnectionResetError:
        # A peer refuses our handshake by closing: e.g. it is not named peer_name (SNI), or it
        # does not trust our certificate; its handshake-failure counter says which.
        raise ConnectionError(
            f"{peer_name} at {host}:{port}: TLS handshake refused by the peer (certificate or "
            f"name {peer_name!r} not accepted there)"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        if isinstance(exc, ConnectionError):
            raise
        raise ConnectionError(
            f"{peer_name} at {host}:{port}: {str(exc) or type(exc).__name__}"
        ) from None
    ssl_object = link._transport.get_extra_info("ssl_object") if link._transport else None
    unbound = tls.dial_refusal(ssl_object, peer_name)
    if unbound is not None:
        link.abort()
        raise ConnectionError(f"{peer_name} at {host}:{port}: {unbound}")
    link.fabric = not tls.bound(peer_name)  # a foreign party's site: see admission
    revoked = tls.revoked(ssl_object)
    if revoked is not None:
        link.abort()
        tls.report_revoked_dial(peer_name, f"{host}:{port}", revoked)
        raise ConnectionError(f"{peer_name} at {host}:{port}: certificate revoked: {revoked}")
    return link


async def _tcp_connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to the first address of ``host`` that answers."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, kind, proto, _, address in await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last or OSError(f"{host}: no address")
