"""Peering grants, both sides: create/list/revoke and serve redemptions (granting gateway),
redeem (redeeming gateway). The decisions are ``peering.grants``; the connection
``peering.grantwire``; the records ``store.grants``. Secrets are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..metrics import Metrics
from ..model.common import DNS_LABEL
from ..model.objects import KINDS, Gateway
from ..peering import grants as core
from ..peering.admission import RefusalLog
from ..peering.grantwire import ELSEWHERE, redeem
from ..peering.tls import TLSContexts
from ..registry import Conflict, Invalid, NotFound, Registry, RegistryError
from ..store.grants import GrantTable

log = logging.getLogger("clusterlink.grants")

GRANT_LABEL = "clusterlink.io/grant"  # on the Peer objects a grant created (either side)
MAX_EXPIRES = 30 * 86400  # a grant lives at most 30 days
MAX_USES = 100
RATE_WINDOW = 60.0  # redemption attempts per source host and window ...
RATE_ATTEMPTS = 10  # ... above this, refused "rate-limited"
RATE_LIMITED = "rate-limited"
DIAL_ATTEMPTS = 16  # a data-plane worker answers "elsewhere": the redeemer dials again


class Unreachable(RegistryError):
    status = 502


_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _integral(value: Any) -> Any:
    """A JSON number with no fraction (``18.0``) is an integer, as JSON Schema says."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_duration(value: Any, field: str) -> int:
    """Seconds from an int or "90s", "15m", "24h", "7d"."""
    message = f"{field}: expected seconds or a duration like 24h, at most {MAX_EXPIRES // 86400}d"
    value = _integral(value)
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = int(match[1]) * _UNIT[match[2]]
    else:
        raise Invalid(message, field=field)
    if not 1 <= seconds <= MAX_EXPIRES:
        raise Invalid(message, field=field)
    return seconds


def parse_endpoints(value: Any, field: str) -> tuple[str, ...]:
    """``[{host, port}]`` (a Peer's ``gateways`` shape) as HOST:PORT strings."""
    if not isinstance(value, list) or not 1 <= len(value) <= 16:
        raise Invalid(f"{field}: expected a list of 1 to 16 {{host, port}}", field=field)
    out = []
    for i, item in enumerate(value):
        try:
            gateway = Gateway.model_validate(item)
        except ValidationError:
            raise Invalid(f"{field}[{i}]: expected {{host, port}}", field=field) from None
        host = gateway.host
        out.append(f"[{host}]:{gateway.port}" if ":" in host else f"{host}:{gateway.port}")
    return tuple(out)


