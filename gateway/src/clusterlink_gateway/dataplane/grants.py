"""Peering grants, the granting side: create, list, revoke, and serve the redemptions that
arrive on the peer port; the redeeming side is ``redeem``. The decisions are
``peering.grants``; the connection ``peering.grantwire``; the records ``store.grants``.
Secrets are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from ..metrics import Metrics
from ..model.common import DNS_LABEL
from ..model.objects import KINDS
from ..peering import grants as core
from ..peering.admission import RefusalLog
from ..peering.tls import TLSContexts
from ..registry import Conflict, Invalid, NotFound, Registry, RegistryError
from ..store.grants import GrantTable
from .grantinput import (
    GRANT_LABEL,
    integral,
    parse_duration,
    parse_endpoints,
    split_endpoint,
)
from .redeem import Redeemer, local_endpoints, tls_files

log = logging.getLogger("clusterlink.grants")

MAX_USES = 100
RATE_WINDOW = 60.0  # redemption attempts per source host and window ...
RATE_ATTEMPTS = 10  # ... above this, refused "rate-limited"
RATE_LIMITED = "rate-limited"


class GrantService:
    """The grants of one gateway (main process)."""

    def __init__(
        self,
        registry: Registry,
        table: GrantTable,
        tls: TLSContexts,
        metrics: Metrics,
        *,
        listen: tuple[str, int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.table = table
        self.tls = tls
        self.metrics = metrics
        self.listen = listen
        self.clock = clock
        self._log = RefusalLog(60.0)
        self._attempts: dict[str, list[float]] = {}
        self._serving = asyncio.Lock()  # one redemption decided and applied at a time
        self.redeemer = Redeemer(registry, tls, metrics, listen=listen, clock=clock)

    # -- material ------------------------------------------------------------------------------

    # -- granting side -------------------------------------------------------------------------

    async def create(self, data: Any) -> tuple[core.GrantRecord, str]:
        if not isinstance(data, dict):
            raise RegistryError("expected a JSON object", field="(body)")
        unknown = set(data) - {"peer_name", "expires", "uses", "endpoints"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
        peer_name = data.get("peer_name")
        if not isinstance(peer_name, str) or not re.fullmatch(DNS_LABEL, peer_name):
            raise Invalid("peer_name: a DNS label is required", field="peer_name")
        local = self.tls.local_name
        if peer_name == local:
            message = f"peer_name: {peer_name!r} is this gateway's own name"
            raise Conflict(message, field="peer_name")
        if peer_name in self.registry.objects["peers"]:
            raise Conflict(f"peer_name: a Peer {peer_name!r} exists already", field="peer_name")
        expires = parse_duration(data.get("expires", "24h"), "expires")
        uses = integral(data.get("uses", 1))
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
            raise Invalid(f"uses: an integer from 1 to {MAX_USES}", field="uses")
        if "endpoints" in data:
            endpoints = parse_endpoints(data["endpoints"], "endpoints")
        else:
            endpoints = local_endpoints(self.listen)
            if not endpoints:
                raise Invalid(
                    "endpoints: listen.address is a wildcard; name the {host, port} the other "
                    "party dials",
                    field="endpoints",
                )
        key, cert, ca = tls_files(self.tls)
        now = int(self.clock())
        secret = core.new_secret()
        grant = core.Grant(
            id=core.new_id(),
            sites=(core.Site(local, endpoints),),
            ca=ca,
            cert=cert,
            peer_name=peer_name,
            expires=now + expires,
            secret=secret,
        )
        text = core.encode(grant, key)
        record = core.GrantRecord(
            id=grant.id,
            peer_name=peer_name,
            secret_hash=core.secret_hash(secret),
            body_digest=core.decode(text).digest,
            expires=grant.expires,
            uses=uses,
            uses_left=uses,
            created=now,
        )
        await self.table.put(record)
        log.info(
            "grant created",
            extra={
                "grant": grant.id,
                "peer_name": peer_name,
                "expires": grant.expires,
                "uses": uses,
            },
        )
        return record, text

    async def list(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [r.metadata(now) for r in await self.table.list()]

    async def revoke(self, grant_id: str) -> dict[str, Any]:
        record = await self.table.get(grant_id)
        if record is None:
            raise NotFound(f"grant {grant_id[:64]!r} not found")
        if not record.revoked:
            record.revoked = True
            await self.table.put(record)
            log.info("grant revoked", extra={"grant": grant_id, "peer_name": record.peer_name})
        return record.metadata(self.clock())

    def _rate_limited(self, client: str | None) -> bool:
        host = (client or "").rpartition(":")[0]
        now = self.clock()
        times = [t for t in self._attempts.get(host, []) if now - t < RATE_WINDOW]
        times.append(now)
        self._attempts[host] = times
        if len(self._attempts) > 4096:  # bounded memory under a flood of sources
            self._attempts = {h: t for h, t in self._attempts.items() if now - t[-1] < RATE_WINDOW}
        return len(times) > RATE_ATTEMPTS

    def _refuse(self, result: str, message: str, grant_id: str | None, client: str | None) -> dict:
        self.metrics.grant_redemptions.labels("granter", result).inc()
        ok, suppressed = self._log.allow(result, grant_id)
        if ok:
            extra: dict[str, Any] = {"reason": result, "detail": message, "client_address": client}
            if grant_id:
                extra["grant"] = grant_id
            if suppressed:
                extra["suppressed"] = suppressed
            log.warning("grant redemption refused", extra=extra)
        return {"result": result, "message": message}

    async def serve(self, raw: bytes, client: str | None) -> dict[str, Any]:
        """One redemption request on the peer port: the answer document."""
        if self._rate_limited(client):
            return self._refuse(RATE_LIMITED, "too many redemption attempts", None, client)
        binding = hashlib.sha256(self.tls.certificate_der()).hexdigest()
        try:
            presented = core.parse_redemption(raw, binding=binding)
        except core.GrantError as exc:
            return self._refuse(exc.reason, str(exc), None, client)
        async with self._serving:  # two redemptions of one grant must not both pass
            return await self._apply(presented, client)

    async def _apply(self, presented: core.Presented, client: str | None) -> dict[str, Any]:
        grant = presented.decoded.grant
        record = await self.table.get(grant.id)
        result = core.decide(record, presented, self.clock())
        if result != core.ACCEPTED:
            return self._refuse(result, _MESSAGES.get(result, result), grant.id, client)
        assert record is not None
        r = presented.redemption
        peers = KINDS["peers"]
        endpoints = r.sites[0].endpoints
        body: dict[str, Any] = {
            "name": record.peer_name,
            "labels": {GRANT_LABEL: grant.id},
            "spec": {
                "dial": bool(endpoints),
                "gateways": [split_endpoint(e) for e in endpoints],
                "trust": {"ca": r.ca},
            },
        }
        existing = self.registry.objects["peers"].get(record.peer_name)
        try:
            if existing is None:
                await self.registry.create(peers, body)
            elif existing.obj.labels.get(GRANT_LABEL) == grant.id:
                await self.registry.replace(peers, record.peer_name, body)
            else:
                message = f"a Peer {record.peer_name!r} exists already (not from this grant)"
                return self._refuse(core.BAD_REQUEST, message, grant.id, client)
        except RegistryError as exc:
            return self._refuse(core.BAD_REQUEST, f"Peer: {exc.message}", grant.id, client)
        await self.table.put(core.redeemed(record, presented, self.clock()))
        self.metrics.grant_redemptions.labels("granter", core.ACCEPTED).inc()
        log.info(
            "grant redeemed",
            extra={
                "grant": grant.id,
                "peer_name": record.peer_name,
                "sites": [s.name for s in r.sites],
                "uses_left": record.uses_left,
                "client_address": client,
            },
        )
        return {"result": core.ACCEPTED, "message": "redeemed", "peer_name": record.peer_name}

    async def redeem(self, data: Any) -> dict[str, Any]:
        """Redeem another party's grant (``redeem.Redeemer``)."""
        return await self.redeemer.redeem(data)


_MESSAGES = {
    core.EXPIRED: "the grant expired",
    core.USED_UP: "the grant has no uses left",
    core.REPLAYED: "this redemption was made already (replayed after the grant's last use)",
    core.TAMPERED: "the grant does not match the one issued here",
    core.REVOKED: "the grant was revoked",
    core.UNKNOWN: "no such grant here",
    core.BAD_REQUEST: "the redeeming gateway is not the one the grant names",
}
