"""The live fabric page's data (``GET /fabric.json`` on the metrics listener), as pure functions.

What it shows is what the metrics already carry, arranged for a person: the peers this gateway
knows and its links to them (reachability, RTT, links, forward or reverse), imports and exports
with connection counts and bytes, and the last refused connections with the deciding policy.
Object specs add only names (import sources, ``allowed_peers``) and an import's listen address;
no export backend address, no client address.

Connection counts and bytes are summed over every process that answered (``workers``), and
the refusals are the newest of every process (each row names its ``worker``); peer state
(links, heartbeats) is the main process's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.metrics_core import Metric

from ..model.objects import KINDS, Export, Import, Peer
from ..registry import Registry

SCOPE_ALL = "connections, bytes and refusals: every process that answered"
SCOPE_MAIN = "peer links and heartbeats: the main process only"

# (sample name, field) summed per import / per export
IMPORT_SAMPLES = {
    "clusterlink_import_connections_total": "connections",
    "clusterlink_import_connections_closed_total": "closed",
    "clusterlink_import_connection_failures_total": "failures",
}
EXPORT_SAMPLES = {
    "clusterlink_export_connections_total": "connections",
    "clusterlink_export_connections_closed_total": "closed",
}
IMPORT_BYTES = "clusterlink_import_bytes_total"
EXPORT_BYTES = "clusterlink_export_bytes_total"


def _zero() -> dict[str, float]:
    return {"connections": 0, "closed": 0, "failures": 0, "bytes_in": 0, "bytes_out": 0}


def traffic(families: Iterable[Metric]) -> dict[str, dict[str, dict[str, float]]]:
    """``{"imports": {name: counts}, "exports": {name: counts}}`` summed over every sample
    (every process, every calling peer); counts: connections, closed, failures, bytes_in,
    bytes_out (bytes of connections that ended)."""
    out: dict[str, dict[str, dict[str, float]]] = {"imports": {}, "exports": {}}
    for family in families:
        for s in family.samples:
            if s.name in IMPORT_SAMPLES or s.name == IMPORT_BYTES:
                kind, name = "imports", s.labels.get("import_name")
                field = IMPORT_SAMPLES.get(s.name)
            elif s.name in EXPORT_SAMPLES or s.name == EXPORT_BYTES:
                kind, name = "exports", s.labels.get("export")
                field = EXPORT_SAMPLES.get(s.name)
            else:
                continue
            if name is None:
                continue
            if field is None:  # bytes, by direction
                field = "bytes_in" if s.labels.get("direction") == "in" else "bytes_out"
            counts = out[kind].setdefault(name, _zero())
            counts[field] += s.value
    return out


def _counts(found: Mapping[str, float] | None) -> dict[str, int]:
    c = found or _zero()
    return {
        "active": max(0, int(c["connections"] - c["closed"])),
        "connections": int(c["connections"]),
        "failures": int(c["failures"]),
        "bytes_in": int(c["bytes_in"]),
        "bytes_out": int(c["bytes_out"]),
    }


def _peer(doc: dict[str, Any], spec: Peer) -> dict[str, Any]:
    status = doc.get("status") or {}
    learned = status.get("labels") or {}
    return {
        "name": doc["name"],
        "labels": {**learned, **dict(spec.labels)},
        "dial": spec.spec.dial,
        "reachable": status.get("reachable"),
        "rtt_ms": status.get("rtt_ms"),
        "links": status.get("links", 0),
        "reverse_links": status.get("reverse_links", 0),
        "via": status.get("via", "direct" if spec.spec.dial else "reverse"),
        "last_seen": status.get("last_seen"),
        "error": status.get("error"),
    }


def snapshot(
    registry: Registry,
    local: Mapping[str, Any],
    families: Iterable[Metric],
    answered: Mapping[str, bool],
    refusals: list[dict[str, Any]],
    *,
    refusals_total: int = 0,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The document ``/fabric.json`` serves (see the module docstring)."""
    counts = traffic(families)
    peers = []
    for entry in registry.list(KINDS["peers"]):
        assert isinstance(entry.obj, Peer)
        peers.append(_peer(registry.document(entry), entry.obj))
    imports = []
    for entry in registry.list(KINDS["imports"]):
        assert isinstance(entry.obj, Import)
        status = registry.document(entry).get("status") or {}
        imports.append(
            {
                "name": entry.name,
                "listen": status.get("listen"),
                "listening": status.get("listening"),
                "error": status.get("error"),
                "sources": [
                    {"peer": s.peer, "export": s.export or entry.name}
                    for s in entry.obj.spec.sources
                ],
                **_counts(counts["imports"].get(entry.name)),
            }
        )
    exports = []
    for entry in registry.list(KINDS["exports"]):
        assert isinstance(entry.obj, Export)
        exports.append(
            {
                "name": entry.name,
                "allowed_peers": list(entry.obj.spec.allowed_peers),
                **_counts(counts["exports"].get(entry.name)),
            }
        )
    return {
        "gateway": {"name": local["peer_name"], "labels": dict(local.get("labels") or {})},
        "time": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "processes": {
            "answered": sorted(w for w, ok in answered.items() if ok),
            "missing": sorted(w for w, ok in answered.items() if not ok),
            "scope": [SCOPE_ALL, SCOPE_MAIN] if len(answered) > 1 else [],
        },
        "peers": peers,
        "imports": imports,
        "exports": exports,
        "refusals": refusals,
        "refusals_total": refusals_total,
    }
