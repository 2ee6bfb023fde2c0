"""Async jobs: queued, finished on a timer (or after a backend effect), then expired.

As in CloudStack's AsyncJobManagerImpl: a finished job stays queryable with
queryAsyncJobResult for ``job.expire.minutes`` (1440 by default) after it completed, then it
is gone (a query for it is a 431 like any unknown id). Pending jobs are indexed, so what a
call costs does not depend on how many jobs the cloud has run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .clock import new_id, now_str
from .errors import ApiError
from .faults import fault_text
from .registry import FINISHERS, AsyncResult

if TYPE_CHECKING:
    from .engine import Simulator

#: CloudStack's job.expire.minutes default.
JOB_EXPIRE_MINUTES = 1440.0


class JobRunner:
    """The engine's async jobs (mixed into ``engine.Simulator``)."""

    def _init_jobs(self: Simulator) -> None:
        #: Pending jobs in submission order, and by the entity they work on.
        self._pending: dict[str, dict[str, Any]] = {}
        self._pending_by_instance: dict[str, dict[str, dict[str, Any]]] = {}
        #: Finished jobs in completion order: (completed at, job id), for expiry.
        self._finished: deque[tuple[float, str]] = deque()

    def _index_jobs(self: Simulator) -> None:
        """Build the indexes from a loaded state (jobs of older state files get the new fields)."""
        jobs = self.col("jobs")
        for job in sorted(jobs.values(), key=lambda j: (j.get("_seq", 0), j.get("created", ""))):
            if job["jobstatus"] == 0:
                self._track_pending(job)
        done = []
        for job in jobs.values():
            if job["jobstatus"] != 0:
                when = job.get("_done")
                if when is None:
                    when = _parse_completed(job.get("completed")) or time.time()
                    job["_done"] = when
                done.append((when, job["id"]))
        self._finished.extend(sorted(done))

    def _track_pending(self: Simulator, job: dict[str, Any]) -> None:
        self._pending[job["id"]] = job
        if job.get("jobinstanceid"):
            self._pending_by_instance.setdefault(job["jobinstanceid"], {})[job["id"]] = job

    def _untrack_pending(self: Simulator, job: dict[str, Any]) -> None:
        self._pending.pop(job["id"], None)
        by = self._pending_by_instance.get(job.get("jobinstanceid") or "")
        if by is not None:
            by.pop(job["id"], None)
            if not by:
                del self._pending_by_instance[job["jobinstanceid"]]

    def pending_jobs(self: Simulator) -> list[dict[str, Any]]:
        """Pending jobs, oldest first (CloudStack lists jobs by id)."""
        return list(self._pending.values())

    def pending_job_for(self: Simulator, instance_id: str) -> dict[str, Any] | None:
        """The latest pending job working on ``instance_id`` (shown on its list entry)."""
        jobs = self._pending_by_instance.get(instance_id)
        return next(reversed(jobs.values())) if jobs else None

    # ---- lifecycle ---------------------------------------------------------------------------
    def submit_job(self: Simulator, cmd_name: str, result: AsyncResult, userid: str | None = None) -> dict[str, Any]:
        """Queue a job; it completes after ``job_seconds`` (a tenth of it for a database-only
        job) plus the command's own duration."""

        fault = self.faults.take(cmd_name, ("job",))
        job_id = new_id()
        now = time.time()
        job = self.add("jobs", {
            "id": job_id, "jobid": job_id, "cmd": _job_cmd(cmd_name), "_command": cmd_name,
            "_seq": self.counter("job"),
            "jobstatus": 0, "jobprocstatus": 0, "jobresultcode": 0, "jobinstancetype": result.instance_type,
            "jobinstanceid": result.instance_id, "created": now_str(now),
            # AsyncJobResponse always names the user that submitted the job (the lab's admin)
            "userid": userid or self.state.setdefault("user_id", new_id()),
            "accountid": self.state.get("account_id"), "_finisher": result.finisher, "_args": result.args,
            "_effect": result.effect, "_effect_args": result.effect_args,
            "_due": now + self.settings.job_seconds * (0.1 if result.database_only else 1.0)
                    + (result.duration or 0.0), "_start": now,
            "_fault": int(fault.code) if fault else None, "_midway": result.midway,
        })
        self._track_pending(job)
        self._schedule(job)
        return job

    def _schedule(self: Simulator, job: dict[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # loaded outside a loop; resume_jobs() schedules later
        delay = max(0.0, job["_due"] - time.time())
        self._timers[job["id"]] = loop.call_later(delay, self._job_due, job["id"])
        if job.get("_midway"):
            half = max(0.0, (job.get("_start", job["_due"]) + job["_due"]) / 2 - time.time())
            self._timers[f"{job['id']}:midway"] = loop.call_later(half, self._job_midway, job["id"])

    def _job_midway(self: Simulator, job_id: str) -> None:
        """Half-way through a job: the entity shows its intermediate state (see AsyncResult)."""
        self._timers.pop(f"{job_id}:midway", None)
        job = self._pending.get(job_id)
        if job is None or not job.get("_midway"):
            return
        step = job.pop("_midway")
        record = self.get(step["col"], step["id"])
        if record is not None and all(record.get(k) == v for k, v in step["when"].items()):
            record.update(step["set"])
            self.changed()

    def resume_jobs(self: Simulator) -> None:
        """Reschedule jobs still pending in a loaded state file, and re-run pending effects.

        An effect interrupted by a stop runs again from the start: effects are idempotent.
        """
        for job in self.pending_jobs():
            if job["id"] not in self._timers and job["id"] not in self._effects:
                self._schedule(job)
        self.resume_effects()

    def complete_job(self: Simulator, job_id: str, error: ApiError | None = None) -> None:
        """Finish a job: its finisher's result, or a failure (``error``, a fault, the finisher's)."""

        self._timers.pop(job_id, None)
        job = self._pending.get(job_id)
        if job is None:
            return
        fn, on_fail = FINISHERS[job["_finisher"]]
        try:
            if job["_fault"]:
                code = job["_fault"]
                raise ApiError(code, fault_text(job["_command"], code))
            if error is not None:
                raise error
            result = fn(self, **job["_args"])
        except ApiError as exc:
            if on_fail is not None:
                on_fail(self, **job["_args"])
            job.update(jobstatus=2, jobresultcode=exc.code, jobresulttype="object",
                       jobresult={"errorcode": exc.code, "errortext": exc.text})
        else:
            job.update(jobstatus=1, jobresultcode=0, jobresulttype="object", jobresult=result)
        now = time.time()
        job.update(completed=now_str(now), _done=now)
        for key in ("_args", "_effect_args", "_midway"):  # what only a pending job needs
            job.pop(key, None)
        self._untrack_pending(job)
        self._finished.append((now, job_id))
        self.expire_jobs(now)
        self.changed()

    def expire_jobs(self: Simulator, now: float | None = None) -> None:
        """Forget finished jobs older than job.expire.minutes (AsyncJobManagerImpl's GC task)."""
        cutoff = (now if now is not None else time.time()) - self.settings.job_expire_minutes * 60
        while self._finished and self._finished[0][0] <= cutoff:
            _, job_id = self._finished.popleft()
            job = self.get("jobs", job_id)
            if job is not None and job["jobstatus"] != 0:
                self.forget("jobs", job_id)

    def render_job(self, job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if not k.startswith("_") and v is not None and k != "id"}


def _job_cmd(name: str) -> str:
    """The Java class name CloudStack shows in ``cmd`` (cosmetic but clients print it)."""
    return f"org.apache.cloudstack.api.command.user.{name[0].upper()}{name[1:]}Cmd"


def _parse_completed(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None
