"""``gwctl grant``: peering grants (create, list, revoke on the granting side; redeem on the
other party's)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..client import AdminClient, APIError
from .render import render


class GrantUsageError(Exception):
    """Bad command-line input (exit code 2)."""


def _endpoints(values: list[str]) -> list[dict[str, Any]]:
    out = []
    for text in values:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise GrantUsageError(f"--endpoint {text!r}: expected HOST:PORT")
        out.append({"host": host.strip("[]"), "port": int(port)})
    return out


def _answer(client: AdminClient, method: str, path: str, body: Any = None) -> Any:
    payload = None if body is None else json.dumps(body).encode()
    resp = client.raw(method, path, payload)
    if resp.status >= 400:
        doc = resp.body if isinstance(resp.body, dict) else {}
        result = doc.get("result")
        message = str(doc.get("message") or resp.body or "request failed")
        if result:
            message = f"grant refused ({result}): {message}"
        raise APIError(resp.status, message, resp.body)
    return resp.body


def cmd_create(client: AdminClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"peer_name": args.peer_name, "expires": args.expires, "uses": args.uses}
    if args.endpoint:
        body["endpoints"] = _endpoints(args.endpoint)
    doc = _answer(client, "POST", "/v1/grants", body)
    if args.output in ("json", "yaml"):
        print(render("raw", doc, args.output))
        return 0
    print(
        f"grant {doc['id']} for {doc['peer_name']}: {doc['uses']} use(s), expires at "
        f"{doc['expires']} (unix); hand this text to the other party (shown once):",
        file=sys.stderr,
    )
    print(doc["grant"])
    return 0


def cmd_list(client: AdminClient, args: argparse.Namespace) -> int:
    rows = _answer(client, "GET", "/v1/grants")
    if args.output in ("json", "yaml"):
        print(render("raw", rows, args.output))
        return 0
    print(f"{'ID':<20} {'PEER':<20} {'STATE':<9} {'USES LEFT':>9}  EXPIRES")
    for r in rows:
        left = r["uses_left"]
        print(f"{r['id']:<20} {r['peer_name']:<20} {r['state']:<9} {left:>9}  {r['expires']}")
    return 0


def cmd_revoke(client: AdminClient, args: argparse.Namespace) -> int:
    doc = _answer(client, "DELETE", f"/v1/grants/{args.id}")
    print(f"grant {doc['id']} revoked")
    return 0


def cmd_redeem(client: AdminClient, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    body: dict[str, Any] = {"grant": text.strip()}
    if args.endpoint:
        body["endpoints"] = _endpoints(args.endpoint)
    doc = _answer(client, "POST", "/v1/grants/redeem", body)
    if args.output in ("json", "yaml"):
        print(render("raw", doc, args.output))
    elif doc.get("result") == "already-redeemed":
        print(f"grant {doc['grant']} already redeemed here (peers {', '.join(doc['peers'])})")
    else:
        print(f"grant {doc['grant']} redeemed: peers {', '.join(doc['peers'])} created")
    return 0


def add_parser(sub: Any) -> None:
    grant = sub.add_parser("grant", help="peering grants with another party (create, redeem)")
    gsub = grant.add_subparsers(dest="grant_command", required=True)
    create = gsub.add_parser("create", help="print a one-time grant for another party")
    create.add_argument("--peer-name", required=True, help="the name the other party's site has")
    create.add_argument("--expires", default="24h", help="lifetime: seconds or 90s/15m/24h/7d")
    create.add_argument("--uses", type=int, default=1, help="redemptions allowed (default 1)")
    create.add_argument(
        "--endpoint", action="append", metavar="HOST:PORT", help="our peer port as they dial it"
    )
    create.set_defaults(func=cmd_create)
    gsub.add_parser("list", help="grants issued here (never their secret)").set_defaults(
        func=cmd_list
    )
    revoke = gsub.add_parser("revoke", help="revoke a grant")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_revoke)
    redeem = gsub.add_parser("redeem", help="redeem another party's grant (FILE, - for stdin)")
    redeem.add_argument("file")
    redeem.add_argument(
        "--endpoint", action="append", metavar="HOST:PORT", help="our peer port as they dial it"
    )
    redeem.set_defaults(func=cmd_redeem)
