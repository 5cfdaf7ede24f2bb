"""Output of gwctl: tables for people, JSON and YAML for programs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml


def _join(items: list[str]) -> str:
    return ",".join(items) if items else "-"


def _labels(labels: dict[str, str]) -> str:
    return _join([f"{k}={v}" for k, v in sorted(labels.items())])


def _reach(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def _selector(sel: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted(sel.get("matchLabels", {}).items())]
    for expr in sel.get("matchExpressions", []):
        values = ",".join(expr.get("values", []))
        parts.append(f"{expr['key']} {expr['operator']}" + (f" ({values})" if values else ""))
    parts += [f"ip in {c}" for c in sel.get("clientCIDRs", [])]
    return "{" + "; ".join(parts) + "}" if parts else "*"


def _gateways(peer: dict[str, Any]) -> str:
    via = ", ".join(peer["spec"].get("via") or [])
    if peer["spec"].get("dial") is False:
        return f"- (relayed via {via})" if via else "- (outbound-only: it dials us)"
    endpoints = _join([f"{g['host']}:{g['port']}" for g in peer["spec"]["gateways"]])
    return f"{endpoints} (relays: {via})" if via else endpoints


def _links(peer: dict[str, Any]) -> str:
    """Usable links, with how many are reverse ones (theirs to us, or ours to them)."""
    status = peer.get("status") or {}
    links = status.get("links")
    if links is None:
        return "-"
    if status.get("via") == "reverse":
        return f"{links} reverse"
    if status.get("via") not in (None, "direct"):
        return f"{links} via {status['via']}"  # relayed
    lent = status.get("reverse_links") or 0
    return f"{links} +{lent} reverse" if lent else str(links)


def _trust(peer: dict[str, Any]) -> str:
    """The Peer's own anchors (``spec.trust``): subject, SHA-256 fingerprint and not_after of
    each; ``fabric`` without (never the PEM)."""
    anchors = (peer.get("status") or {}).get("trust") or []
    if not anchors:
        return "fabric" if not peer["spec"].get("trust") else "own"
    return "; ".join(
        f"{a['subject']} sha256:{a['fingerprint_sha256']} until {a['not_after']}" for a in anchors
    )


COLUMNS: dict[str, list[tuple[str, Callable[[dict[str, Any]], str]]]] = {
    "offers": [("EXPORT", lambda o: o["name"]), ("LABELS", lambda o: _labels(o["labels"]))],
    "peers": [
        ("NAME", lambda o: o["name"]),
        ("GATEWAYS", _gateways),
        ("LINKS", _links),
        ("CLIENT ATTRS", lambda o: o["spec"].get("client_attributes") or "default"),
        ("TRUST", _trust),
        ("REACHABLE", lambda o: _reach(o["status"].get("reachable"))),
        ("LAST SEEN", lambda o: o["status"].get("last_seen") or "-"),
        ("LABELS", lambda o: _labels(o["status"].get("labels") or o["labels"])),
    ],
    "exports": [
        ("NAME", lambda o: o["name"]),
        ("TARGET", lambda o: f"{o['spec']['host']}:{o['spec']['port']}"),
        (
            "ALLOWED PEERS",
            lambda o: _join(o["spec"]["allowed_peers"]) if o["spec"]["allowed_peers"] else "any",
        ),
        ("LABELS", lambda o: _labels(o["labels"])),
        ("ERROR", lambda o: o["status"].get("error") or "-"),
    ],
    "imports": [
        ("NAME", lambda o: o["name"]),
        ("DNS NAME", lambda o: o["status"].get("dns_name") or "-"),
        ("LISTEN", lambda o: o["status"].get("listen") or "-"),
        (
            "SOURCES",
            lambda o: _join(
                [f"{s['peer']}/{s['export'] or o['name']}" for s in o["spec"]["sources"]]
            ),
        ),
        ("LB", lambda o: o["spec"]["lb_scheme"]),
        ("ERROR", lambda o: o["status"].get("error") or "-"),
    ],
    "policies": [
        ("NAME", lambda o: o["name"]),
        ("ACTION", lambda o: o["spec"]["action"]),
        ("TIER", lambda o: "privileged" if o["spec"]["privileged"] else "regular"),
        ("FROM", lambda o: " | ".join(_selector(s) for s in o["spec"]["from"])),
        ("TO", lambda o: " | ".join(_selector(s) for s in o["spec"]["to"])),
    ],
}


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _object_table(plural: str, objects: list[dict[str, Any]]) -> str:
    cols = COLUMNS[plural]
    rows = [[title for title, _ in cols]] + [[fn(o) for _, fn in cols] for o in objects]
    return table(rows)


def _duration(seconds: int) -> str:
    """``19d 23h``, ``5h 12m``, ``42s``; ``expired 2d 1h ago`` when negative."""
    left = abs(seconds)
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        text = f"{days}d {hours}h"
    elif hours:
        text = f"{hours}h {minutes}m"
    else:
        text = f"{minutes}m" if minutes else f"{left}s"
    return f"expired {text} ago" if seconds <= 0 else text


def _certificate_rows(certs: list[dict[str, Any]]) -> list[list[str]]:
    return [["KIND", "SUBJECT", "SHA-256", "NOT AFTER", "EXPIRES IN"]] + [
        [
            c["kind"],
            c["subject"],
            c["fingerprint_sha256"][:16],
            c["not_after"],
            _duration(int(c["expires_in_seconds"])),
        ]
        for c in certs
    ]


def _status_table(status: dict[str, Any]) -> str:
    lines = [
        f"gateway {status['peer_name']}  version {status['version']}  "
        f"ready {'yes' if status['ready'] else 'no'}  labels {_labels(status['labels'])}",
        "",
        "PEERS",
    ]
    peer_rows = [["NAME", "REACHABLE", "LAST SEEN", "LABELS"]] + [
        [
            p["name"],
            _reach(p.get("reachable")),
            p.get("last_seen") or "-",
            _labels(p.get("labels") or {}),
        ]
        for p in status["peers"]
    ]
    lines += [table(peer_rows), "", "IMPORTS"]
    imp_rows = [["NAME", "DNS NAME", "LISTEN", "LISTENING", "ERROR"]] + [
        [
            i["name"],
            i.get("dns_name") or "-",
            i.get("listen") or "-",
            "yes" if i.get("listening") else "no",
            i.get("error") or "-",
        ]
        for i in status["imports"]
    ]
    lines += [table(imp_rows), "", "EXPORTS"]
    exp_rows = [["NAME", "ERROR"]] + [[e["name"], e.get("error") or "-"] for e in status["exports"]]
    lines += [table(exp_rows), "", f"POLICIES {len(status.get('policies', []))}"]
    if status.get("certificates"):
        lines += ["", "CERTIFICATES", table(_certificate_rows(status["certificates"]))]
    if status.get("invalid"):
        lines += ["", "INVALID STORED OBJECTS"]
        lines += [f"{i['kind']}/{i['name']}: {i['error']}" for i in status["invalid"]]
    return "\n".join(lines)


_VERDICT = {True: "ALLOWED", False: "REFUSED", None: "UNKNOWN (an end did not answer)"}


def _matched(decision: dict[str, Any] | None) -> str:
    selector = (decision or {}).get("selector")
    if not selector:
        return "-"
    return " / ".join(f"{where} {_selector(sel)}" for where, sel in selector.items())


def _check_row(check: dict[str, Any]) -> list[str]:
    decision = check.get("decision")
    if not check["answered"]:
        result = "?"
    else:
        result = {True: "allow", False: "deny", None: "?"}[check.get("allowed")]
    notes = []
    if decision is None and check["answered"]:
        notes.append(check["result"])  # decided before any policy (allowed_peers, ...)
    elif not check["answered"]:
        notes.append(check["result"])
    if check.get("note"):
        notes.append(check["note"])
    if decision and decision.get("outranked"):
        lost = ", ".join(f"{o['policy']} ({o['action']})" for o in decision["outranked"])
        notes.append(f"outranked: {lost}")
    if decision and decision.get("cidrs_skipped"):
        notes.append("no client address: clientCIDRs do not match")
    return [
        check["gateway"],
        check["side"],
        check.get("import") or "-",
        result,
        (decision or {}).get("tier") or "-",
        ((decision or {}).get("policy") or "<default deny>") if decision else "-",
        _matched(decision),
        "; ".join(notes) or "-",
    ]


def _explain_table(data: dict[str, Any]) -> str:
    lines = [
        f"gateway {data['gateway']}  peer {data['peer']}  export {data['export']}  "
        f"client {data.get('client_ip') or '-'}"
    ]
    for direction in data["directions"]:
        lines += [
            "",
            f"{direction['direction'].upper()}: {direction['importer']} imports "
            f"{data['export']} from {direction['exporter']}: {_VERDICT[direction['allowed']]}",
        ]
        head = ["GATEWAY", "SIDE", "IMPORT", "RESULT", "TIER", "POLICY", "SELECTOR", "NOTE"]
        lines.append(table([head] + [_check_row(c) for c in direction["checks"]]))
    return "\n".join(lines)


def render(what: str, data: Any, fmt: str, single: bool = False) -> str:
    """Render API data as ``table``, ``json`` or ``yaml``."""
    if single and isinstance(data, list) and len(data) == 1 and fmt != "table":
        data = data[0]
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False).rstrip()
    if what == "status":
        return _status_table(data)
    if what == "explain":
        return _explain_table(data)
    if what in COLUMNS:
        return _object_table(what, data)
    return json.dumps(data, indent=2)
