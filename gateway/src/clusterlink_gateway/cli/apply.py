"""``gwctl apply``: read a file of objects, check all of it, then create or update in order.

Nothing is written until every document is valid (each problem names the document, the
object and the field). Objects are applied peers, exports, imports, policies (references
first). If the gateway refuses a write part-way (e.g. no free import port, store full), the
writes already made by this run are undone in reverse order (created objects deleted, updated
ones put back) and the error names the object; an undo that itself fails is reported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..client import AdminClient, APIError
from ..model.errors import validation_details
from ..model.objects import KINDS, Kind, kind_for, object_document


class FileError(Exception):
    """A file cannot be read, applied as written, or written; nothing was changed."""


class ApplyError(Exception):
    """The gateway refused a write; ``undone`` lists what was rolled back."""

    def __init__(self, message: str, undone: list[str], undo_failed: list[str]) -> None:
        super().__init__(message)
        self.undone = undone
        self.undo_failed = undo_failed


@dataclass
class Step:
    kind: Kind
    wanted: dict[str, Any]  # name, labels, spec
    action: str  # created | updated | unchanged
    previous: dict[str, Any] | None = None  # name, labels, spec before an update

    @property
    def ref(self) -> str:
        return f"{self.kind.singular}/{self.wanted['name']}"


def read_documents(path: str) -> list[dict[str, Any]]:
    """The documents of a YAML (multi-document) or JSON file; lists are flattened."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    docs: list[Any] = []
    try:
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            docs.extend(doc if isinstance(doc, list) else [doc])
    except yaml.YAMLError as exc:
        raise FileError(f"{path}: not YAML/JSON: {exc}") from None
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or "kind" not in doc:
            raise FileError(f"{path}: document {i + 1} is not an object with a 'kind'")
    return docs


def _normalise(kind: Kind, doc: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in doc.items() if k != "status"}
    body["kind"] = kind.kind
    return object_document(kind, kind.model.model_validate(body))


def check_documents(path: str, docs: list[dict[str, Any]]) -> list[tuple[Kind, dict[str, Any]]]:
    """Validate every document (all problems at once), refuse duplicates and two imports on
    one port; the objects in apply order."""
    problems: list[str] = []
    out: list[tuple[Kind, dict[str, Any]]] = []
    seen: dict[tuple[str, str], int] = {}
    ports: dict[tuple[Any, int], str] = {}
    for i, doc in enumerate(docs, 1):
        where = f"{path}: document {i}"
        try:
            kind = kind_for(str(doc["kind"]))
        except KeyError:
            kinds = ", ".join(k.kind for k in KINDS.values())
            problems.append(f"{where}: kind: unknown kind {doc['kind']!r}; expected one of {kinds}")
            continue
        ref = f"{kind.singular}/{doc.get('name', '?')}"
        try:
            wanted = _normalise(kind, doc)
        except ValidationError as exc:
            problems += [
                f"{where} ({ref}): {d['field']}: {d['message']}" for d in validation_details(exc)
            ]
            continue
        key = (kind.plural, wanted["name"])
        if key in seen:
            problems.append(f"{where} ({ref}): name: also in document {seen[key]}")
            continue
        seen[key] = i
        port = wanted["spec"].get("port") if kind.plural == "imports" else None
        if port:
            slot = (wanted["spec"].get("bind"), port)
            if slot in ports:
                problems.append(f"{where} ({ref}): spec.port: {port} is also {ports[slot]}'s")
            ports[slot] = ref
        out.append((kind, wanted))
    if problems:
        raise FileError("nothing applied:\n  " + "\n  ".join(problems))
    order = list(KINDS)
    out.sort(key=lambda kw: order.index(kw[0].plural))
    return out


def _same(kind: Kind, current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether ``current`` (an API object) already is ``wanted``. An import whose port was
    allocated (``spec.port: 0``) equals a wanted one pinning that allocated port: an export
    applied back to its own gateway changes nothing."""
    existing = {k: current[k] for k in ("name", "labels", "spec")}
    if existing == wanted:
        return True
    if kind.plural != "imports" or existing["spec"].get("port"):
        return False
    allocated = (current.get("status") or {}).get("port")
    if not allocated or wanted["spec"].get("port") != allocated:
        return False
    return existing == {**wanted, "spec": {**wanted["spec"], "port": 0}}


def plan(client: AdminClient, objects: list[tuple[Kind, dict[str, Any]]]) -> list[Step]:
    """What apply will do to each object (reads only)."""
    steps = []
    for kind, wanted in objects:
        try:
            current = client.get(kind.plural, wanted["name"])
        except APIError as exc:
            if exc.status != 404:
                raise
            steps.append(Step(kind, wanted, "created"))
            continue
        if _same(kind, current, wanted):
            steps.append(Step(kind, wanted, "unchanged"))
        else:
            previous = {k: current[k] for k in ("name", "labels", "spec")}
            steps.append(Step(kind, wanted, "updated", previous))
    return steps


def execute(client: AdminClient, steps: list[Step]) -> None:
    """Make the writes in order; on a refusal undo the ones made and raise ApplyError."""
    done: list[Step] = []
    for step in steps:
        try:
            if step.action == "created":
                client.create(step.kind.plural, step.wanted)
            elif step.action == "updated":
                client.replace(step.kind.plural, step.wanted["name"], step.wanted)
            else:
                continue
        except APIError as exc:
            undone, failed = _undo(client, done)
            field = exc.body.get("field") if isinstance(exc.body, dict) else None
            detail = f" (field {field})" if field and field not in exc.message else ""
            raise ApplyError(
                f"{step.ref}: error {exc.status}: {exc.message}{detail}", undone, failed
            ) from None
        done.append(step)


def _undo(client: AdminClient, done: list[Step]) -> tuple[list[str], list[str]]:
    undone: list[str] = []
    failed: list[str] = []
    for step in reversed(done):
        try:
            if step.action == "created":
                client.delete(step.kind.plural, step.wanted["name"])
                undone.append(f"{step.ref} deleted")
            else:
                assert step.previous is not None
                client.replace(step.kind.plural, step.wanted["name"], step.previous)
                undone.append(f"{step.ref} restored")
        except (APIError, OSError) as exc:
            failed.append(f"{step.ref}: {exc}")
    return undone, failed
