"""The granting side's peering-grant records, in the ``grants`` table of the state store.

One row per grant: its id and the JSON of a ``peering.grants.GrantRecord`` (a hash of the
secret, never the secret). Kept across restarts; written with the store's durability.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3

from ..peering.grants import GrantRecord
from .sqlite import Store


def _record(text: str) -> GrantRecord:
    return GrantRecord(**json.loads(text))


class GrantTable:
    """CRUD over the ``grants`` table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def put(self, record: GrantRecord) -> None:
        text = json.dumps(dataclasses.asdict(record), sort_keys=True, separators=(",", ":"))

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO grants (id, body) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (record.id, text),
            )

        await self.store.call(run)

    async def get(self, grant_id: str) -> GrantRecord | None:
        def run(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT body FROM grants WHERE id = ?", (grant_id,)).fetchone()
            return row[0] if row else None

        text = await self.store.call(run)
        return _record(text) if text is not None else None

    async def list(self) -> list[GrantRecord]:
        def run(db: sqlite3.Connection) -> list[str]:
            return [r[0] for r in db.execute("SELECT body FROM grants ORDER BY id")]

        return [_record(t) for t in await self.store.call(run)]
