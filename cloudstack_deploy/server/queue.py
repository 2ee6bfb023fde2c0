"""The shared job queue: a ``jobs`` table in the history store.

Several `csdeploy serve` processes (on one machine with SQLite, on several with PostgreSQL)
claim jobs from it. A claim is one transaction: on PostgreSQL the oldest queued job is locked
with ``FOR UPDATE SKIP LOCKED`` (two workers never wait on, or take, the same row); on SQLite
the transaction holds the database's write lock. The partial unique index
``jobs_one_running_per_env`` makes the database itself refuse a second running job in one
environment, so two workers racing for two jobs of one environment cannot both win.

A running job carries its worker's pid, host and a heartbeat. Any worker marks a running job
``interrupted`` once its heartbeat is older than the bound, or at once when its process is
gone from this machine; that frees the environment for the next job.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import OperationFailed
from ..store.db import Store
from ..store.records import now_text, process_gone

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINISHED = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
KINDS = ("create", "deploy", "rollback", "teardown", "backup")   # backup: queued by the schedule (schedule.py)
TEST_KINDS = ("sleep",)   # only when the server runs with CSDEPLOY_SERVER_TEST_JOBS=1 (tests)


@dataclass
class Job:
    id: str
    kind: str
    env: str
    params: dict[str, Any]
    status: str
    requested_by: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    worker_pid: int | None = None
    worker_host: str | None = None
    heartbeat_at: str | None = None
    cancel_requested: bool = False
    error: str | None = None
    result: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        row = dict(row)
        row["params"] = json.loads(row.get("params") or "{}")
        row["result"] = json.loads(row["result"]) if row.get("result") else None
        row["cancel_requested"] = bool(row.get("cancel_requested"))
        return cls(**{k: v for k, v in row.items() if k in cls.__dataclass_fields__})

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def enqueue(store: Store, *, kind: str, env: str, params: dict[str, Any], by: str) -> Job:
    job = Job(id=str(uuid.uuid4()), kind=kind, env=env, params=params, status="queued", requested_by=by,
              created_at=now_text())
    with store.transaction() as execute:
        execute("INSERT INTO jobs (id, kind, env, params, status, requested_by, created_at) "
                "VALUES (:id, :kind, :env, :params, 'queued', :by, :at)",
                {"id": job.id, "kind": kind, "env": env, "params": json.dumps(params, sort_keys=True), "by": by,
                 "at": job.created_at})
    return job


_NEXT = ("SELECT id FROM jobs WHERE status = 'queued' AND kind IN ({kinds}) "
         "AND env NOT IN (SELECT env FROM jobs WHERE status = 'running') ORDER BY created_at, id LIMIT 1")


def claim(store: Store, kinds: tuple[str, ...], *, host: str | None = None, pid: int | None = None) -> Job | None:
    """The oldest queued job (of ``kinds``) whose environment runs nothing, now ``running`` for
    this worker; None when there is none (or another worker won the race for it)."""
    names = {f"k{i}": k for i, k in enumerate(kinds)}
    select = _NEXT.format(kinds=", ".join(f":{k}" for k in names))
    if store.url.kind == "postgresql":
        select += " FOR UPDATE SKIP LOCKED"
    now = now_text()
    try:
        with store.transaction() as execute:
            found = _rows(store, execute, select, names)
            if not found:
                return None
            job_id = found[0]["id"]
            execute("UPDATE jobs SET status = 'running', started_at = :at, heartbeat_at = :at, "
                    "worker_pid = :pid, worker_host = :host WHERE id = :id AND status = 'queued'",
                    {"at": now, "pid": pid or os.getpid(), "host": host or socket.gethostname(), "id": job_id})
    except OperationFailed as exc:
        if "unique" in str(exc).lower():  # another worker started a job of this env first
            return None
        raise
    return get(store, job_id)


def _rows(store: Store, execute: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows read inside a transaction (``execute`` returns a rowcount only)."""
    cur = store._conn.execute(store._sql(sql), params)  # noqa: SLF001 - the transaction's own connection
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def get(store: Store, job_id: str) -> Job | None:
    rows = store.query("SELECT * FROM jobs WHERE id = :id", {"id": job_id})
    return Job.from_row(rows[0]) if rows else None


