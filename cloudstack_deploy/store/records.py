"""What the history store holds, and every statement that reads or writes it.

- environments: one row per life of an environment (created, expires, torn down, by whom);
- deployments: service, env, version, status ``pending | deploying | deployed | failed |
  rolled_back``, who, started/finished, duration, error; a rollback is a deployment of kind
  ``rollback``, and the deployment it replaced becomes ``rolled_back``;
- events per deployment: ``deploy_started``, ``deploy_completed``, ``deploy_failed``,
  ``rollback``, with JSON metadata;
- runs: each ``nightly`` and ``reap`` with its outcome and summary;
- processes: the pid and host writing each run or deployment still in progress.

A run still ``running`` (or a deployment ``pending``/``deploying``) whose process is gone is
read as ``interrupted``: on this machine when its pid no longer exists, from anywhere once it
is older than RUN_STALE_AFTER (DEPLOYMENT_STALE_AFTER). Nothing is written for that: the
process may yet finish (a slow run on another machine), and then its outcome stands. A
paused canary is ``deploying`` with no process by design (promote or abort ends it), so it
is never read as interrupted.
"""

from __future__ import annotations

import contextvars
import getpass
import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: reading the status names needs no database driver
    from .db import Store

STATUSES = ("pending", "deploying", "deployed", "failed", "rolled_back")
RUN_STATUSES = ("running", "passed", "failed")
INTERRUPTED = "interrupted"   # read, never stored: in progress, but its process is gone
LIVE_DEPLOYMENT = ("pending", "deploying")
LIVE_RUN = ("running",)
#: Older than this and still in progress: interrupted, wherever its process ran. A deploy holds
#: the environment's cloud lock, which is stale after 2 h (provision.cloudlock); a nightly's
#: environment lives 20 h by default.
DEPLOYMENT_STALE_AFTER = timedelta(hours=2)
RUN_STALE_AFTER = timedelta(hours=24)
HISTORY_KINDS = ("deployments", "environments", "runs")   # what `csdeploy history --show` lists
EVENTS = ("deploy_started", "deploy_completed", "deploy_failed", "rollback")
ACTOR_VAR = "CSDEPLOY_ACTOR"
#: Who acts in this task, when it is not this process's user: the team server sets it to the
#: token's name around each job it runs (jobs run side by side, so not the environment variable).
ACTING_AS: contextvars.ContextVar[str | None] = contextvars.ContextVar("csdeploy_acting_as", default=None)


