"""``gwctl``: the operator CLI over the admin API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from pydantic import ValidationError

from ..client import DEFAULT_SOCKET, AdminClient, APIError
from ..model.errors import format_validation_error
from ..model.objects import KINDS, Kind, kind_for, object_document
from . import grant
from .apply import ApplyError, FileError, check_documents, execute, plan, read_documents
from .export import export_documents, render_export, write_file
from .render import render

KIND_WORDS = sorted({w for k in KINDS.values() for w in (k.plural, k.singular)})


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


def _kind(word: str) -> Kind:
    try:
        return kind_for(word)
    except KeyError:
        raise UsageError(
            f"unknown kind {word!r}; expected one of {', '.join(KIND_WORDS)}"
        ) from None


def _labels(pairs: list[str] | None) -> dict[str, str] | None:
    if pairs is None:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--label {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _endpoint(text: str, flag: str) -> dict[str, Any]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"{flag} {text!r}: expected HOST:PORT")
    return {"host": host.strip("[]"), "port": int(port)}


def _source(text: str) -> dict[str, Any]:
    peer, _, export = text.partition("/")
    return {"peer": peer, "export": export or None}


def _selectors(values: list[str] | None, flag: str) -> list[Any] | None:
    if values is None:
        return None
    out = []
    for value in values:
        try:
            out.append(yaml.safe_load(value))
        except yaml.YAMLError as exc:
            raise UsageError(f"{flag} {value!r}: not JSON/YAML: {exc}") from None
    return out


def _read_bundle(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--trust-ca {path}: cannot read: {exc}") from None


def spec_from_flags(kind: Kind, args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """Apply the command-line flags of ``kind`` on top of ``base`` (an existing spec or {})."""
    spec = dict(base)
    given: dict[str, Any] = {}
    if kind.plural == "peers":
        if args.gateway:
            given["gateways"] = [_endpoint(g, "--gateway") for g in args.gateway]
        if args.dial is not None:
            given["dial"] = args.dial == "true"
        if args.client_attributes == "default":
            spec.pop("client_attributes", None)
        else:
            given["client_attributes"] = args.client_attributes
        if args.trust_ca == "none":
            spec.pop("trust", None)
        elif args.trust_ca is not None:
            given["trust"] = {"ca": _read_bundle(args.trust_ca)}
    elif kind.plural == "exports":
        given.update(host=args.host, port=args.port)
        if args.allowed_peer is not None:
            given["allowed_peers"] = args.allowed_peer
    elif kind.plural == "imports":
        given.update(port=args.port, bind=args.bind, lb_scheme=args.lb_scheme)
        if args.source:
            given["sources"] = [_source(s) for s in args.source]
    else:
        given.update(action=args.action, privileged=args.privileged)
        given["from"] = _selectors(args.from_, "--from")
        given["to"] = _selectors(args.to, "--to")
        for key in ("from", "to"):
            if given[key] is None and key not in spec:
                given[key] = [{}]
    spec.update({k: v for k, v in given.items() if v is not None})
    return spec


def _normalise(kind: Kind, doc: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in doc.items() if k not in ("status",)}
    body["kind"] = kind.kind
    try:
        return object_document(kind, kind.model.model_validate(body))
    except ValidationError as exc:
        name = doc.get("name", "?")
        raise UsageError(f"{kind.singular} {name}: {format_validation_error(exc)}") from None


def cmd_apply(client: AdminClient, args: argparse.Namespace) -> int:
    """Create or update every object of the file; check all of it before any change, and undo
    this run's writes if the gateway refuses one (see cli/apply.py)."""
    objects = check_documents(args.filename, read_documents(args.filename))
    steps = plan(client, objects)
    execute(client, steps)
    results = [
        {"kind": s.kind.singular, "name": s.wanted["name"], "result": s.action} for s in steps
    ]
    if args.output == "table":
        for r in results:
            print(f"{r['kind']}/{r['name']} {r['result']}")
    else:
        print(render("apply", results, args.output))
    return 0


