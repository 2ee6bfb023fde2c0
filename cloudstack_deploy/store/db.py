"""The history store's connection: SQLite or PostgreSQL, the schema brought up to date first.

The schema is versioned by yoyo-migrations (plain SQL files in ``migrations/``, applied under
yoyo's lock so two processes opening a fresh store never both apply it; a database lists
what it has in yoyo's ``_yoyo_migration`` table). A store that is already current is opened
without loading yoyo at all: the check is one query. SQL is written once with ``:name``
parameters; psycopg gets them as ``%(name)s``.

Every failure to reach or use the store is an `OperationFailed` naming the store by its
masked URL; the caller decides whether that is a warning (deploys) or an error (`history`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import OperationFailed
from ..log import get_logger, redact
from .url import CONNECT_TIMEOUT, StoreURL

log = get_logger("store")
T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_TABLE = "_yoyo_migration"
BUSY_TIMEOUT_MS = 15000
RETRY_LOCKED_FOR = 60.0   # seconds: how long opening a SQLite store retries "database is locked"
_PARAM = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def migration_ids() -> list[str]:
    return sorted(p.name.removesuffix(".sql") for p in MIGRATIONS.glob("*.sql")
                  if not p.name.endswith(".rollback.sql"))


def _locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


_WAITING_BACKEND: Any = None


def _waiting_sqlite_backend() -> Any:
    """yoyo's SQLite backend whose every connection has the store's busy timeout."""
    global _WAITING_BACKEND
    if _WAITING_BACKEND is None:
        from yoyo.backends.core.sqlite3 import SQLiteBackend

        class WaitingSQLiteBackend(SQLiteBackend):  # type: ignore[misc]
            def connect(self, dburi: Any) -> Any:
                conn = super().connect(dburi)
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                return conn

        _WAITING_BACKEND = WaitingSQLiteBackend
    return _WAITING_BACKEND


def _parse_yoyo_uri(uri: str) -> Any:
    from yoyo.connections import parse_uri

    return parse_uri(uri)


def _problem(url: StoreURL, exc: BaseException) -> OperationFailed:
    detail = redact((str(exc).strip().splitlines() or [type(exc).__name__])[0])
    return OperationFailed(f"history store {url.display} cannot be reached: {detail}",
                           hint="check CSDEPLOY_STATE_URL (server up, credentials, database exists)")


class Store:
    """One connection to the history store; calls are serialised (threads may share it)."""

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn: Any = None

    # ---- opening ---------------------------------------------------------------------------
    def open(self) -> Store:
        try:
            self._retrying(self._open)
        except OperationFailed:
            self.close()
            raise
        except Exception as exc:  # driver errors (sqlite3.Error, psycopg.Error, yoyo's) name no store
            self.close()
            raise _problem(self.url, exc) from None
        return self

    def _open(self) -> None:
        self.close()
        self._conn = self._connect()
        if self._pending():
            self._migrate()

    def _retrying(self, step: Callable[[], T]) -> T:
        """``step()``, again after a pause while SQLite says the database is locked or busy
        (a writer in another process held the lock past the busy timeout, or a snapshot went
        stale), for up to RETRY_LOCKED_FOR seconds. PostgreSQL waits for locks by itself."""
        if self.url.kind != "sqlite":
            return step()
        deadline = time.monotonic() + RETRY_LOCKED_FOR
        pause = 0.05
        while True:
            try:
                return step()
            except sqlite3.OperationalError as exc:
                if not _locked(exc) or time.monotonic() > deadline:
                    raise
                log.debug("store locked, retrying", store=self.url.display, error=str(exc))
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _connect(self) -> Any:
        if self.url.kind == "sqlite":
            assert self.url.path is not None
            path = self.url.path
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # private from its first byte
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            conn.execute("PRAGMA foreign_keys = ON")
            return conn
        import psycopg

        return psycopg.connect(self.url.url, connect_timeout=CONNECT_TIMEOUT, autocommit=True)

    def _pending(self) -> list[str]:
        """Migration ids this database lacks (all of them when yoyo's table is absent)."""
        try:
            rows = self._query(f"SELECT migration_id FROM {MIGRATION_TABLE}")
        except Exception:
            if self.url.kind == "postgresql":
                self._conn.rollback()
            return migration_ids()
        have = {r["migration_id"] for r in rows}
        return [m for m in migration_ids() if m not in have]

    def _migrate(self) -> None:
        from yoyo import get_backend, read_migrations

        if self.url.kind == "sqlite":
            # yoyo's own SQLite connections (it opens more than one) would give up after
            # sqlite3's default 5 s; they wait as long as the store's (get_backend, spelled out)
            backend = _waiting_sqlite_backend()(_parse_yoyo_uri(self.url.yoyo_uri), MIGRATION_TABLE)
        else:
            backend = get_backend(self.url.yoyo_uri, migration_table=MIGRATION_TABLE)
        try:
            if self.url.kind == "sqlite":
                backend.init_database()
            migrations = read_migrations(str(MIGRATIONS))
            with backend.lock(timeout=60):
                todo = backend.to_apply(migrations)
                if todo:
                    log.info("store migrate", store=self.url.display, apply=[m.id for m in todo])
                    backend.apply_migrations(todo)
        finally:
            backend.connection.close()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self.open() if self._conn is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- statements --------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self.url.kind == "sqlite" else _PARAM.sub(r"%(\1)s", sql)

    def _query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        cur = self._conn.execute(self._sql(sql), dict(params or {}))
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts."""
        with self._lock:
            try:
                return self._retrying(lambda: self._query(sql, params))
            except Exception as exc:
                raise self._failed(exc) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction: statements run through the yielded ``execute(sql, params)``."""
        with self._lock:
            try:
                if self.url.kind == "sqlite":
                    # take the write lock now, not halfway (nothing ran yet: safe to retry)
                    self._retrying(lambda: self._conn.execute("BEGIN IMMEDIATE"))
                    try:
                        yield self._execute
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
                else:
                    with self._conn.transaction():
                        yield self._execute
            except OperationFailed:
                raise
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc) from None
            except Exception as exc:
                if type(exc).__module__.startswith("psycopg"):
                    raise self._failed(exc) from None
                raise

    def _execute(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        return self._conn.execute(self._sql(sql), dict(params or {})).rowcount

    def execute_many(self, statements: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        with self.transaction() as execute:
            for sql, params in statements:
                execute(sql, params)

    def _failed(self, exc: BaseException) -> OperationFailed:
        detail = redact((str(exc).strip().splitlines() or [type(exc).__name__])[0])
        return OperationFailed(f"history store {self.url.display}: {detail}",
                               hint="check CSDEPLOY_STATE_URL and the database server")
