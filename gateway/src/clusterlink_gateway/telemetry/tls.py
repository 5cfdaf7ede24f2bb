"""The metrics listener's TLS server context, from ``metrics.tls``."""

from __future__ import annotations

import ssl

from ..config import MetricsTLS
from ..peering import TLSError
from ..peering.tls import AdminTLS


def server_context(tls: MetricsTLS) -> ssl.SSLContext:
    """With ``client_ca``: the admin listener's rule (key matches, valid now, client CA usable;
    scrapers must show a certificate from it). Without: server authentication only.
    TLSError (naming the file) if refused."""
    if tls.client_ca is not None:
        return AdminTLS.prepare(tls.cert, tls.key, tls.client_ca).context
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TLSError(f"key {tls.key} does not match certificate {tls.cert}") from None
        raise TLSError(f"certificate {tls.cert} / key {tls.key}: cannot load: {exc}") from None
    except OSError as exc:
        raise TLSError(f"certificate {tls.cert} / key {tls.key}: cannot load: {exc}") from None
    return ctx
