"""Building the peer port's ``SSLContext``s from our certificate files and trust anchors: the
fabric contexts, the listener's (fabric CAs plus every Peer's own anchors) and one client
context pair per Peer with its own anchors (verifying against those only)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from .anchors import PeerBundles
from .trust import TLSError

ALPN = ["h2"]  # a forward link: the dialer is the HTTP/2 client
# A reverse link: the dialer (an outbound-only site) is the HTTP/2 server, the accepting side
# opens the streams (see ``reverse``). Announced by the dialer, which offers only this id.
REVERSE_ALPN = "clusterlink-reverse/1"
SERVER_ALPN = [*ALPN, REVERSE_ALPN]  # what the peer port accepts under our own name
# A grant redemption (``grantwire``): a gateway whose CA is not known here yet redeems a
# peering grant. It asks for GRANT_SNI instead of our name and offers only GRANT_ALPN; that
# connection gets a context with no other protocol and may come without a client certificate.
GRANT_ALPN = "clusterlink-grant/1"
GRANT_SNI = "clusterlink-grant.invalid"


def base_context(
    protocol: int, cert: Path, key: Path, ca: Path, cadata: bytes | None = None
) -> ssl.SSLContext:
    """A context with our certificate and key, verifying against ``ca`` (or, with ``cadata``,
    against those PEM anchors only)."""
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TLSError(f"key {key} does not match certificate {cert}", "key-mismatch") from None
        raise TLSError(
            f"certificate {cert} / key {key}: cannot load: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise TLSError(
            f"certificate {cert} / key {key}: cannot load: {exc}", "unreadable"
        ) from None
    try:
        if cadata is None:
            ctx.load_verify_locations(cafile=str(ca))
        else:  # a peer's own anchors: they may be intermediates (no root in the store)
            ctx.load_verify_locations(cadata=cadata.decode())
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TLSError(f"CA bundle {'of a peer' if cadata else ca}: cannot load: {exc}") from None
    if not ctx.get_ca_certs():
        raise TLSError(f"CA bundle {ca}: contains no CA certificate")
    return ctx


def peer_clients(
    cert: Path, key: Path, ca: Path, bundles: PeerBundles
) -> dict[str, tuple[str, ssl.SSLContext, ssl.SSLContext]]:
    """A forward and a reverse client context per Peer with its own anchors."""
    out = {}
    for name, bundle in bundles.items():
        pair = []
        for alpn in (ALPN, [REVERSE_ALPN]):
            ctx = base_context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca, bundle.pem)
            ctx.set_alpn_protocols(alpn)
            ctx.check_hostname = True
            pair.append(ctx)
        out[name] = (bundle.digest, pair[0], pair[1])
    return out


def server_context(cert: Path, key: Path, ca: Path, bundles: PeerBundles) -> ssl.SSLContext:
    """The peer port's context: fabric CAs plus, when Peers carry their own, every foreign
    anchor (which names each may speak for is ``bind``'s job after the handshake)."""
    server = base_context(ssl.PROTOCOL_TLS_SERVER, cert, key, ca)
    if bundles:
        try:
            server.load_verify_locations(cadata=b"".join(b.pem for b in bundles.values()).decode())
        except (ssl.SSLError, ValueError) as exc:
            raise TLSError(f"peer trust anchors: cannot load: {exc}") from None
        server.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    server.set_alpn_protocols(SERVER_ALPN)
    server.num_tickets = 0  # links are long-lived; tickets would only cost CPU
    return server


def grant_server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """The context a grant redemption gets (SNI ``GRANT_SNI``): only ``GRANT_ALPN``."""
    grant = base_context(ssl.PROTOCOL_TLS_SERVER, cert, key, ca)
    grant.set_alpn_protocols([GRANT_ALPN])
    grant.num_tickets = 0
    return grant


def peer_der(ssl_object: Any) -> bytes | None:
    if ssl_object is None:
        return None
    try:
        der = ssl_object.getpeercert(binary_form=True)
    except (ValueError, ssl.SSLError):
        return None
    return der if der else None
