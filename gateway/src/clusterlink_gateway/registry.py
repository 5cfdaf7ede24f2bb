"""The gateway's desired state: validated objects, persisted, observed by the data plane.

Every mutation is validated, written to the store, applied in memory and handed to the
observers (the data plane) before it returns, under one lock so that the store, memory and the
data plane always agree on the order of changes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .model.errors import format_validation_error, validation_details
from .model.objects import KINDS, Import, Kind, _Envelope, object_document
from .store.sqlite import Store

log = logging.getLogger("clusterlink.registry")


class RegistryError(Exception):
    """A request the registry refuses; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None, details: list | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or ([{"field": field, "message": message}] if field else [])


class NotFound(RegistryError):
    status = 404


class Conflict(RegistryError):
    status = 409


class Invalid(RegistryError):
    status = 422


@dataclass
class Entry:
    """One stored object: its validated model plus gateway-owned bookkeeping."""

    kind: Kind
    obj: _Envelope
    internal: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.obj.name

    def document(self) -> dict[str, Any]:
        return object_document(self.kind, self.obj)

    def stored(self) -> dict[str, Any]:
        return {"object": self.document(), "internal": self.internal}


Observer = Callable[[Kind, str, Entry | None, Entry | None], Awaitable[None]]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
StatusProvider = Callable[[Entry], dict[str, Any]]
SummaryProvider = Callable[[], Any]


