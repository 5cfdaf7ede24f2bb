"""``gwctl explain``: how each end would decide a connection between this gateway and a peer.

For peer P and export E there are two directions, each a list of checks:

* ``import`` (this gateway imports E from P): our egress decision for each Import whose sources
  take E from P (with none: as for an import without labels), then P's ingress decision for us
  (its ``allowed_peers``, then its ingress policies), asked over the peer link.
* ``export`` (P imports our export E): our ingress decision for P, taken as on a CONNECT
  (``allowed_peers``, the client address P may assert, then the policies), then P's egress
  decision, asked over the peer link.

The peer answers ``GET /v1/explain`` (export and client address in the CONNECT headers) about
the caller only: who asks comes from the verified certificate, never from the request. What a
peer answers is checked and bounded before we show it. The decisions come from the policy
engine itself (``policy.explain``), so they are the ones a connection would get now.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from ..model.objects import KINDS, Export, Import, Peer
from ..policy.attributes import asserted_client_ip, destination_attributes, source_attributes
from ..policy.engine import PolicyEngine
from ..policy.explain import MAX_REMOTE_TEXT, explain, remote_decision
from ..registry import NotFound, Registry
from .request import CLIENT_IP_HEADER, EXPORT_HEADER, shorten

EXPORTS, IMPORTS, PEERS = KINDS["exports"], KINDS["imports"], KINDS["peers"]
DECIDED_BY = ("policy", "allowed_peers", "unknown-export", "not-a-peer")
NO_IMPORT = "no import takes {export} from {peer} here: decided as for an import without labels"

Check = dict[str, Any]
# ask(peer, headers) -> (status, body) of GET /v1/explain on the peer; OSError/TimeoutError
Ask = Callable[[str, dict[str, str]], Awaitable[tuple[int, bytes]]]


def _check(gateway: str, side: str, import_name: str | None = None, **fields: Any) -> Check:
    """A check record; every key always present (null when it does not apply)."""
    check: Check = {
        "gateway": gateway,
        "side": side,
        "import": import_name,
        "answered": True,
        "allowed": None,
        "decided_by": None,
        "result": "",
        "decision": None,
        "client_ip": None,
        "attributes": None,
        "note": None,
    }
    check.update(fields)
    return check


def not_answered(gateway: str, side: str, why: str) -> Check:
    """The other end's check when it could not be asked or did not answer."""
    return _check(gateway, side, answered=False, result=f"not answered: {why}")


def verdict(checks: list[Check]) -> bool | None:
    """A direction's outcome: True when some egress check and the ingress check allow, False
    when either end refuses for sure, None when an end did not answer."""
    sides = []
    for side in ("egress", "ingress"):
        values = [c["allowed"] for c in checks if c["side"] == side]
        if any(v is True for v in values):
            sides.append(True)
        elif values and all(v is False for v in values):
            sides.append(False)
        else:
            sides.append(None)
    if False in sides:
        return False
    return True if all(v is True for v in sides) else None


