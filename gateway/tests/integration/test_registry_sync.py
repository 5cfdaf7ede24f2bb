"""A worker's registry follows the main process's store (read-only) with ``Registry.sync``."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterlink_gateway.model.objects import KINDS, Kind
from clusterlink_gateway.registry import Entry, Registry
from clusterlink_gateway.store.sqlite import Store

pytestmark = pytest.mark.asyncio

IMPORT = {"name": "db", "spec": {"port": 15432, "sources": [{"peer": "cl1"}]}}
POLICY = {"name": "p", "spec": {"action": "allow", "from": [{}], "to": [{}]}}


async def test_sync_applies_new_changed_and_removed_objects(tmp_path: Path) -> None:
    main = Registry(Store(tmp_path / "state.db"), import_bind="127.0.0.1", port_range=(0, 0))
    await main.store.open()
    await main.create(KINDS["policies"], POLICY)
    worker = Registry(
        Store(tmp_path / "state.db", readonly=True), import_bind="127.0.0.1", port_range=(0, 0)
    )
    await worker.store.open()
    seen: list[tuple[str, str, bool, bool]] = []

    async def observe(kind: Kind, name: str, old: Entry | None, new: Entry | None) -> None:
        seen.append((kind.plural, name, old is not None, new is not None))

    worker.observers.append(observe)
    try:
        await worker.load()
        assert seen == [("policies", "p", False, True)]
        await main.create(KINDS["imports"], IMPORT)
        await main.replace(KINDS["policies"], "p", {**POLICY, "labels": {"v": "2"}})
        seen.clear()
        await worker.sync()
        assert sorted(seen) == [("imports", "db", False, True), ("policies", "p", True, True)]
        assert worker.objects["policies"]["p"].obj.labels == {"v": "2"}
        seen.clear()
        await worker.sync()  # nothing changed: nothing is applied again
        assert seen == []
        await main.delete(KINDS["imports"], "db")
        await worker.sync()
        assert seen == [("imports", "db", True, False)]
        assert "db" not in worker.objects["imports"]
        with pytest.raises(Exception, match="readonly"):
            await worker.store.put("imports", "x", {})
    finally:
        await worker.store.close()
        await main.store.close()