class Registry:
    """Objects by kind and name, with their persistence and change notification."""

    def __init__(
        self,
        store: Store,
        *,
        import_bind: str,
        port_range: tuple[int, int],
        address_range: IPNetwork | None = None,
    ) -> None:
        self.store = store
        self.import_bind = import_bind
        self.port_range = port_range
        self.address_range = address_range
        self.objects: dict[str, dict[str, Entry]] = {plural: {} for plural in KINDS}
        self.invalid: dict[tuple[str, str], str] = {}
        self.observers: list[Observer] = []
        self.status_providers: dict[str, StatusProvider] = {}
        # extra top-level ``/v1/status`` fields (e.g. "certificates"), computed per request
        self.summary_providers: dict[str, SummaryProvider] = {}
        self._lock = asyncio.Lock()

    # -- loading -----------------------------------------------------------------------------

    async def load(self) -> None:
        """Read every stored object; an invalid one is recorded, never fatal."""
        rows = await self.store.load()
        order = list(KINDS)
        rows.sort(key=lambda r: (order.index(r.kind) if r.kind in KINDS else len(order), r.name))
        for row in rows:
            try:
                entry = self._entry_from_row(row.kind, row.name, row.body)
            except RegistryError as exc:
                self.invalid[(row.kind, row.name)] = exc.message
                log.error(
                    "invalid stored object ignored",
                    extra={"kind": row.kind, "object": row.name, "error": exc.message},
                )
                continue
            self.objects[row.kind][row.name] = entry
            await self._notify(entry.kind, entry.name, None, entry)

    async def sync(self) -> None:
        """Catch up with the store, which another process writes (a data-plane worker's view):
        changed, new and removed objects are applied and handed to the observers."""
        rows = await self.store.load()
        order = list(KINDS)
        rows.sort(key=lambda r: (order.index(r.kind) if r.kind in KINDS else len(order), r.name))
        seen: set[tuple[str, str]] = set()
        for row in rows:
            seen.add((row.kind, row.name))
            old = self.objects.get(row.kind, {}).get(row.name)
            if old is not None and row.body == old.stored():
                continue
            try:
                entry = self._entry_from_row(row.kind, row.name, row.body)
            except RegistryError as exc:
                self.invalid[(row.kind, row.name)] = exc.message
                continue
            self.objects[row.kind][row.name] = entry
            await self._notify(entry.kind, entry.name, old, entry)
        for plural in reversed(order):
            for name in [n for n in self.objects[plural] if (plural, n) not in seen]:
                old = self.objects[plural].pop(name)
                await self._notify(old.kind, name, old, None)

    def _entry_from_row(self, plural: str, name: str, body: Any) -> Entry:
        kind = KINDS.get(plural)
        if kind is None:
            raise RegistryError(f"unknown kind {plural!r}")
        if not isinstance(body, dict) or not isinstance(body.get("object"), dict):
            raise RegistryError("stored record is not an object document")
        entry = Entry(kind, self._validate(kind, body["object"]), dict(body.get("internal") or {}))
        if entry.name != name:
            raise RegistryError(f"stored under name {name!r} but names itself {entry.name!r}")
        return entry

    # -- reads -------------------------------------------------------------------------------

    def list(self, kind: Kind) -> list[Entry]:
        return [self.objects[kind.plural][n] for n in sorted(self.objects[kind.plural])]

    def get(self, kind: Kind, name: str) -> Entry:
        entry = self.objects[kind.plural].get(name)
        if entry is None:
            raise NotFound(f"{kind.singular} {name!r} not found")
        return entry

    def document(self, entry: Entry) -> dict[str, Any]:
        """The API form of an object: kind, name, labels, spec and live status."""
        provider = self.status_providers.get(entry.kind.plural, self._default_status)
        return {"kind": entry.kind.kind, **entry.document(), "status": provider(entry)}

    @staticmethod
    def _default_status(entry: Entry) -> dict[str, Any]:
        return entry.kind.status_model().model_dump()

    def effective_port(self, entry: Entry) -> int:
        assert isinstance(entry.obj, Import)
        return entry.obj.spec.port or int(entry.internal.get("port", 0))

    def effective_bind(self, entry: Entry) -> str:
        assert isinstance(entry.obj, Import)
        bind = entry.obj.spec.bind
        if bind == "auto":
            return str(entry.internal.get("address") or self.import_bind)
        return bind or self.import_bind

    # -- writes ------------------------------------------------------------------------------

    async def create(self, kind: Kind, data: Any) -> Entry:
        obj = self._validate(kind, data)
        async with self._lock:
            if obj.name in self.objects[kind.plural] or (kind.plural, obj.name) in self.invalid:
                raise Conflict(f"{kind.singular} {obj.name!r} already exists", field="name")
            entry = Entry(kind, obj)
            self._prepare(entry, None)
            await self.store.put(kind.plural, entry.name, entry.stored())
            self.objects[kind.plural][entry.name] = entry
            await self._notify(kind, entry.name, None, entry)
            return entry

    async def replace(self, kind: Kind, name: str, data: Any) -> Entry:
        if isinstance(data, dict) and "name" not in data:
            data = {**data, "name": name}
        obj = self._validate(kind, data)
        if obj.name != name:
            raise Invalid(f"name {obj.name!r} does not match the URL ({name!r})", field="name")
        async with self._lock:
            old = self.objects[kind.plural].get(name)
            if old is None and (kind.plural, name) not in self.invalid:
                raise NotFound(f"{kind.singular} {name!r} not found")
            entry = Entry(kind, obj, dict(old.internal) if old else {})
            self._prepare(entry, old)
            await self.store.put(kind.plural, name, entry.stored())
            self.invalid.pop((kind.plural, name), None)
            self.objects[kind.plural][name] = entry
            await self._notify(kind, name, old, entry)
            return entry

    async def delete(self, kind: Kind, name: str) -> None:
        async with self._lock:
            old = self.objects[kind.plural].get(name)
            if old is None and (kind.plural, name) not in self.invalid:
                raise NotFound(f"{kind.singular} {name!r} not found")
            await self.store.delete(kind.plural, name)
            self.invalid.pop((kind.plural, name), None)
            self.objects[kind.plural].pop(name, None)
            if old is not None:
                await self._notify(kind, name, old, None)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _validate(kind: Kind, data: Any) -> _Envelope:
        if not isinstance(data, dict):
            raise RegistryError(f"a {kind.kind} must be a JSON object", field="(body)")
        declared = data.get("kind")
        if declared is not None and declared != kind.kind:
            raise Invalid(
                f"kind {declared!r} does not belong under /v1/{kind.plural}", field="kind"
            )
        try:
            return kind.model.model_validate(data)
        except ValidationError as exc:
            details = validation_details(exc)
            raise Invalid(
                format_validation_error(exc), field=details[0]["field"], details=details
            ) from None

    def _prepare(self, entry: Entry, old: Entry | None) -> None:
        """Gateway-owned bookkeeping before a write: the allocated port of an import."""
        if not isinstance(entry.obj, Import):
            return
        if entry.obj.spec.bind == "auto":
            if not entry.internal.get("address"):
                entry.internal["address"] = self._allocate_address(entry.name)
        else:
            entry.internal.pop("address", None)
        self._check_bind(entry)
        if entry.obj.spec.port:
            entry.internal.pop("port", None)
        elif not entry.internal.get("port"):
            kept = self._kept_port(entry, old)
            entry.internal["port"] = kept or self._allocate_port(entry, exclude=entry.name)

    def _kept_port(self, entry: Entry, old: Entry | None) -> int:
        """The port an import pinned until now, when it turns to ``port: 0``: kept if it is in
        the range and the listen address stays, so that the import does not move (a restored
        backup pins the allocated ports; the inventory then says ``port: 0`` again). 0 if not."""
        if old is None or not isinstance(old.obj, Import) or not old.obj.spec.port:
            return 0
        port = old.obj.spec.port
        first, last = self.port_range
        if not first <= port <= last or self.effective_bind(old) != self.effective_bind(entry):
            return 0
        others = self.objects["imports"]
        if any(self.effective_port(e) == port for n, e in others.items() if n != entry.name):
            return 0
        return port

    def _check_bind(self, entry: Entry) -> None:
        """An import's listen address must be one this host has (422, not a 409 later)."""
        assert isinstance(entry.obj, Import)
        address = self.effective_bind(entry)
        problem = unusable_address(address)
        if problem is None:
            return
        source = {
            None: " (the default from imports.bind in gateway.yaml)",
            "auto": " (allocated from imports.address_range in gateway.yaml)",
        }.get(entry.obj.spec.bind, "")
        raise Invalid(f"cannot listen on {address}{source}: {problem}", field="spec.bind")

    def _allocate_address(self, name: str) -> str:
        """A listen address of its own for an import with ``bind: auto``: the first address of
        ``imports.address_range`` that no other import listens on (kept in the store until the
        import is deleted or its bind changes)."""
        network = self.address_range
        if network is None:
            raise Invalid(
                "bind: auto needs imports.address_range in gateway.yaml (e.g. 127.77.0.0/16)",
                field="spec.bind",
            )
        used = {
            ipaddress.ip_address(self.effective_bind(e))
            for n, e in self.objects["imports"].items()
            if n != name
        }
        hosts = network.hosts() if network.num_addresses > 2 else iter(network)
        for address in hosts:
            if address not in used:
                return str(address)
        raise Conflict(
            f"no free address left in imports.address_range {network}", field="spec.bind"
        )

    def _allocate_port(self, entry: Entry, exclude: str) -> int:
        used = {self.effective_port(e) for n, e in self.objects["imports"].items() if n != exclude}
        bind = self.effective_bind(entry)
        first, last = self.port_range
        for port in range(first, last + 1):
            if port not in used and _bindable(bind, port):
                return port
        raise Conflict(
            f"no free port left in the import port range {first}-{last}", field="spec.port"
        )

    async def _notify(self, kind: Kind, name: str, old: Entry | None, new: Entry | None) -> None:
        for observer in self.observers:
            await observer(kind, name, old, new)

    def summary(self) -> dict[str, Any]:
        """The ``/v1/status`` body without the daemon-level fields."""
        out: dict[str, Any] = {}
        for plural, kind in KINDS.items():
            out[plural] = [{"name": e.name, **self.document(e)["status"]} for e in self.list(kind)]
        out["invalid"] = [
            {"kind": k, "name": n, "error": err} for (k, n), err in sorted(self.invalid.items())
        ]
        for key, provider in self.summary_providers.items():
            out[key] = provider()
        return out


def unusable_address(address: str) -> str | None:
    """Why nothing can listen on ``address`` on this host (not one of its addresses), or
    None. A port in use is not this function's business."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return "not an address of this host"
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return None
            return exc.strerror or type(exc).__name__
    return None


def _bindable(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True