class Explainer:
    """This gateway's own checks (pure lookups) and the admin API's whole explanation."""

    def __init__(
        self,
        registry: Registry,
        engine: PolicyEngine,
        local: dict[str, Any],
        *,
        peer_labels: Callable[[str], dict[str, str]],
        admits: Callable[[str], bool],
        fabric_of: Callable[[str], bool | None],
        ask: Ask | None = None,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.local = local  # {"peer_name": ..., "labels": {...}}
        self.peer_labels = peer_labels  # learned from heartbeats, overlaid by our Peer object
        self.admits = admits
        self.fabric_of = fabric_of  # does P's certificate chain to the fabric CA (None: no link)
        self.ask = ask

    @property
    def name(self) -> str:
        return str(self.local["peer_name"])

    # -- this gateway's checks --------------------------------------------------------------

    def egress(self, exporter: str, export: str, client_ip: str | None) -> list[Check]:
        """Our egress decision towards ``exporter``'s ``export``, per Import that takes it."""
        if exporter not in self.registry.objects[PEERS.plural]:
            result = f"peer {exporter!r} is not a Peer here: no import can take from it"
            return [
                _check(self.name, "egress", allowed=False, decided_by="not-a-peer", result=result)
            ]
        takers = []
        for entry in self.registry.list(IMPORTS):
            obj = entry.obj
            assert isinstance(obj, Import)
            sources = obj.spec.sources
            if any(s.peer == exporter and (s.export or entry.name) == export for s in sources):
                takers.append((entry.name, dict(obj.labels)))
        note = None
        if not takers:
            takers = [(None, {})]
            note = NO_IMPORT.format(export=export, peer=exporter)
        src = source_attributes(self.name, self.local["labels"], client_ip)
        checks = []
        for import_name, labels in takers:
            dst = destination_attributes(exporter, self.peer_labels(exporter), export, labels)
            why = explain(self.engine, src, dst, client_ip)
            checks.append(
                _check(
                    self.name,
                    "egress",
                    import_name,
                    allowed=why.allowed,
                    decided_by="policy",
                    result=str(why),
                    decision=why.document(),
                    client_ip=client_ip,
                    attributes={"source": src, "destination": dst},
                    note=note,
                )
            )
        return checks

    def ingress(self, caller: str, export: str, claimed_ip: str | None, fabric: bool) -> Check:
        """Our ingress decision for ``caller`` on ``export``, as its CONNECT would get it."""
        if not self.admits(caller):
            return _check(
                self.name,
                "ingress",
                allowed=False,
                decided_by="not-a-peer",
                result=f"peer {caller!r} is not a Peer here",
            )
        entry = self.registry.objects[EXPORTS.plural].get(export)
        if entry is None:
            return _check(
                self.name,
                "ingress",
                allowed=False,
                decided_by="unknown-export",
                result=f"no export {export!r} at {self.name}",
            )
        obj = entry.obj
        assert isinstance(obj, Export)
        if obj.spec.allowed_peers and caller not in obj.spec.allowed_peers:
            return _check(
                self.name,
                "ingress",
                allowed=False,
                decided_by="allowed_peers",
                result=f"peer {caller!r} is not in allowed_peers of {export!r}",
            )
        peer_entry = self.registry.objects[PEERS.plural].get(caller)
        peer = peer_entry.obj if peer_entry is not None else None
        assert peer is None or isinstance(peer, Peer)
        setting = peer.spec.client_attributes if peer is not None else None
        client_ip = asserted_client_ip(claimed_ip, setting, fabric=fabric)
        note = None
        if claimed_ip is not None and client_ip is None:
            note = f"the client address {caller} asserts is ignored here (client_attributes)"
        src = source_attributes(caller, dict(peer.labels) if peer else {}, client_ip)
        dst = destination_attributes(self.name, self.local["labels"], export, obj.labels)
        why = explain(self.engine, src, dst, client_ip)
        return _check(
            self.name,
            "ingress",
            allowed=why.allowed,
            decided_by="policy",
            result=str(why),
            decision=why.document(),
            client_ip=client_ip,
            attributes={"source": src, "destination": dst},
            note=note,
        )

    def answer_peer(
        self, caller: str, fabric: bool, export: str, client_ip: str | None
    ) -> dict[str, Any]:
        """The body of our answer to a peer's ``GET /v1/explain``: about that peer only."""
        return {
            "gateway": self.name,
            "ingress": self.ingress(caller, export, client_ip, fabric),
            "egress": self.egress(caller, export, client_ip),
        }

    # -- the whole explanation (admin API) --------------------------------------------------

    async def explain(self, peer: str, export: str, client_ip: str | None) -> dict[str, Any]:
        """Both directions between us and ``peer`` for ``export``; NotFound when neither end
        has anything named ``export`` to explain."""
        remote, error = await self._ask_peer(peer, export, client_ip)
        local_export = export in self.registry.objects[EXPORTS.plural]
        egress = self.egress(peer, export, client_ip)
        imported_here = egress[0]["import"] is not None
        remote_ingress = remote["ingress"] if remote else None
        remote_has_export = remote_ingress is not None and remote_ingress["decided_by"] not in (
            "unknown-export",
            None,
        )
        if not (local_export or imported_here or remote_has_export):
            if remote_ingress is not None:
                there = (
                    f"peer {peer!r} has no export {export!r} for us ({remote_ingress['result']})"
                )
            else:
                there = f"peer {peer!r} could not be asked: {error}"
            raise NotFound(
                f"export {export!r} is not an export here, no import here takes it from peer "
                f"{peer!r}, and {there}",
                field="export",
            )
        directions = []
        if imported_here or remote_has_export:
            ingress = remote_ingress or not_answered(peer, "ingress", str(error))
            checks = [*egress, ingress]
            directions.append(self._direction("import", self.name, peer, checks))
        if local_export:
            fabric = self.fabric_of(peer)
            ingress = self.ingress(peer, export, client_ip, True if fabric is None else fabric)
            if fabric is None and ingress["client_ip"] is not None:
                ingress["note"] = (
                    f"assumed: {peer}'s certificate chains to the fabric CA (no link from it now)"
                )
            remote_egress = remote["egress"] if remote else None
            checks = [ingress, *(remote_egress or [not_answered(peer, "egress", str(error))])]
            directions.append(self._direction("export", peer, self.name, checks))
        return {
            "gateway": self.name,
            "peer": peer,
            "export": export,
            "client_ip": client_ip,
            "directions": directions,
        }

    @staticmethod
    def _direction(kind: str, importer: str, exporter: str, checks: list[Check]) -> dict[str, Any]:
        return {
            "direction": kind,
            "importer": importer,
            "exporter": exporter,
            "allowed": verdict(checks),
            "checks": checks,
        }

    async def _ask_peer(
        self, peer: str, export: str, client_ip: str | None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(the peer's checked answer, None) or (None, why it did not answer)."""
        if self.ask is None:
            return None, "no peer link here"
        headers = {EXPORT_HEADER: export}
        if client_ip is not None:
            headers[CLIENT_IP_HEADER] = client_ip
        try:
            status, body = await self.ask(peer, headers)
        except (OSError, TimeoutError) as exc:
            return None, f"peer unreachable: {exc or type(exc).__name__}"
        except ValueError as exc:  # e.g. an answer larger than a response may be
            return None, f"the peer's answer is unusable: {exc}"
        if status == 404:
            return None, "the peer does not answer explain requests (an older version?)"
        if status != 200:
            return None, f"the peer answered {status}"
        try:
            return remote_answer(peer, json.loads(body)), None
        except ValueError as exc:
            return None, f"the peer's answer is malformed: {exc}"


def _text(value: Any, limit: int = MAX_REMOTE_TEXT) -> str | None:
    return shorten(value, limit) if isinstance(value, str) else None


def _attributes(raw: Any) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        return None
    return {
        shorten(str(k), 320): shorten(str(v), 64)
        for k, v in list(raw.items())[:64]
        if isinstance(k, str) and isinstance(v, str)
    }


def remote_check(raw: Any, gateway: str, side: str) -> Check:
    """One check a peer sent, checked and bounded; ``gateway`` is the peer we asked (its own
    claim is ignored)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{side} check is not an object")
    allowed = raw.get("allowed")
    decided_by = raw.get("decided_by")
    attributes = raw.get("attributes")
    return _check(
        gateway,
        side,
        _text(raw.get("import"), 63),
        allowed=allowed if isinstance(allowed, bool) else None,
        decided_by=decided_by if decided_by in DECIDED_BY else None,
        result=_text(raw.get("result")) or "",
        decision=remote_decision(raw.get("decision")),
        client_ip=_text(raw.get("client_ip"), 64),
        attributes={
            "source": _attributes(attributes.get("source")),
            "destination": _attributes(attributes.get("destination")),
        }
        if isinstance(attributes, dict)
        else None,
        note=_text(raw.get("note")),
    )


def remote_answer(peer: str, raw: Any) -> dict[str, Any]:
    """A peer's ``GET /v1/explain`` answer, checked: {"ingress": check, "egress": [checks]}."""
    if not isinstance(raw, dict):
        raise ValueError("not an object")
    egress = raw.get("egress")
    if not isinstance(egress, list) or not egress:
        raise ValueError("egress is not a non-empty list")
    return {
        "ingress": remote_check(raw.get("ingress"), peer, "ingress"),
        "egress": [remote_check(c, peer, "egress") for c in egress[:16]],
    }