def jobs(store: Store, *, env: str | None = None, status: str | None = None, kind: str | None = None,
         limit: int = 100) -> list[Job]:
    clauses, params = [], {"limit": limit}
    for column, value in (("env", env), ("status", status), ("kind", kind)):
        if value:
            clauses.append(f"{column} = :{column}")
            params[column] = value
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = store.query(f"SELECT * FROM jobs{where} ORDER BY created_at DESC, id LIMIT :limit", params)
    return [Job.from_row(r) for r in rows]


def heartbeat(store: Store, job_ids: list[str]) -> set[str]:
    """Refresh the heartbeat of this worker's running jobs; the ids whose cancel was asked."""
    if not job_ids:
        return set()
    ids = {f"j{i}": v for i, v in enumerate(job_ids)}
    inside = ", ".join(f":{k}" for k in ids)
    with store.transaction() as execute:
        execute(f"UPDATE jobs SET heartbeat_at = :at WHERE status = 'running' AND id IN ({inside})",
                {**ids, "at": now_text()})
    rows = store.query(f"SELECT id FROM jobs WHERE cancel_requested = 1 AND id IN ({inside})", ids)
    return {r["id"] for r in rows}


def add_events(store: Store, job_id: str, events: list[tuple[int, str, dict[str, Any]]]) -> None:
    if events:
        store.execute_many([("INSERT INTO job_events (job_id, seq, at, data) VALUES (:job, :seq, :at, :data)",
                             {"job": job_id, "seq": seq, "at": at, "data": json.dumps(data, sort_keys=True)})
                            for seq, at, data in events])


def events(store: Store, job_id: str, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    rows = store.query("SELECT seq, at, data FROM job_events WHERE job_id = :job AND seq > :after "
                       "ORDER BY seq LIMIT :limit", {"job": job_id, "after": after, "limit": limit})
    return [{"seq": r["seq"], "at": r["at"], **json.loads(r["data"])} for r in rows]


def finish(store: Store, job_id: str, *, status: str, error: str | None = None,
           result: dict[str, Any] | None = None) -> bool:
    """Record the outcome of a running job; False when it is no longer running (marked
    interrupted meanwhile: that verdict stands)."""
    assert status in FINISHED, status
    with store.transaction() as execute:
        done = execute("UPDATE jobs SET status = :status, finished_at = :at, error = :error, result = :result "
                       "WHERE id = :id AND status = 'running'",
                       {"status": status, "at": now_text(), "error": error, "id": job_id,
                        "result": json.dumps(result, sort_keys=True) if result is not None else None})
    return bool(done)


def request_cancel(store: Store, job_id: str) -> Job | None:
    """A queued job is cancelled at once; a running one is asked to stop (its worker cancels
    it at its next heartbeat, as Ctrl-C stops the CLI: locks released, the record failed)."""
    with store.transaction() as execute:
        execute("UPDATE jobs SET status = 'cancelled', finished_at = :at, error = 'cancelled before it started' "
                "WHERE id = :id AND status = 'queued'", {"at": now_text(), "id": job_id})
        execute("UPDATE jobs SET cancel_requested = 1 WHERE id = :id AND status = 'running'", {"id": job_id})
    return get(store, job_id)


def interrupt_stale(store: Store, stale_after: timedelta, now: datetime | None = None) -> list[str]:
    """Mark ``interrupted`` every running job whose worker is gone: heartbeat older than
    ``stale_after``, or (on this machine) its pid no longer exists."""
    now = now or datetime.now(UTC)
    rows = store.query("SELECT id, worker_pid, worker_host, heartbeat_at FROM jobs WHERE status = 'running'")
    bound = now_text(now - stale_after)
    gone = [r["id"] for r in rows
            if (r["heartbeat_at"] or "") < bound or process_gone(r["worker_host"], r["worker_pid"])]
    for job_id in gone:
        with store.transaction() as execute:
            execute("UPDATE jobs SET status = 'interrupted', finished_at = :at, "
                    "error = 'its worker stopped (its process is gone, or its heartbeat is stale)' WHERE id = :id AND status = 'running'",
                    {"at": now_text(now), "id": job_id})
    return gone
