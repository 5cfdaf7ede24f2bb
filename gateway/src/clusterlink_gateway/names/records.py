"""What the import names resolve to, from the registry, and their hosts-file form."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..model.objects import KINDS
from ..registry import Registry
from .answer import Record


def import_records(registry: Registry) -> dict[str, Record]:
    """Every import by name: its effective listen address (the wildcard as loopback) and port."""
    out: dict[str, Record] = {}
    for entry in registry.list(KINDS["imports"]):
        port = registry.effective_port(entry)
        if port:
            out[entry.name] = Record.for_listener(registry.effective_bind(entry), port)
    return out


def hosts_lines(zone: str, records: dict[str, Record]) -> str:
    """``/etc/hosts`` lines for the imports, sorted by name: ``<address> <import>.<zone>``."""
    zone = zone.rstrip(".").lower()
    return "".join(
        f"{record.address}\t{name.lower()}.{zone}\n" for name, record in sorted(records.items())
    )


def write_hosts_file(path: Path, text: str) -> bool:
    """Replace ``path`` atomically with ``text`` (mode 0644) unless it already holds it."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True
