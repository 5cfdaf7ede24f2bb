"""Reverse links, the accepting side: a link an outbound-only peer dialed, on which we open
the streams.

HTTP/2 lets only the client open streams, so a site that can only dial out carries the other
sites' streams on links where the roles are swapped: it dials with ALPN ``REVERSE_ALPN`` and
then plays the HTTP/2 server; the accepting gateway plays the HTTP/2 client (a
``requesting.ClientLink``) and hands the link to the pool of that peer. Every stream, flow
control, CONNECT, offers and policy path is then the same as on a forward link.

The accepting side learns which role to play from ALPN, which the dialer chose; it admits a
reverse link only after the TLS handshake verified the certificate and the admission rule
admitted its name, and only for a peer it holds with ``dial: false`` (``reverse_refusal``),
up to ``max_links`` links per peer. ``RoleSwitch`` is the per-connection protocol that applies
this at ``connection_made`` and then hands the transport to the session of the chosen role.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from .admission import AdmitHook, Refused
from .requesting import ClientLink
from .serving import ServerLink
from .tls import GRANT_ALPN, REVERSE_ALPN, peer_identity

# Reason classes of a refused reverse link (clusterlink_peer_handshake_failures_total).
REVERSE_UNEXPECTED = "reverse-unexpected"  # no Peer with dial: false of that name here
REVERSE_LIMIT = "reverse-limit"  # the peer already holds listen.max_reverse_links_per_peer
REASONS = (REVERSE_UNEXPECTED, REVERSE_LIMIT)


def reverse_refusal(name: str, dials: bool | None, held: int, max_links: int) -> Refused | None:
    """Whether a verified, admitted reverse link from ``name`` must be refused.

    ``dials``: our Peer ``name`` has ``dial: true`` (True), ``dial: false`` (False), or there
    is no such Peer (None); ``held``: the reverse links it holds already."""
    if dials is None:
        return Refused(REVERSE_UNEXPECTED, f"reverse link from {name!r}: no such Peer", name)
    if dials:
        return Refused(
            REVERSE_UNEXPECTED,
            f"reverse link from {name!r}: its Peer has dial: true (this gateway dials it)",
            name,
        )
    if held >= max_links:
        return Refused(
            REVERSE_LIMIT,
            f"reverse link from {name!r}: it holds {held} already (max {max_links})",
            name,
        )
    return None


class ReverseHost(Protocol):
    """What the accepting side's data plane provides for reverse links."""

    def reverse_refusal(self, name: str) -> Refused | None:
        """Why a reverse link from ``name`` (verified, admitted) must be refused, or None."""

    def reverse_link(self, name: str) -> ClientLink:
        """A new HTTP/2 client session for a reverse link from ``name`` (not yet connected)."""

    def adopt(self, link: ClientLink) -> None:
        """The reverse link is up: its peer's pool may use it."""


class RoleSwitch(asyncio.Protocol):
    """The protocol of one accepted peer connection until its TLS handshake completed: then
    it applies the admission rule, picks the HTTP/2 role from ALPN, builds that session, hands
    it the transport and steps aside. Refusals are left in ``refused`` for the acceptor."""

    refused: tuple[str, str] | None = None
    refused_name: str | None = None
    peer = ""

    def __init__(
        self,
        make_server_link: Callable[[], ServerLink],
        admit: AdmitHook,
        reverse: ReverseHost | None,
        grants: Callable[[], asyncio.Protocol] | None = None,
    ) -> None:
        self._make_server_link = make_server_link
        self._admit = admit
        self._reverse = reverse
        self._grants = grants

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object: Any = transport.get_extra_info("ssl_object")
        grant_alpn = ssl_object is not None and ssl_object.selected_alpn_protocol() == GRANT_ALPN
        if self._grants is not None and grant_alpn:  # GRANT_ALPN is only offered under GRANT_SNI
            grant = self._grants()  # a grant redemption: nothing else is served on it
            transport.set_protocol(grant)
            grant.connection_made(transport)
            self.peer = getattr(grant, "peer", "(grant)")
            return
        verdict = self._admit(ssl_object)
        if isinstance(verdict, Refused):
            self._refuse(transport, verdict)
            return
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        session: ServerLink | ClientLink
        if alpn == REVERSE_ALPN:
            name = peer_identity(ssl_object) or verdict.name
            refusal = (
                self._reverse.reverse_refusal(name)
                if self._reverse is not None
                else Refused(REVERSE_UNEXPECTED, "reverse links are not accepted here", name)
            )
            if refusal is not None:
                self._refuse(transport, refusal)
                return
            assert self._reverse is not None
            session = self._reverse.reverse_link(name)
        else:
            session = self._make_server_link()
        session.fabric = verdict.fabric
        transport.set_protocol(session)
        session.connection_made(transport)
        self.peer = session.peer
        if isinstance(session, ClientLink) and session.peer and self._reverse is not None:
            self._reverse.adopt(session)

    def _refuse(self, transport: asyncio.BaseTransport, verdict: Refused) -> None:
        self.refused, self.refused_name = (verdict.reason, verdict.detail), verdict.name
        transport.abort()  # the acceptor logs and counts it

    def data_received(self, data: bytes) -> None:  # only after a refusal (aborted): drop it
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass
