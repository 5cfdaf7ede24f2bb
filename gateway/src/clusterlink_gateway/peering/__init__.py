"""Peer transport: mTLS links carrying HTTP/2 streams between gateways.

* ``trust``: the one acceptance rule for certificate, key and CA bundle (``accept_material``).
* ``revocation``: revoked certificates (CRL signed by a fabric CA, serials, fingerprints).
* ``tls``: fabric certificates and contexts, reloadable (one reload path, with subscribers).
* ``h2core``: the sans-IO HTTP/2 core (flow control, GOAWAY, limits).
* ``stream``: a stream as a byte pipe (``Stream``) and the errors streams raise.
* ``session``: a link's HTTP/2 session, the asyncio protocol around the core; its two roles:
  ``serving`` (HTTP/2 server, a handler per request) and ``requesting`` (HTTP/2 client).
* ``connect``: connection setup, dialing (``dial``) and accepting (``start_peer_server``)
  verified TLS transports, with the admission rule as the accepting side's hook.
* ``pool``: ``PeerPool``, long-lived links to one peer with endpoint failover.
* ``relay``: ``TcpRelay``, splicing a TCP socket to a stream.
* ``tuning``: ``tune_malloc``, to call once at daemon start-up (halves CPU per GB).
"""

from .connect import start_peer_server
from .pool import PeerPool
from .relay import TcpRelay
from .serving import IncomingStream
from .stream import (
    BodyTooLarge,
    NotProcessed,
    RequestRejected,
    Response,
    Stream,
    StreamError,
    StreamProtocol,
)
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
