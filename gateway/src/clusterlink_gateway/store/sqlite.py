"""Durable object store: one SQLite database in the state directory.

WAL journal with ``synchronous=FULL``: a write is on disk when ``put``/``delete`` returns, and a
``kill -9`` at any moment leaves the last committed state. All database work runs on one
dedicated thread so that fsync never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
) WITHOUT ROWID;
"""


class StoreError(Exception):
    """The store could not complete a write (disk full, I/O error, read-only)."""


@dataclass(frozen=True)
class Row:
    kind: str
    name: str
    body: Any  # parsed JSON, or the raw text when it is not valid JSON


class Store:
    """Key-value store of JSON documents keyed by (kind, name)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly  # a data-plane worker's view of the main process's store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        if self.readonly:
            db = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA busy_timeout=5000")
            self._db = db
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old_umask = os.umask(0o077)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        finally:
            os.umask(old_umask)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def load(self) -> list[Row]:
        """Every stored row; a body that is not JSON is returned as its raw text."""
        return await self._run(self._load)

    def _load(self) -> list[Row]:
        assert self._db is not None
        rows = []
        for kind, name, body in self._db.execute("SELECT kind, name, body FROM objects"):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body
            rows.append(Row(kind, name, parsed))
        return rows

    async def put(self, kind: str, name: str, body: dict[str, Any]) -> None:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        await self._write(
            "INSERT INTO objects (kind, name, body) VALUES (?, ?, ?) "
            "ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
            (kind, name, text),
        )

    async def delete(self, kind: str, name: str) -> None:
        await self._write("DELETE FROM objects WHERE kind = ? AND name = ?", (kind, name))

    async def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        def run() -> None:
            assert self._db is not None
            try:
                self._db.execute(sql, args)
            except sqlite3.Error as exc:
                raise StoreError(f"state store write failed: {exc}") from exc

        await self._run(run)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store thread (other tables: ``store.grants``);
        an sqlite3 error becomes StoreError."""

        def run() -> T:
            assert self._db is not None
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreError(f"state store failed: {exc}") from exc

        return await self._run(run)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
