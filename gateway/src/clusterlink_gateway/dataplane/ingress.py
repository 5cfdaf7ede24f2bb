"""Requests arriving on the peer port from other gateways.

``GET /healthz`` answers the heartbeat (to a peer we hold with ``dial: false``, with how many
reverse links it should keep open to us); ``GET /v1/offers`` lists the exports the caller may
import; ``GET /v1/explain`` says how this gateway would decide the caller's connections for one
export, both ways (``explain.Explainer.answer_peer``, for ``gwctl explain`` there); ``CONNECT``
carries a client connection to an export after ``allowed_peers`` and the ingress policy allow
it. The caller's peer name comes from its verified certificate, and its
labels from our own Peer object of that name -- never from what it sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from .. import audit
from ..metrics import Metrics
from ..model.objects import KINDS, Export, Peer
from ..peering import IncomingStream, TcpRelay
from ..peering.admission import OPEN, UNKNOWN_PEER, Admission
from ..peering.relayrule import RELAY_ACCEPT
from ..peering.tunnel import TunnelPort, relay_of
from ..policy.attributes import (
    asserted_client_ip,
    destination_attributes,
    parse_client_ip,
    source_attributes,
)
from ..policy.engine import PolicyEngine
from ..registry import Registry
from .attempt import DEFAULT_DENY_LABEL, ConnectionAttempt
from .explain import Explainer
from .refusals import RecentRefusals
from .relaying import RelayService
from .request import RequestError, parse_connect, parse_explain, shorten

log = logging.getLogger("clusterlink.ingress")

EXPORTS = KINDS["exports"]
PEERS = KINDS["peers"]


def _json(status: int, reason: str, **extra: Any) -> bytes:
    return json.dumps({"status": status, "reason": reason, **extra}).encode()


class IngressHandler:
    """The peer-port request handler (one call per HTTP/2 stream)."""

    def __init__(
        self,
        registry: Registry,
        engine: PolicyEngine,
        local: dict[str, Any],
        *,
        dial_timeout: float,
        metrics: Metrics,
        admission: Admission = OPEN,
        reverse_links: int = 2,
        explainer: Explainer | None = None,
        refusals: RecentRefusals | None = None,
    ) -> None:
        self.refusals = refusals if refusals is not None else RecentRefusals()
        self.reverse_links = reverse_links
        self.metrics = metrics
        self.explainer = explainer
        self.admission = admission
        self.registry = registry
        self.engine = engine
        self.local = local
        self.dial_timeout = dial_timeout
        self.relay: RelayService | None = None  # relay requests (plane sets it)
        self.tunnels: TunnelPort | None = None  # relayed links to this gateway

    async def __call__(self, req: IncomingStream) -> None:
        if self.relay is not None and self.relay.wants(req):
            await self.relay.handle(req)  # a relay request (this gateway as the relay)
        elif req.method == "CONNECT" and req.authority == RELAY_ACCEPT:
            self._relayed(req)  # a relayed link from a peer through the caller (a relay)
        elif req.method == "CONNECT":
            await self._connect(req)
        elif req.method == "GET" and req.path == "/healthz":
            body = {"name": self.local["peer_name"], "labels": self.local["labels"]}
            peer = self.registry.objects[PEERS.plural].get(req.peer)
            if peer is not None and isinstance(peer.obj, Peer) and not peer.obj.spec.dial:
                body["reverse_links"] = self.reverse_links
            await req.respond(200, json.dumps(body).encode(), {"content-type": "application/json"})
        elif req.method == "GET" and req.path == "/v1/explain" and self.explainer is not None:
            self._explain(req, self.explainer)
        elif req.method == "GET" and req.path == "/v1/offers":
            await req.respond(
                200,
                json.dumps(self.offers(req.peer)).encode(),
                {"content-type": "application/json"},
            )
        else:
            method, path = shorten(req.method), shorten(req.path or "")
            self._refuse(req, 404, "not-found", f"no such endpoint: {method} {path}")

    def _relayed(self, req: IncomingStream) -> None:
        """The peer port's own TLS acceptance on the stream: the relay (the caller) carries
        it, the peer at the other end is whoever the handshake inside proves."""
        if self.tunnels is None:
            self._refuse(req, 404, "not-found", "relayed links are not accepted here")
            return
        if relay_of(req.link._transport) is not None:  # a tunnel inside a tunnel: a loop
            self._refuse(req, 400, "bad-request", "a relayed link inside a relayed link")
            return
        self.tunnels.accept(req.accept(), relay=req.peer)

    def _explain(self, req: IncomingStream, explainer: Explainer) -> None:
        """How we would decide for the caller (its identity: the certificate's) on one export."""
        try:
            request = parse_explain(req.headers)
        except RequestError as exc:
            self._refuse(req, exc.status, exc.reason, exc.message)
            return
        body = explainer.answer_peer(req.peer, req.peer_fabric, request.export, request.client_ip)
        req.answer(200, json.dumps(body).encode(), {"content-type": "application/json"})

    def offers(self, caller: str) -> list[dict[str, Any]]:
        """Exports visible to ``caller``: those whose ``allowed_peers`` is empty or names it."""
        out = []
        for entry in self.registry.list(EXPORTS):
            assert isinstance(entry.obj, Export)
            allowed = entry.obj.spec.allowed_peers
            if not allowed or caller in allowed:
                out.append({"name": entry.name, "labels": dict(entry.obj.labels)})
        return out

    def _refuse(
        self,
        req: IncomingStream,
        status: int,
        reason: str,
        message: str,
        *,
        document: dict[str, Any] | None = None,
        **recent: Any,
    ) -> None:
        """Answer a refusal (JSON reason, plus ``document`` fields) and count it by calling
        peer and reason class; a refused CONNECT is remembered in ``refusals`` (``recent``:
        export, policy, decision)."""
        self.metrics.ingress_refused.labels(req.peer, reason).inc()
        if req.method == "CONNECT":
            self.refusals.add("ingress", req.peer, recent.pop("export", None), reason, **recent)
        req.answer(status, _json(status, message, **(document or {})))

    async def _connect(self, req: IncomingStream) -> None:
        caller = req.peer
        if not self.admission.admits(caller):  # its Peer went away; its links are closing
            self._refuse(req, 403, UNKNOWN_PEER, f"peer {caller!r} is not a Peer here")
            return
        try:
            request = parse_connect(req.method, req.authority, req.path, req.headers)
        except RequestError as exc:
            log.warning(
                "connect refused",
                extra={
                    "peer": caller,
                    "client_address": _address(req),
                    "reason": exc.reason,
                    "error": exc.message,
                },
            )
            self._refuse(req, exc.status, exc.reason, exc.message)
            return
        export_name = request.export
        entry = self.registry.objects[EXPORTS.plural].get(export_name)
        if entry is None:
            log.info("connect for unknown export", extra={"peer": caller, "export": export_name})
            message = f"export {export_name!r} not found"
            self._refuse(req, 404, "unknown-export", message, export=export_name)
            return
        export = entry.obj
        assert isinstance(export, Export)
        if export.spec.allowed_peers and caller not in export.spec.allowed_peers:
            log.warning(
                "connect refused by allowed_peers",
                extra={"peer": caller, "export": export_name, "client_address": _address(req)},
            )
            message = f"peer {caller!r} is not in allowed_peers of {export_name!r}"
            self._refuse(
                req, 403, "not-allowed", message, export=export_name, policy="allowed_peers"
            )
            return
        peer = self._caller(caller)
        client_ip = asserted_client_ip(
            request.client_ip,
            peer.spec.client_attributes if peer is not None else None,
            fabric=req.peer_fabric,
        )
        m = self.metrics
        attempt = ConnectionAttempt("ingress", self.engine, m)
        decision = attempt.decide(
            source_attributes(caller, dict(peer.labels) if peer else {}, client_ip),
            destination_attributes(
                self.local["peer_name"], self.local["labels"], export_name, export.labels
            ),
            parse_client_ip(client_ip) if client_ip else None,
        )
        if not decision.allowed:
            why = attempt.refusal_fields()
            log.info(
                "ingress denied",
                extra={
                    "peer": caller,
                    "export": export_name,
                    "client": request.client_ip,
                    "client_ignored": client_ip != request.client_ip,
                    **why,
                },
            )
            # the importer logs the same explanation (its refusal line names our policy)
            self._refuse(
                req,
                403,
                "denied",
                f"denied by ingress policy ({decision})",
                document={"decision": _refusal_document(attempt)},
                export=export_name,
                policy=decision.policy or DEFAULT_DENY_LABEL,
                decision=str(decision),
            )
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.dial_timeout):  # no extra task, unlike wait_for
                _, relay = await loop.create_connection(
                    TcpRelay, export.spec.host, export.spec.port
                )
        except (OSError, TimeoutError) as exc:
            target = f"{export.spec.host}:{export.spec.port}"
            reason = f"export {export_name!r} at {target} unreachable: {exc or 'timeout'}"
            log.warning(
                "export dial failed", extra={"peer": caller, "export": export_name, "error": reason}
            )
            self._refuse(req, 502, "export-unreachable", reason, export=export_name)
            return
        stream = req.accept()
        relay.attach(stream)
        m.export_connections.labels(export_name, caller).inc()
        m.ingress_active.inc()
        relay.closed.add_done_callback(
            lambda _: self._closed(export_name, caller, relay, request.client_ip, attempt)
        )

    def _closed(
        self,
        export: str,
        caller: str,
        relay: TcpRelay,
        client_ip: str | None,
        attempt: ConnectionAttempt,
    ) -> None:
        # bytes_in: from the peer to the export (what the relay wrote out to the export).
        if audit.enabled():
            head = {"peer": caller, "export": export, "client": client_ip}
            audit.write("ingress connection", attempt.record(head, relay.bytes_out, relay.bytes_in))
        m = self.metrics
        m.ingress_active.dec()
        m.export_closed.labels(export, caller).inc()
        m.export_bytes.labels(export, "in").inc(relay.bytes_out)  # from the peer to the export
        m.export_bytes.labels(export, "out").inc(relay.bytes_in)

    def _caller(self, caller: str) -> Peer | None:
        """Our Peer object for the caller (its labels, client_attributes), if any."""
        entry = self.registry.objects["peers"].get(caller)
        if entry is None:
            return None
        assert isinstance(entry.obj, Peer)
        return entry.obj


def _refusal_document(attempt: ConnectionAttempt) -> dict[str, Any] | None:
    """The ``decision`` of a 403 body: deciding policy (null: the default deny), tier and
    selectors, for the importer's refusal log line."""
    if attempt.explanation is None:
        return None
    doc = attempt.explanation.document()
    return {k: doc[k] for k in ("action", "tier", "policy", "summary", "selector")}


def _address(req: IncomingStream) -> str:
    host, port = req.client_address
    return f"{host}:{port}"