def now_text(when: datetime | None = None) -> str:
    """UTC with microseconds: sorts as text in both engines."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def actor() -> str:
    """Who is acting: the server's caller (`ACTING_AS`), ``$CSDEPLOY_ACTOR`` (e.g. a CI run's
    name), else ``user@host``."""
    acting = ACTING_AS.get()
    if acting:
        return acting[:200]
    given = os.environ.get(ACTOR_VAR, "").strip()
    if given:
        return given[:200]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _id() -> str:
    return str(uuid.uuid4())


def _known(cls: type, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` without columns ``cls`` does not know (a newer csdeploy may have added some)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in row.items() if k in names}


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def process_gone(host: str | None, pid: int | None) -> bool:
    """Whether ``pid`` on ``host`` is known to no longer exist: only this machine can tell
    (as the cloud lock's `holder_died_here` does); a process of another user counts as alive."""
    if not host or not pid or host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _this_process(record_id: str) -> tuple[str, dict[str, Any]]:
    return ("INSERT INTO processes (record_id, pid, host, started_at) VALUES (:rid, :pid, :host, :at) "
            "ON CONFLICT (record_id) DO UPDATE SET pid = excluded.pid, host = excluded.host",
            {"rid": record_id, "pid": os.getpid(), "host": socket.gethostname(), "at": now_text()})


def _done(record_id: str) -> tuple[str, dict[str, Any]]:
    return "DELETE FROM processes WHERE record_id = :rid", {"rid": record_id}


def _processes(store: Store, ids: list[str]) -> dict[str, tuple[str, int]]:
    """record id -> (host, pid) of those in progress."""
    found: dict[str, tuple[str, int]] = {}
    for start in range(0, len(ids), 500):
        chunk = {f"p{i}": v for i, v in enumerate(ids[start:start + 500])}
        rows = store.query("SELECT record_id, pid, host FROM processes WHERE record_id IN ("
                           + ", ".join(f":{k}" for k in chunk) + ")", chunk)
        found.update({r["record_id"]: (r["host"], r["pid"]) for r in rows})
    return found


def _interrupted(started_at: str, process: tuple[str, int] | None, stale_after: timedelta, now: datetime) -> bool:
    if process is not None and process_gone(*process):
        return True
    try:
        return now - parse_time(started_at) > stale_after
    except ValueError:
        return False


@dataclass
class EnvironmentRow:
    id: str
    name: str
    cloud: str
    service: str | None = None
    network_id: str | None = None
    created_at: str | None = None
    created_by: str | None = None
    expires_at: str | None = None
    torn_down_at: str | None = None
    torn_down_by: str | None = None
    torn_down_how: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Event:
    type: str
    at: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Deployment:
    id: str
    env: str
    cloud: str
    service: str
    version: str
    kind: str
    status: str
    deployed_by: str
    started_at: str
    finished_at: str | None = None
    duration_seconds: float | None = None
    error: str | None = None
    environment_id: str | None = None
    events: list[Event] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Run:
    id: str
    kind: str
    cloud: str
    status: str
    started_by: str
    started_at: str
    prefix: str | None = None
    env: str | None = None
    finished_at: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- environments ----------------------------------------------------------------------------
_LIVE = "SELECT id FROM environments WHERE cloud = :cloud AND name = :name AND torn_down_at IS NULL"


def env_created(store: Store, *, name: str, cloud: str, service: str | None, network_id: str | None,
                expires: datetime | None, by: str | None = None) -> str:
    """The environment's live row, made now or updated (a converging re-run keeps it)."""
    params = {"cloud": cloud, "name": name, "service": service, "network_id": network_id,
              "expires_at": now_text(expires) if expires else None}
    with store.transaction() as execute:
        execute("INSERT INTO environments (id, name, cloud, service, network_id, created_at, created_by, expires_at) "
                "VALUES (:id, :name, :cloud, :service, :network_id, :created_at, :created_by, :expires_at) "
                "ON CONFLICT (cloud, name) WHERE torn_down_at IS NULL DO UPDATE SET "
                "service = excluded.service, network_id = excluded.network_id, expires_at = excluded.expires_at",
                {**params, "id": _id(), "created_at": now_text(), "created_by": by or actor()})
    return store.query(_LIVE, params)[0]["id"]


def env_torn_down(store: Store, *, name: str, cloud: str, how: str, by: str | None = None) -> None:
    """Close the environment's live row (one is made if the store never saw it created)."""
    at, who = now_text(), by or actor()
    with store.transaction() as execute:
        done = execute("UPDATE environments SET torn_down_at = :at, torn_down_by = :by, torn_down_how = :how "
                       "WHERE cloud = :cloud AND name = :name AND torn_down_at IS NULL",
                       {"at": at, "by": who, "how": how, "cloud": cloud, "name": name})
        if not done:
            execute("INSERT INTO environments (id, name, cloud, torn_down_at, torn_down_by, torn_down_how) "
                    "VALUES (:id, :name, :cloud, :at, :by, :how)",
                    {"id": _id(), "name": name, "cloud": cloud, "at": at, "by": who, "how": how})


def environments(store: Store, *, name: str | None = None, since: timedelta | None = None,
                 limit: int = 100) -> list[EnvironmentRow]:
    rows = _listing(store, "environments", {"name": name}, since, limit,
                    since_clause="(created_at >= :since OR torn_down_at >= :since)",
                    order="COALESCE(created_at, torn_down_at) DESC")
    return [EnvironmentRow(**_known(EnvironmentRow, r)) for r in rows]


# ---- deployments ---------------------------------------------------------------------------
def deployment_pending(store: Store, *, env: str, cloud: str, service: str, version: str, kind: str,
                       by: str | None = None) -> str:
    dep_id = _id()
    params = {"id": dep_id, "env": env, "cloud": cloud, "service": service, "version": version, "kind": kind,
              "by": by or actor(), "at": now_text()}
    with store.transaction() as execute:
        execute("INSERT INTO deployments (id, environment_id, env, cloud, service, version, kind, status, "
                "deployed_by, started_at) VALUES (:id, (" + _LIVE.replace(":name", ":env") + "), :env, :cloud, "
                ":service, :version, :kind, 'pending', :by, :at)", params)
        execute(*_this_process(dep_id))
    return dep_id


def _event(dep_id: str, type_: str, metadata: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    assert type_ in EVENTS, type_
    return ("INSERT INTO events (id, deployment_id, type, at, metadata) VALUES (:id, :dep, :type, :at, :meta)",
            {"id": _id(), "dep": dep_id, "type": type_, "at": now_text(),
             "meta": json.dumps(metadata, sort_keys=True)})


def deployment_started(store: Store, dep_id: str, metadata: dict[str, Any]) -> None:
    store.execute_many([
        ("UPDATE deployments SET status = 'deploying' WHERE id = :id", {"id": dep_id}),
        _event(dep_id, "deploy_started", metadata),
        _this_process(dep_id),
    ])


def deployment_exists(store: Store, dep_id: str) -> bool:
    """Whether this store has ``dep_id`` (a canary paused from another machine may not be here)."""
    return bool(store.query("SELECT id FROM deployments WHERE id = :id", {"id": dep_id}))


def deployment_finished(store: Store, dep_id: str, *, ok: bool, seconds: float | None, error: str | None,
                        metadata: dict[str, Any], rolled_back: bool = False) -> None:
    """deployed (+ deploy_completed) or failed (+ deploy_failed). A successful rollback also
    marks the deployment it replaced (the last one deployed before it) ``rolled_back``.
    ``rolled_back``: the deploy undid itself (a failed watch, an aborted canary): status
    ``rolled_back`` with a ``rollback`` event whose metadata says why."""
    if rolled_back:
        store.execute_many([
            ("UPDATE deployments SET status = 'rolled_back', finished_at = :at, duration_seconds = :seconds, "
             "error = :error WHERE id = :id", {"at": now_text(), "seconds": seconds, "error": error, "id": dep_id}),
            _event(dep_id, "rollback", {**metadata, "reason": error}),
            _done(dep_id),
        ])
        return
    statements = [
        ("UPDATE deployments SET status = :status, finished_at = :at, duration_seconds = :seconds, "
         "error = :error WHERE id = :id",
         {"status": "deployed" if ok else "failed", "at": now_text(), "seconds": seconds, "error": error,
          "id": dep_id}),
        _event(dep_id, "deploy_completed" if ok else "deploy_failed", metadata),
        _done(dep_id),
    ]
    if ok:
        this = store.query("SELECT * FROM deployments WHERE id = :id", {"id": dep_id})
        if this and this[0]["kind"] == "rollback":
            d = this[0]
            replaced = store.query(
                "SELECT id, version FROM deployments WHERE cloud = :cloud AND env = :env AND service = :service "
                "AND status = 'deployed' AND id <> :id AND started_at < :started "
                "ORDER BY started_at DESC LIMIT 1",
                {"cloud": d["cloud"], "env": d["env"], "service": d["service"], "id": dep_id,
                 "started": d["started_at"]})
            for r in replaced:
                statements += [
                    ("UPDATE deployments SET status = 'rolled_back' WHERE id = :id", {"id": r["id"]}),
                    _event(r["id"], "rollback", {"to_version": d["version"], "rollback_deployment": dep_id,
                                                 "by": d["deployed_by"], "from_version": r["version"]}),
                ]
    store.execute_many(statements)


def deployments(store: Store, *, env: str | None = None, service: str | None = None, status: str | None = None,
                since: timedelta | None = None, limit: int = 100) -> list[Deployment]:
    """Newest first, each with its events (oldest first); one in progress whose process is
    gone has status ``interrupted`` (and is found by that status, not by its stored one)."""
    equal = {"env": env, "service": service}
    live = status in (*LIVE_DEPLOYMENT, INTERRUPTED)
    rows = _listing(store, "deployments", {**equal, "status": None if live else status}, since,
                    None if live else limit,
                    statuses=(LIVE_DEPLOYMENT if status == INTERRUPTED else (status,)) if live else None)
    found = [Deployment(**_known(Deployment, r)) for r in rows]
    if found:
        ids = {f":d{i}": d.id for i, d in enumerate(found)}
        events = store.query("SELECT deployment_id, type, at, metadata FROM events WHERE deployment_id IN ("
                             + ", ".join(ids) + ") ORDER BY at", {k[1:]: v for k, v in ids.items()})
        by_id = {d.id: d for d in found}
        for e in events:
            by_id[e["deployment_id"]].events.append(Event(e["type"], e["at"], json.loads(e["metadata"] or "{}")))
    _mark_interrupted(store, [d for d in found if d.status in LIVE_DEPLOYMENT and not _paused_canary(d)],
                      DEPLOYMENT_STALE_AFTER)
    if live:
        found = [d for d in found if d.status == status][:limit]
    return found


def deployment(store: Store, dep_id: str) -> Deployment | None:
    """One deployment with its events (``interrupted`` as `deployments` reads it), or None."""
    rows = store.query("SELECT * FROM deployments WHERE id = :id", {"id": dep_id})
    if not rows:
        return None
    d = Deployment(**_known(Deployment, rows[0]))
    for e in store.query("SELECT type, at, metadata FROM events WHERE deployment_id = :id ORDER BY at", {"id": dep_id}):
        d.events.append(Event(e["type"], e["at"], json.loads(e["metadata"] or "{}")))
    _mark_interrupted(store, [d] if d.status in LIVE_DEPLOYMENT and not _paused_canary(d) else [],
                      DEPLOYMENT_STALE_AFTER)
    return d


def _paused_canary(d: Deployment) -> bool:
    """A canary deploy: ``deploying`` while it waits, paused, for promote or abort."""
    return d.status == "deploying" and any(e.type == "deploy_started" and e.metadata.get("canary")
                                           for e in d.events)


# ---- backups and restores --------------------------------------------------------------------
def backup_recorded(store: Store, *, action: str, env: str, accessory: str, kind: str, backup: str, location: str,
                    size: int | None, sha256: str | None, ok: bool, error: str | None = None) -> str:
    """One `csdeploy backup` or `restore`, as it ended."""
    row_id = _id()
    with store.transaction() as execute:
        execute("INSERT INTO backups (id, action, env, accessory, kind, backup, location, size, sha256, status, "
                "error, done_by, at) VALUES (:id, :action, :env, :accessory, :kind, :backup, :location, :size, "
                ":sha256, :status, :error, :by, :at)",
                {"id": row_id, "action": action, "env": env, "accessory": accessory, "kind": kind, "backup": backup,
                 "location": location, "size": size, "sha256": sha256, "status": "done" if ok else "failed",
                 "error": error, "by": actor(), "at": now_text()})
    return row_id


def backup_records(store: Store, *, env: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The backups and restores recorded (of ``env``), newest first."""
    return _listing(store, "backups", {"env": env}, None, limit, order="at DESC")


# ---- runs ------------------------------------------------------------------------------------
def run_started(store: Store, *, kind: str, cloud: str, prefix: str | None, env: str | None = None) -> str:
    run_id = _id()
    with store.transaction() as execute:
        execute("INSERT INTO runs (id, kind, cloud, prefix, env, status, started_by, started_at) "
                "VALUES (:id, :kind, :cloud, :prefix, :env, 'running', :by, :at)",
                {"id": run_id, "kind": kind, "cloud": cloud, "prefix": prefix, "env": env, "by": actor(),
                 "at": now_text()})
        execute(*_this_process(run_id))
    return run_id


def run_finished(store: Store, run_id: str, *, passed: bool, summary: dict[str, Any], env: str | None = None) -> None:
    with store.transaction() as execute:
        execute("UPDATE runs SET status = :status, finished_at = :at, summary = :summary, "
                "env = COALESCE(:env, env) WHERE id = :id",
                {"status": "passed" if passed else "failed", "at": now_text(), "env": env,
                 "summary": json.dumps(summary, sort_keys=True, default=str), "id": run_id})
        execute(*_done(run_id))


def runs(store: Store, *, kind: str | None = None, env: str | None = None, status: str | None = None,
         since: timedelta | None = None, limit: int = 100) -> list[Run]:
    """Newest first; one still ``running`` whose process is gone is ``interrupted``."""
    live = status in (*LIVE_RUN, INTERRUPTED)
    rows = _listing(store, "runs", {"kind": kind, "env": env, "status": None if live else status}, since,
                    None if live else limit, statuses=LIVE_RUN if live else None)
    found = [Run(**_known(Run, {**r, "summary": json.loads(r["summary"] or "{}")})) for r in rows]
    _mark_interrupted(store, [r for r in found if r.status in LIVE_RUN], RUN_STALE_AFTER)
    if live:
        found = [r for r in found if r.status == status][:limit]
    return found


def _mark_interrupted(store: Store, in_progress: list[Any], stale_after: timedelta) -> None:
    """Read as ``interrupted`` the rows (deployments or runs still live) whose process is gone."""
    if not in_progress:
        return
    processes, now = _processes(store, [item.id for item in in_progress]), datetime.now(UTC)
    for item in in_progress:
        if _interrupted(item.started_at, processes.get(item.id), stale_after, now):
            item.status = INTERRUPTED


def _listing(store: Store, table: str, equal: dict[str, str | None], since: timedelta | None, limit: int | None, *,
             since_clause: str = "started_at >= :since", order: str = "started_at DESC",
             statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Rows of ``table`` (a name of this module's schema, never user text) whose columns equal
    the given values (None: any), whose status is one of ``statuses`` (None: any), newer than
    ``since``, newest first, at most ``limit`` (None: all)."""
    where = [f"{column} = :{column}" for column, value in equal.items() if value is not None]
    params: dict[str, Any] = {column: value for column, value in equal.items() if value is not None}
    if statuses is not None:
        where.append("status IN (" + ", ".join(f":status{i}" for i in range(len(statuses))) + ")")
        params.update({f"status{i}": value for i, value in enumerate(statuses)})
    if since is not None:
        where.append(since_clause)
        params["since"] = now_text(datetime.now(UTC) - since)
    sql = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
    if limit is None:
        return store.query(sql + f" ORDER BY {order}", params)
    return store.query(sql + f" ORDER BY {order} LIMIT :limit", {**params, "limit": limit})
