"""``gwctl export``: a gateway's objects as a file ``gwctl apply`` restores.

Every object (peers, exports, imports, policies, in apply order) with its name, labels and
spec, no status. An import whose port was allocated from the range (``spec.port: 0``) is
written with that allocated port, so that a restore on a rebuilt gateway listens where the
clients expect it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import yaml

from ..client import AdminClient
from ..model.objects import KINDS
from .apply import FileError


def export_documents(client: AdminClient) -> list[dict[str, Any]]:
    """``{kind, name, labels, spec}`` of every object, imports with their effective port."""
    docs = []
    for kind in KINDS.values():
        for obj in client.list(kind.plural):
            spec = dict(obj["spec"])
            if kind.plural == "imports" and not spec.get("port"):
                allocated = (obj.get("status") or {}).get("port")
                if allocated:
                    spec["port"] = int(allocated)
            docs.append(
                {"kind": kind.kind, "name": obj["name"], "labels": obj["labels"], "spec": spec}
            )
    return docs


def render_export(docs: list[dict[str, Any]], fmt: str, peer_name: str) -> str:
    """Multi-document YAML (with a comment saying what it is) or a JSON list."""
    if fmt == "json":
        return json.dumps(docs, indent=2) + "\n"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    head = (
        f"# gwctl export of gateway {peer_name} at {when}: {len(docs)} objects.\n"
        "# Restore with: gwctl apply -f THIS_FILE (import ports are the allocated ones).\n"
    )
    return head + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)


def write_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a crash leaves the old file or the new one)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FileError(f"{path}: cannot write: {exc.strerror or exc}") from None
