"""The worker inside each `csdeploy serve`: claims jobs from the shared queue and runs them
with the same service functions as the CLI, their progress recorded into the job's events.

A job runs as an asyncio task. Every ``heartbeat`` seconds the worker refreshes the heartbeat
of its jobs, writes their new events, cancels those whose cancel was asked (the task is
cancelled as Ctrl-C cancels the CLI: the rollout's own clean-up runs, locks are released,
the deployment record says failed), and marks other workers' stale jobs interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from ..errors import CsdeployError
from ..log import get_logger, redact
from ..progress import Event
from ..store.db import Store
from ..store.records import ACTING_AS, now_text
from . import queue

log = get_logger("server.worker")

Runner = Callable[[queue.Job, "JobProgress"], Awaitable[dict[str, Any]]]


class JobProgress:
    """A `Progress` that keeps what a job reports, to be written into ``job_events``."""

    def __init__(self) -> None:
        self.seq = 0
        self.pending: list[tuple[int, str, dict[str, Any]]] = []

    def _add(self, data: dict[str, Any]) -> None:
        self.seq += 1
        self.pending.append((self.seq, now_text(), data))

    def emit(self, event: Event) -> None:
        self._add({"type": "progress", "resource": redact(event.resource), "action": event.action,
                   "status": event.status, "detail": redact(event.detail), "env": event.env})

    def note(self, text: str, *, level: str = "info") -> None:
        self._add({"type": "note", "level": level, "text": redact(text)})

    def close(self) -> None:
        pass

    def take(self) -> list[tuple[int, str, dict[str, Any]]]:
        taken, self.pending = self.pending, []
        return taken


def _result_of(value: Any) -> dict[str, Any]:
    """What the API shows of a service function's result: plain fields only."""
    if value is None:
        return {}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    out: dict[str, Any] = {}
    for name in ("version", "status", "canary", "seconds", "warnings", "reverted"):
        if hasattr(value, name):
            v = getattr(value, name)
            out[name] = round(v, 2) if isinstance(v, float) else v
    if getattr(value, "switches", None):
        out["switches"] = [s.to_dict() for s in value.switches]
    return out


async def run_deploy(job: queue.Job, progress: JobProgress) -> dict[str, Any]:
    from .. import service

    p = job.params
    return _result_of(await service.deploy(job.env, p["version"], canary=p.get("canary") or None,
                                           progress=progress))


async def run_rollback(job: queue.Job, progress: JobProgress) -> dict[str, Any]:
    from .. import service

    return _result_of(await service.rollback(job.env, job.params.get("version") or None, progress=progress))


async def run_create(job: queue.Job, progress: JobProgress) -> dict[str, Any]:
    """create-env from a blueprint of the server's blueprint directory (checked when queued),
    rolling out ``version`` when one is given."""
    from .. import service
    from ..blueprint import load_blueprint, parse_duration

    p = job.params
    bp = load_blueprint(p["blueprint_path"])
    outcome = await service.create_env(bp, job.env, version=p.get("version") or None,
                                       ttl=parse_duration(p["ttl"]) if p.get("ttl") else None,
                                       skip_rollout=not p.get("version"), progress=progress,
                                       blueprint_path=p["blueprint_path"])
    inv = outcome.inventory
    return {"hosts": [h.name for h in inv.hosts], "app_url": inv.app_url,
            **({"rollout": _result_of(outcome.rollout)} if outcome.rollout else {})}


async def run_teardown(job: queue.Job, progress: JobProgress) -> dict[str, Any]:
    from .. import service

    result = await service.teardown(job.env, progress=progress, how="server")
    return {"deleted": len(getattr(result, "deleted", []) or [])}


async def run_backup(job: queue.Job, progress: JobProgress) -> dict[str, Any]:
    """A scheduled backup (schedule.py): what `csdeploy backup --env E --accessory A [--to URL]
    [--keep N]` does, recorded in the history store's ``backups`` table the same way."""
    from .. import service

    p = job.params
    progress.note(f"backup of {job.env}'s {p['accessory']}, due {p.get('due', '?')} ({p.get('schedule', '')})")
    result = await service.backup_accessory(job.env, p["accessory"], to=p.get("to") or None,
                                            keep=p.get("keep") or None)
    return _result_of(result)


