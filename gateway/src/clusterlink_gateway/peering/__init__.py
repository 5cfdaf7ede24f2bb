"""Peer transport: mTLS links carrying HTTP/2 streams between gateways.

* ``tls``: fabric certificates and contexts, reloadable.
* ``h2core``: the sans-IO HTTP/2 core (flow control, GOAWAY, limits).
* ``link``: the asyncio protocol around it; server (``start_peer_server``) and client links.
* ``pool``: ``PeerPool``, long-lived links to one peer with endpoint failover.
* ``relay``: ``TcpRelay``, splicing a TCP socket to a stream.
"""

from .link import (
    BodyTooLarge,
    IncomingStream,
    NotProcessed,
    Response,
    Stream,
    StreamError,
    StreamProtocol,
    start_peer_server,
)
from .pool import PeerPool
from .relay import TcpRelay
from .tls import TLSContexts, TLSError, peer_identity

__all__ = [
    "BodyTooLarge",
    "IncomingStream",
    "NotProcessed",
    "PeerPool",
    "Response",
    "Stream",
    "StreamError",
    "StreamProtocol",
    "TLSContexts",
    "TLSError",
    "TcpRelay",
    "peer_identity",
    "start_peer_server",
]