def cmd_export(client: AdminClient, args: argparse.Namespace) -> int:
    """Every object, imports with their allocated port, as a file ``apply`` restores."""
    fmt = args.format or (args.output if args.output in ("json", "yaml") else "yaml")
    status = client.status()
    for bad in status.get("invalid", []):
        print(
            f"gwctl: warning: stored {bad['kind']} {bad['name']!r} is invalid and not exported: "
            f"{bad['error']}",
            file=sys.stderr,
        )
    docs = export_documents(client)
    text = render_export(docs, fmt, status["peer_name"])
    if args.filename and args.filename != "-":
        write_file(args.filename, text)
        print(f"{len(docs)} objects written to {args.filename}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_get(client: AdminClient, args: argparse.Namespace) -> int:
    if args.kind == "offers":
        if not args.peer:
            raise UsageError("get offers needs --peer NAME")
        print(render("offers", client.request("GET", f"/v1/peers/{args.peer}/offers"), args.output))
        return 0
    kinds = list(KINDS.values()) if args.kind == "all" else [_kind(args.kind)]
    if args.name and len(kinds) == 1:
        print(render(kinds[0].plural, [client.get(kinds[0].plural, args.name)], args.output, True))
        return 0
    if args.name:
        raise UsageError("a NAME needs a single kind")
    for i, kind in enumerate(kinds):
        if len(kinds) > 1 and args.output == "table":
            print(("\n" if i else "") + kind.plural.upper())
        print(render(kind.plural, client.list(kind.plural), args.output))
    return 0


def cmd_create(client: AdminClient, args: argparse.Namespace) -> int:
    if args.filename:
        docs = read_documents(args.filename)
        for doc in docs:
            kind = _kind(str(doc["kind"]))
            _normalise(kind, doc)
        for doc in docs:
            kind = _kind(str(doc["kind"]))
            obj = client.create(kind.plural, doc)
            print(f"{kind.singular}/{obj['name']} created")
        return 0
    if not args.kind or not args.name:
        raise UsageError("create needs KIND NAME (or -f FILE)")
    kind = _kind(args.kind)
    body = {"name": args.name, "labels": _labels(args.label) or {}}
    body["spec"] = spec_from_flags(kind, args, {})
    obj = client.create(kind.plural, body)
    print(
        render(kind.plural, [obj], args.output, True)
        if args.output != "table"
        else f"{kind.singular}/{obj['name']} created"
    )
    return 0


def cmd_update(client: AdminClient, args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    current = client.get(kind.plural, args.name)
    labels = _labels(args.label)
    body = {
        "name": args.name,
        "labels": current["labels"] if labels is None else labels,
        "spec": spec_from_flags(kind, args, current["spec"]),
    }
    obj = client.replace(kind.plural, args.name, body)
    print(
        render(kind.plural, [obj], args.output, True)
        if args.output != "table"
        else f"{kind.singular}/{obj['name']} updated"
    )
    return 0


def cmd_delete(client: AdminClient, args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    client.delete(kind.plural, args.name)
    print(f"{kind.singular}/{args.name} deleted")
    return 0


def cmd_status(client: AdminClient, args: argparse.Namespace) -> int:
    print(render("status", client.status(), args.output))
    return 0


def cmd_explain(client: AdminClient, args: argparse.Namespace) -> int:
    """Which policy decides, here and at the peer, for connections between us and the peer."""
    query = {"peer": args.peer, "export": args.export}
    if args.client_ip:
        query["client_ip"] = args.client_ip
    data = client.request("GET", f"/v1/explain?{urlencode(query)}")
    print(render("explain", data, args.output))
    return 0


def _object_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="peer | export | import | policy")
    parser.add_argument("name", nargs="?")
    parser.add_argument("--label", action="append", metavar="KEY=VALUE")
    peer = parser.add_argument_group("peer")
    peer.add_argument("--gateway", action="append", metavar="HOST:PORT")
    peer.add_argument(
        "--client-attributes",
        choices=["honor", "ignore", "default"],
        help="as exporter, use the client address this peer asserts (honor), not (ignore), or "
        "the default (honour peers of the fabric CA)",
    )
    peer.add_argument(
        "--trust-ca",
        metavar="FILE|none",
        help="PEM bundle of another party's CA: the only CA vouching for this peer (spec.trust); "
        "none: remove it (the fabric CA vouches again)",
    )
    peer.add_argument(
        "--dial",
        choices=["true", "false"],
        help="false: an outbound-only site; never dial it, use the reverse links it opens "
        "(needs no --gateway)",
    )
    exp = parser.add_argument_group("export / import")
    exp.add_argument("--host", help="export: target host")
    exp.add_argument("--port", type=int, help="export: target port; import: listen port")
    exp.add_argument("--allowed-peer", action="append", metavar="PEER")
    exp.add_argument("--bind", help="import: listen address")
    exp.add_argument("--source", action="append", metavar="PEER[/EXPORT]")
    exp.add_argument("--lb-scheme", choices=["round-robin", "random", "static"])
    pol = parser.add_argument_group("policy")
    pol.add_argument("--action", choices=["allow", "deny"])
    pol.add_argument("--privileged", action=argparse.BooleanOptionalAction, default=None)
    pol.add_argument("--from", dest="from_", action="append", metavar="SELECTOR")
    pol.add_argument("--to", action="append", metavar="SELECTOR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gwctl", description="ClusterLink gateway CLI")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="admin unix socket")
    parser.add_argument("--server", help="admin TCP listener, https://HOST:PORT")
    parser.add_argument("--cert", help="admin client certificate (with --server)")
    parser.add_argument("--key", help="admin client key (with --server)")
    parser.add_argument("--cacert", help="CA bundle that signed the admin listener's certificate")
    parser.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    parser.add_argument("--timeout", type=float, default=30.0)
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("get", help="list objects, or show one")
    get.add_argument("kind", help="peer | export | import | policy | all | offers")
    get.add_argument("name", nargs="?")
    get.add_argument("--peer", help="offers: the remote peer to ask")
    get.set_defaults(func=cmd_get)
    create = sub.add_parser("create", help="create an object from flags or a file")
    _object_flags(create)
    create.add_argument("-f", "--filename", help="YAML/JSON file of objects (- for stdin)")
    create.set_defaults(func=cmd_create)
    update = sub.add_parser("update", help="change the given fields of an object")
    _object_flags(update)
    update.set_defaults(func=cmd_update)
    delete = sub.add_parser("delete", help="delete an object")
    delete.add_argument("kind")
    delete.add_argument("name")
    delete.set_defaults(func=cmd_delete)
    apply = sub.add_parser("apply", help="create or update objects from a file (idempotent)")
    apply.add_argument("-f", "--filename", required=True, help="YAML/JSON file (- for stdin)")
    apply.set_defaults(func=cmd_apply)
    export = sub.add_parser(
        "export", help="write every object (imports with their allocated ports) for apply"
    )
    export.add_argument(
        "-o",
        "--output",
        dest="format",
        choices=["yaml", "json"],
        help="yaml (multi-document, the default) or json (a list)",
    )
    export.add_argument("-f", "--filename", help="write to FILE (atomically) instead of stdout")
    export.set_defaults(func=cmd_export)
    explain = sub.add_parser(
        "explain",
        help="which policy decides a connection with a peer for an export, here and there",
    )
    explain.add_argument("--peer", required=True, help="the remote peer")
    explain.add_argument("--export", required=True, help="the export (ours, or the peer's)")
    explain.add_argument("--client-ip", help="the client's address (for clientCIDRs)")
    explain.add_argument(
        "-o", "--output", choices=["table", "json", "yaml"], default=argparse.SUPPRESS
    )
    explain.set_defaults(func=cmd_explain)
    status = sub.add_parser("status", help="peers, imports and exports at a glance")
    status.set_defaults(func=cmd_status)
    grant.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = AdminClient(
        args.socket,
        server=args.server,
        cert=args.cert,
        key=args.key,
        cacert=args.cacert,
        timeout=args.timeout,
    )
    try:
        return int(args.func(client, args))
    except (UsageError, grant.GrantUsageError) as exc:
        print(f"gwctl: {exc}", file=sys.stderr)
        return 2
    except FileError as exc:  # bad input, as before: nothing was changed
        print(f"gwctl: {exc}", file=sys.stderr)
        return 2
    except ApplyError as exc:
        print(f"gwctl: {exc}", file=sys.stderr)
        if exc.undone:
            print(f"gwctl: rolled back: {', '.join(exc.undone)}", file=sys.stderr)
        for failure in exc.undo_failed:
            print(f"gwctl: could NOT roll back {failure}", file=sys.stderr)
        return 1
    except APIError as exc:
        field = exc.body.get("field") if isinstance(exc.body, dict) else None
        detail = f" (field {field})" if field and field not in exc.message else ""
        print(f"gwctl: error {exc.status}: {exc.message}{detail}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"gwctl: cannot reach the gateway at {client.target}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