async def run_sleep(job: queue.Job, progress: JobProgress) -> dict[str, Any]:
    """A test-only job: reports a few steps, sleeping ``seconds`` in all; ``fail`` makes it fail."""
    steps = int(job.params.get("steps", 3))
    seconds = float(job.params.get("seconds", 0.3))
    for n in range(1, steps + 1):
        progress.emit(Event(resource=f"step {n}", action="sleep", status="running", env=job.env))
        await asyncio.sleep(seconds / steps)
        progress.emit(Event(resource=f"step {n}", action="sleep", status="done", env=job.env))
    if job.params.get("fail"):
        raise CsdeployError(str(job.params["fail"]))
    return {"steps": steps, "pid": os.getpid()}


RUNNERS: dict[str, Runner] = {"create": run_create, "deploy": run_deploy, "rollback": run_rollback, "teardown": run_teardown,
                              "backup": run_backup, "sleep": run_sleep}


class Worker:
    def __init__(self, store: Store, *, kinds: tuple[str, ...] = queue.KINDS, max_jobs: int = 2,
                 poll: float = 0.5, heartbeat: float = 2.0, stale_after: float = 30.0,
                 runners: dict[str, Runner] | None = None) -> None:
        self.store = store
        self.kinds = kinds
        self.max_jobs = max_jobs
        self.poll = poll
        self.heartbeat = heartbeat
        self.stale_after = timedelta(seconds=stale_after)
        self.runners = runners or RUNNERS
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.running: dict[str, tuple[asyncio.Task[None], JobProgress]] = {}
        self._stopping = False

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, self.store, *args, **kwargs)

    async def run_forever(self) -> None:
        last_beat = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                if loop.time() - last_beat >= self.heartbeat:
                    last_beat = loop.time()
                    await self.beat()
                await self.flush()
                while len(self.running) < self.max_jobs and not self._stopping:
                    job = await self._db(queue.claim, self.kinds, host=self.host, pid=self.pid)
                    if job is None:
                        break
                    self.start(job)
            except CsdeployError as exc:  # the store is away: say so, try again
                log.warning("worker: store problem", error=str(exc))
            await asyncio.sleep(self.poll)

    async def beat(self) -> None:
        cancel = await self._db(queue.heartbeat, list(self.running))
        for job_id in cancel:
            task = self.running.get(job_id, (None, None))[0]
            if task is not None and not task.done():
                log.info("job cancel", job=job_id)
                task.cancel()
        gone = await self._db(queue.interrupt_stale, self.stale_after)
        for job_id in gone:
            log.warning("job interrupted: its worker stopped", job=job_id)

    async def flush(self) -> None:
        for job_id, (_, progress) in list(self.running.items()):
            await self._db(queue.add_events, job_id, progress.take())

    def start(self, job: queue.Job) -> None:
        progress = JobProgress()
        task = asyncio.get_running_loop().create_task(self._run(job, progress), name=f"job-{job.id}")
        self.running[job.id] = (task, progress)

    async def _run(self, job: queue.Job, progress: JobProgress) -> None:
        ACTING_AS.set(job.requested_by)
        runner = self.runners[job.kind]
        log.info("job start", job=job.id, kind=job.kind, env=job.env)
        progress.note(f"{job.kind} of {job.env} started on {self.host} (pid {self.pid})")
        status, error, result = "succeeded", None, None
        try:
            result = await runner(job, progress)
        except asyncio.CancelledError:
            status, error = "cancelled", "cancelled by request"
            if self._stopping:
                status, error = "interrupted", "the server stopped"
        except CsdeployError as exc:
            status, error = "failed", redact(str(exc))
        except Exception as exc:  # a bug: the job fails, the worker goes on
            log.exception("job crashed", job=job.id)
            status, error = "failed", redact(f"{type(exc).__name__}: {exc}")
        progress.note(f"{job.kind} {status}" + (f": {error}" if error else ""),
                      level="info" if status == "succeeded" else "error")
        try:
            await self._db(queue.add_events, job.id, progress.take())
            await self._db(queue.finish, job.id, status=status, error=error, result=result)
        finally:
            self.running.pop(job.id, None)
        log.info("job end", job=job.id, status=status)

    async def stop(self) -> None:
        self._stopping = True
        tasks = [task for task, _ in self.running.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
