"""Peer transport: mTLS links carrying HTTP/2 streams between gateways.

* ``trust``: the one acceptance rule for certificate, key and CA bundle (``accept_material``).
* ``revocation``: revoked certificates (CRL signed by a fabric CA, serials, fingerprints).
* ``tls``: fabric certificates and contexts, reloadable (one reload path, with subscribers).
* ``h2core``: the sans-IO HTTP/2 core (flow control, GOAWAY, limits).
* ``link``: the asyncio protocol around it; server (``start_peer_server``) and client links.
* ``pool``: ``PeerPool``, long-lived links to one peer with endpoint failover.
* ``relay``: ``TcpRelay``, splicing a TCP socket to a stream.
* ``tuning``: ``tune_malloc``, to call once at daemon start-up (halves CPU per GB).
"""

from .link import (
    BodyTooLarge,
    IncomingStream,
    NotProcessed,
    RequestRejected,
    Response,
    Stream,
    StreamError,
    StreamProtocol,
    start_peer_server,
)
from .pool import PeerPool
from .relay import TcpRelay
from .tls import TLSContexts, TLSError, peer_identity
from .tuning import tune_malloc

__all__ = [
    "BodyTooLarge",
    "IncomingStream",
    "NotProcessed",
    "PeerPool",
    "RequestRejected",
    "Response",
    "Stream",
    "StreamError",
    "StreamProtocol",
    "TLSContexts",
    "TLSError",
    "TcpRelay",
    "peer_identity",
    "start_peer_server",
    "tune_malloc",
]
