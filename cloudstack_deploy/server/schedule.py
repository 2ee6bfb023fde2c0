"""Scheduled backups: `accessories.NAME.backups.schedule` of an environment's saved blueprint,
queued as ``backup`` jobs by every `csdeploy serve` and run by its workers (`worker.run_backup`,
the function `csdeploy backup` runs).

The environments are those with a saved blueprint on this server's machine
(``$CSDEPLOY_HOME/envs/NAME/blueprint.json``, written by create-env and deploy; teardown removes
it). Cron lines are read in UTC. At each tick the scheduler takes, per scheduled accessory,
the newest due minute (the *slot*) and queues its job in one transaction with a
``backup_slots`` row; that row's primary key (env, accessory, due minute) makes the database
refuse a second job for the slot, whichever server asks. So:

- a slot gets at most one job, even with several servers on one store;
- a server that was down runs the newest slot it missed, once (older ones are never run): a
  slot older than the pair's newest row is not queued;
- a schedule this store never ran is not caught up on: a slot due before this scheduler
  started is queued only when an older slot of the pair is recorded;
- while a backup of the pair is still queued (not started) no other is added; the newest slot
  is queued once that one starts, so a slow destination does not pile up jobs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import cron
from ..errors import CsdeployError, OperationFailed
from ..log import get_logger
from ..store.records import now_text

if TYPE_CHECKING:  # the store (sqlite3) and the queue load when a schedule runs: `plan` and
    from ..store.db import Store  # `validate` read only its notes
    from . import queue

log = get_logger("server.schedule")
Clock = Callable[[], datetime]

#: Who queued a scheduled job (the job's ``requested_by``, the backup record's ``done_by``).
BY = "schedule"


@dataclass(frozen=True)
class Scheduled:
    """One accessory's schedule in an environment's blueprint."""

    env: str
    accessory: str
    schedule: str
    to: str | None
    keep: int | None

    def params(self, due: datetime) -> dict[str, Any]:
        return {"accessory": self.accessory, "to": self.to, "keep": self.keep, "schedule": self.schedule,
                "due": _minute(due)}


def _minute(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def schedules_of(env: str, bp: Any) -> list[Scheduled]:
    """The blueprint's scheduled backups this server runs (those sent off the host: `to:` a
    directory of this machine or object storage), by accessory name. A schedule with no `to:`
    or `to: host` is run on the accessory's host by a timer (`hostdumps`), not here."""
    from ..hostdumps import runs_on_host

    out = []
    for name, acc in sorted(bp.accessories.items()):
        policy = acc.backups
        if policy is not None and policy.schedule and not runs_on_host(policy):
            out.append(Scheduled(env, name, policy.schedule, policy.to, policy.keep))
    return out


def notes(bp: Any, env: str = "NAME") -> list[str]:
    """What `validate` and `plan` say of the blueprint's scheduled backups (notes, not errors):
    who runs each one, and why."""
    from ..hostdumps import notes as on_host

    return on_host(bp) + [
            f"accessories.{s.accessory}.backups.schedule {s.schedule!r} (UTC) is run by `csdeploy serve` "
            f"(its worker, on the machine it runs on; `to:` is off the host, which has no credentials "
            f"and no uploader): backups go to {s.to or '$CSDEPLOY_HOME/backups there'}"
            + (f", keeping the newest {s.keep}" if s.keep else "")
            + f"; `csdeploy status --env {s.env}` shows the last run and the next"
            for s in schedules_of(env, bp)]


_UNLOADED: dict[str, str] = {}   # env -> why its blueprint was not loaded (last said)


def saved_environments(root: Path | None = None) -> Iterator[tuple[str, Any]]:
    """(env, blueprint) of each environment whose blueprint this machine saved; a blueprint
    that cannot be loaded any more is logged and left out."""
    from ..envctx import RECORD, recall_blueprint
    from ..state import EnvState, state_root, validate_env_name

    envs = (root or state_root()) / "envs"
    if not envs.is_dir():
        return
    for path in sorted(envs.iterdir()):
        if not (path / RECORD).is_file():
            continue
        try:
            env = validate_env_name(path.name)
            bp = recall_blueprint(EnvState(env), None, ())
        except CsdeployError as exc:
            problem = str(exc).splitlines()[0]
            if _UNLOADED.get(path.name) != problem:  # said once, not at every tick
                log.warning("schedule: blueprint not loaded, its backups are not scheduled", env=path.name,
                            error=problem)
            _UNLOADED[path.name] = problem
            continue
        _UNLOADED.pop(path.name, None)
        yield env, bp


# ---- the store ------------------------------------------------------------------------------------

