"""PostgreSQL access for the demo app and worker.

Configuration comes from DATABASE_URL, or from the POSTGRES_* variables that an accessory
and Kamal-style env files provide. Passwords often contain characters that mean something
in a URL ('@', ':', '/', '%'), so URLs are always built with every part percent-encoded and
parsed back with each part decoded; nothing here splits a URL by hand.

psycopg2 is imported lazily: the URL helpers are used (and unit-tested) where it is absent.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

DEFAULT_PORT = 5432
CONNECT_TIMEOUT = 3
"""Seconds: a status page must answer quickly even when the database is unreachable."""

SCHEMA_LOCK = 7_400_501
"""Advisory lock id: the app and the worker may create the tables at the same moment."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id         bigserial PRIMARY KEY,
    body       text NOT NULL,
    written_by text NOT NULL,
    version    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS jobs (
    id           text PRIMARY KEY,
    payload      text NOT NULL,
    result       text NOT NULL,
    processed_by text NOT NULL,
    version      text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
"""


def build_url(user: str, password: str, host: str, port: int | str, dbname: str) -> str:
    """A postgresql:// URL with every part percent-encoded (safe for any password)."""
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    netloc = f"{auth}@{host}" if auth else host
    return f"postgresql://{netloc}:{int(port)}/{quote(dbname, safe='')}"


def database_url(env: Mapping[str, str] | None = None) -> str:
    """DATABASE_URL if set, else a URL built from POSTGRES_HOST/PORT/DB/USER/PASSWORD."""
    env = os.environ if env is None else env
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"]
    user = env.get("POSTGRES_USER") or "postgres"
    return build_url(user, env.get("POSTGRES_PASSWORD", ""), env.get("POSTGRES_HOST") or "localhost",
                     env.get("POSTGRES_PORT") or DEFAULT_PORT, env.get("POSTGRES_DB") or user)


def connect_params(url: str) -> dict[str, Any]:
    """Keyword arguments for psycopg2.connect, each URL part decoded.

    Passing keywords (not the URL) means no second round of quoting rules can bite.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r}); use postgresql://...")
    params: dict[str, Any] = {
        "host": unquote(parts.hostname or "localhost"),
        "port": parts.port or DEFAULT_PORT,
        "dbname": unquote(parts.path.lstrip("/")) or unquote(parts.username or "postgres"),
        "connect_timeout": CONNECT_TIMEOUT,
    }
    if parts.username is not None:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    for key, value in parse_qsl(parts.query):
        params[key] = value
    return params


def describe(url: str) -> str:
    """``user@host:port/db``: the URL without its password, for logs and status pages."""
    p = connect_params(url)
    return f"{p.get('user', '')}@{p['host']}:{p['port']}/{p['dbname']}"


@contextmanager
def connect(url: str) -> Iterator[Any]:
    """A connection that commits on success and is always closed.

    One short-lived connection per use keeps the demo simple and makes it reconnect by
    itself after the database restarts (which the lab's tests do on purpose).
    """
    import psycopg2

    conn = psycopg2.connect(**connect_params(url))
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def open_connection(url: str) -> Any:
    """A connection in autocommit mode, for the caller to keep (and close)."""
    import psycopg2

    conn = psycopg2.connect(**connect_params(url))
    conn.autocommit = True
    return conn


class Pool:
    """Connections kept open between requests (up to ``keep`` idle ones), as real apps keep a
    pool: a new connection costs PostgreSQL a backend process and both sides SCRAM's key
    derivation, milliseconds of CPU each, on every request of a status page under load.

    ``run(fn)`` calls ``fn(conn)`` on an idle connection, or a new one. A kept connection that
    fails (the database restarted since) is closed and ``fn`` tried once more on a new one, so
    a restart costs no failed request; a new connection that fails raises. No lock is held
    while connecting: with the database unreachable, each request waits only its own timeout.
    """

    def __init__(self, url: str, keep: int = 4) -> None:
        self.url = url
        self.keep = keep
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def run(self, fn: Any) -> Any:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        kept = conn is not None
        while True:
            if conn is None:
                conn = open_connection(self.url)
            try:
                result = fn(conn)
            except Exception:
                _close(conn)
                if not kept:
                    raise
                conn, kept = None, False  # a stale connection: once more, on a new one
                continue
            with self._lock:
                if len(self._idle) < self.keep:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                _close(conn)
            return result


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        pass


def ensure_schema(conn: Any) -> None:
    """Create the tables if missing; serialised so app and worker can both call it."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        cur.execute(SCHEMA)


def add_note(conn: Any, body: str, written_by: str, version: str) -> dict[str, Any]:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO notes (body, written_by, version) VALUES (%s, %s, %s) "
                    "RETURNING id, created_at", (body, written_by, version))
        note_id, created = cur.fetchone()
    return {"id": note_id, "body": body, "written_by": written_by, "version": version,
            "created_at": created.isoformat()}


def list_notes(conn: Any, limit: int = 100) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute("SELECT id, body, written_by, version, created_at FROM notes "
                    "ORDER BY id DESC LIMIT %s", (limit,))
        rows = cur.fetchall()
    return [{"id": r[0], "body": r[1], "written_by": r[2], "version": r[3],
             "created_at": r[4].isoformat()} for r in rows]


def save_job(conn: Any, job: Mapping[str, str]) -> None:
    """Store a processed job; re-processing the same id overwrites (at-least-once queue)."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO jobs (id, payload, result, processed_by, version) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET result = EXCLUDED.result, "
            "processed_by = EXCLUDED.processed_by, version = EXCLUDED.version, processed_at = now()",
            (job["id"], job["payload"], job["result"], job["processed_by"], job["version"]))


def get_job(conn: Any, job_id: str) -> dict[str, Any] | None:
    with conn.cursor() as cur:
        cur.execute("SELECT id, payload, result, processed_by, version, processed_at FROM jobs "
                    "WHERE id = %s", (job_id,))
        row = cur.fetchone()
    if row is None:
        return None
    return {"id": row[0], "payload": row[1], "result": row[2], "processed_by": row[3],
            "version": row[4], "processed_at": row[5].isoformat()}