def _split(endpoint: str) -> dict[str, Any]:
    host, _, port = endpoint.rpartition(":")
    return {"host": host.strip("[]"), "port": int(port)}


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

    # -- material ------------------------------------------------------------------------------

    def _files(self) -> tuple[bytes, str, str]:
        s = self.tls.settings
        return Path(s.key).read_bytes(), Path(s.cert).read_text(), Path(s.ca).read_text()

    def _default_endpoints(self) -> tuple[str, ...]:
        host, port = self.listen
        if ipaddress.ip_address(host).is_unspecified:
            return ()
        return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}",)

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
        uses = _integral(data.get("uses", 1))
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
            raise Invalid(f"uses: an integer from 1 to {MAX_USES}", field="uses")
        if "endpoints" in data:
            endpoints = parse_endpoints(data["endpoints"], "endpoints")
        else:
            endpoints = self._default_endpoints()
            if not endpoints:
                raise Invalid(
                    "endpoints: listen.address is a wildcard; name the {host, port} the other "
                    "party dials",
                    field="endpoints",
                )
        key, cert, ca = self._files()
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
                "gateways": [_split(e) for e in endpoints],
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

    # -- redeeming side ------------------------------------------------------------------------

    async def redeem(self, data: Any) -> dict[str, Any]:
        """Redeem a grant from another party: Peer objects, then one dial. Idempotent: a grant
        already redeemed here changes nothing."""
        if not isinstance(data, dict) or not isinstance(data.get("grant"), str):
            raise Invalid("grant: the grant text is required", field="grant")
        unknown = set(data) - {"grant", "endpoints"}
        if unknown:
            raise Invalid(f"unknown field {sorted(unknown)[0]!r}", field=sorted(unknown)[0])
        try:
            decoded = core.decode(data["grant"])
        except core.GrantError as exc:
            return self._redeemer_refusal(exc.reason, str(exc))
        grant = decoded.grant
        local = self.tls.local_name
        peers = KINDS["peers"]
        mine = [
            e
            for e in self.registry.objects["peers"].values()
            if e.obj.labels.get(GRANT_LABEL) == grant.id
        ]
        if mine and {e.name for e in mine} == set(grant.site_names):
            peers_held = sorted(grant.site_names)
            return {
                "result": "already-redeemed",
                "changed": False,
                "grant": grant.id,
                "peers": peers_held,
            }
        if self.clock() >= grant.expires:
            return self._redeemer_refusal(core.EXPIRED, "the grant expired")
        if grant.peer_name != local:
            message = f"the grant is for {grant.peer_name!r}; this gateway is {local!r}"
            return self._redeemer_refusal(core.BAD_REQUEST, message)
        for site in grant.sites:
            if site.name == local or site.name in self.registry.objects["peers"]:
                raise Conflict(f"a Peer {site.name!r} exists already", field="grant")
        endpoints = (
            parse_endpoints(data["endpoints"], "endpoints")
            if "endpoints" in data
            else self._default_endpoints()
        )
        created: list[str] = []
        try:
            for site in grant.sites:
                await self.registry.create(
                    peers,
                    {
                        "name": site.name,
                        "labels": {GRANT_LABEL: grant.id},
                        "spec": {
                            "gateways": [_split(e) for e in site.endpoints],
                            "trust": {"ca": grant.ca},
                        },
                    },
                )
                created.append(site.name)
            answer = await self._dial(decoded, endpoints)
        except BaseException:
            await self._undo(created)
            raise
        result = str(answer.get("result"))
        if result != core.ACCEPTED:
            await self._undo(created)
            return self._redeemer_refusal(result, str(answer.get("message", result)))
        self.metrics.grant_redemptions.labels("redeemer", core.ACCEPTED).inc()
        log.info("grant redeemed at the granting site", extra={"grant": grant.id, "peers": created})
        return {"result": core.ACCEPTED, "changed": True, "grant": grant.id, "peers": created}

    async def _undo(self, created: list[str]) -> None:
        for name in created:
            with contextlib.suppress(RegistryError):
                await self.registry.delete(KINDS["peers"], name)

    async def _dial(self, decoded: core.Decoded, endpoints: tuple[str, ...]) -> dict[str, Any]:
        grant = decoded.grant
        key, cert, ca = self._files()
        sites = (core.Site(self.tls.local_name, endpoints),)

        def request(binding: str) -> bytes:
            r = core.Redemption(decoded.text, sites, ca, cert, binding)
            return core.redemption_request(r, key)

        errors = []
        for site in grant.sites:
            for endpoint in site.endpoints:
                target = _split(endpoint)
                for _ in range(DIAL_ATTEMPTS):
                    try:
                        answer = await redeem(
                            target["host"], target["port"], grant.ca, grant.site_names, request
                        )
                    except (ConnectionError, TimeoutError) as exc:
                        errors.append(f"{endpoint}: {str(exc) or type(exc).__name__}")
                        break
                    if answer.get("result") != ELSEWHERE:
                        return answer
        raise Unreachable(
            "the granting gateway could not be reached: " + "; ".join(errors[-4:]), field="grant"
        )

    def _redeemer_refusal(self, result: str, message: str) -> dict[str, Any]:
        self.metrics.grant_redemptions.labels("redeemer", result).inc()
        log.warning("grant redemption refused", extra={"reason": result, "detail": message})
        return {"result": result, "changed": False, "message": message}


_MESSAGES = {
    core.EXPIRED: "the grant expired",
    core.USED_UP: "the grant has no uses left",
    core.REPLAYED: "this redemption was made already (replayed after the grant's last use)",
    core.TAMPERED: "the grant does not match the one issued here",
    core.REVOKED: "the grant was revoked",
    core.UNKNOWN: "no such grant here",
    core.BAD_REQUEST: "the redeeming gateway is not the one the grant names",
}