def queue_slot(store: Store, item: Scheduled, due: datetime, *, since: datetime,
               by: str = BY) -> queue.Job | None:
    """Queue the backup job of ``item``'s slot ``due`` unless the slot (or a newer one) is
    recorded, it was missed before ``since`` by a schedule never run, or a backup of the pair
    is still queued. None when nothing was queued; the unique key decides a race."""
    from . import queue

    due_text = _minute(due)
    job = queue.Job(id=str(uuid.uuid4()), kind="backup", env=item.env, params=item.params(due), status="queued",
                    requested_by=by, created_at=now_text())
    key = {"env": item.env, "accessory": item.accessory}
    try:
        with store.transaction() as execute:
            rows = queue._rows(store, execute, "SELECT MAX(due_at) AS last FROM backup_slots "  # noqa: SLF001
                               "WHERE env = :env AND accessory = :accessory", key)
            last = rows[0]["last"] if rows else None
            if last is not None and last >= due_text:
                return None
            if last is None and due < since:
                return None
            waiting = queue._rows(store, execute, "SELECT s.job_id FROM backup_slots s JOIN jobs j ON j.id = s.job_id "  # noqa: SLF001
                                  "WHERE s.env = :env AND s.accessory = :accessory AND j.status = 'queued'", key)
            if waiting:
                return None
            execute("INSERT INTO jobs (id, kind, env, params, status, requested_by, created_at) "
                    "VALUES (:id, 'backup', :env, :params, 'queued', :by, :at)",
                    {"id": job.id, "env": item.env, "params": json.dumps(job.params, sort_keys=True), "by": by,
                     "at": job.created_at})
            execute("INSERT INTO backup_slots (env, accessory, due_at, job_id, schedule, queued_at, queued_by) "
                    "VALUES (:env, :accessory, :due, :job, :schedule, :at, :host)",
                    {**key, "due": due_text, "job": job.id, "schedule": item.schedule, "at": job.created_at,
                     "host": f"{socket.gethostname()}:{os.getpid()}"})
    except OperationFailed as exc:
        if "unique" in str(exc).lower():  # another scheduler queued this slot first
            return None
        raise
    return job


@dataclass(frozen=True)
class ScheduleState:
    """What `status` shows of one scheduled backup: its last run (the newest slot's job) and
    when it is next due."""

    accessory: str
    schedule: str
    next_due: str | None
    last_due: str | None = None
    last_status: str | None = None
    last_finished: str | None = None
    last_error: str | None = None
    last_job: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def states(store: Store, env: str, bp: Any, now: datetime | None = None) -> list[ScheduleState]:
    """Each scheduled backup of ``bp`` in ``env``: its newest slot's job, and the next due minute."""
    now = now or datetime.now(UTC)
    out = []
    for item in schedules_of(env, bp):
        rows = store.query("SELECT s.due_at, j.id, j.status, j.finished_at, j.error FROM backup_slots s "
                           "JOIN jobs j ON j.id = s.job_id WHERE s.env = :env AND s.accessory = :accessory "
                           "ORDER BY s.due_at DESC LIMIT 1", {"env": env, "accessory": item.accessory})
        nxt = cron.parse(item.schedule).following(now.astimezone(UTC))
        last = rows[0] if rows else {}
        out.append(ScheduleState(item.accessory, item.schedule, _minute(nxt) if nxt else None,
                                 last.get("due_at"), last.get("status"), last.get("finished_at"),
                                 last.get("error"), last.get("id")))
    return out


# ---- the loop -------------------------------------------------------------------------------------

class Scheduler:
    """Queues due backups at each ``tick``; ``run_forever`` ticks every ``interval`` seconds.
    ``clock`` and ``environments`` are given by tests (an injected time, their own blueprints)."""

    def __init__(self, store: Store, *, interval: float = 20.0, clock: Clock | None = None,
                 environments: Callable[[], Any] | None = None) -> None:
        self.store = store
        self.interval = interval
        self.clock = clock or (lambda: datetime.now(UTC))
        self.environments = environments or saved_environments
        self.since = self.clock().replace(second=0, microsecond=0)  # a slot of this very minute counts
        self._stopping = False

    def tick(self) -> list[queue.Job]:
        """Queue every due slot (blocking: call it from a thread in async code)."""
        now = self.clock()
        queued = []
        for env, bp in self.environments():
            for item in schedules_of(env, bp):
                due = cron.parse(item.schedule).latest(now.astimezone(UTC))
                if due is None:
                    continue
                job = queue_slot(self.store, item, due, since=self.since)
                if job is not None:
                    log.info("scheduled backup queued", env=env, accessory=item.accessory, due=_minute(due),
                             job=job.id)
                    queued.append(job)
        return queued

    async def run_forever(self) -> None:
        while not self._stopping:
            try:
                await asyncio.to_thread(self.tick)
            except CsdeployError as exc:  # the store is away: said, tried again at the next tick
                log.warning("schedule: store problem", error=str(exc))
            except Exception:  # a bug: logged, the server goes on
                log.exception("schedule: tick failed")
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        self._stopping = True
