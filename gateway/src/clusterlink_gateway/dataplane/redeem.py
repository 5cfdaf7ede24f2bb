"""Peering grants, the redeeming side: verify a grant, create the Peers for the granting sites
(their bundle as ``spec.trust.ca``), dial the granting gateway once (``peering.grantwire``),
and undo the Peers if it refuses. Idempotent: a grant already redeemed here changes nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from ..metrics import Metrics
from ..model.objects import KINDS
from ..peering import grants as core
from ..peering.grantwire import ELSEWHERE, redeem
from ..peering.tls import TLSContexts
from ..registry import Conflict, Invalid, Registry, RegistryError
from .grantinput import GRANT_LABEL, Unreachable, parse_endpoints, split_endpoint

log = logging.getLogger("clusterlink.grants")

DIAL_ATTEMPTS = 16  # a data-plane worker answers "elsewhere": the redeemer dials again


def local_endpoints(listen: tuple[str, int]) -> tuple[str, ...]:
    """Our peer port as HOST:PORT, unless it listens on a wildcard address."""
    host, port = listen
    if ipaddress.ip_address(host).is_unspecified:
        return ()
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}",)


def tls_files(tls: TLSContexts) -> tuple[bytes, str, str]:
    """Our installed key (PEM bytes), certificate and CA bundle (PEM text)."""
    key, cert, ca = tls.material_pem()
    return key, cert.decode(), ca.decode()


class Redeemer:
    """Redeems other parties' grants at this gateway."""

    def __init__(
        self,
        registry: Registry,
        tls: TLSContexts,
        metrics: Metrics,
        *,
        listen: tuple[str, int],
        clock: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.tls = tls
        self.metrics = metrics
        self.listen = listen
        self.clock = clock

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
            else local_endpoints(self.listen)
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
                            "gateways": [split_endpoint(e) for e in site.endpoints],
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
        key, cert, ca = tls_files(self.tls)
        sites = (core.Site(self.tls.local_name, endpoints),)

        def request(binding: str) -> bytes:
            r = core.Redemption(decoded.text, sites, ca, cert, binding)
            return core.redemption_request(r, key)

        errors = []
        for site in grant.sites:
            for endpoint in site.endpoints:
                target = split_endpoint(endpoint)
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
