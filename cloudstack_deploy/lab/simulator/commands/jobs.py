"""Async job queries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..engine import Simulator
from ..errors import ApiError, invalid_value
from ..registry import Param, Request, command, finisher


@command("queryAsyncJobResult", Param("jobid", "uuid", required=True, entity="jobs"), kind="raw")
def query_async_job_result(sim: Simulator, req: Request) -> dict[str, Any]:
    """Retrieves the current status of asynchronous job."""
    job = sim.get("jobs", req.get("jobid"))
    assert job is not None
    return sim.render_job(job)


@command("listAsyncJobs", Param("startdate", "date"), key="asyncjobs", listing=True)
def list_async_jobs(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists the account's pending asynchronous jobs, oldest first.

    QueryManagerImpl.searchForAsyncJobsInternal: jobs created at or after ``startdate``, whose
    class name (``cmd``) contains ``keyword``, sorted by id. A finished job is not listed:
    AsyncJobManagerImpl.completeAsyncJob marks it removed, and searches skip removed rows
    (queryAsyncJobResult still reads it, until job.expire.minutes).
    """
    since = _parse_date(req.get("startdate")) if req.get("startdate") else None
    keyword = (req.get("keyword") or "").lower()
    jobs = sim.pending_jobs()
    if since is not None:  # "created" is whole seconds; _start (its epoch) saves parsing each job's
        cutoff = since.timestamp()
        jobs = [j for j in jobs if int(j.get("_start") or _parse_date(j["created"]).timestamp()) >= cutoff]
    if keyword:
        jobs = [j for j in jobs if keyword in j["cmd"].lower()]
    return [sim.render_job(j) for j in jobs]


def _parse_date(text: str) -> datetime | None:
    """CloudStack accepts dates as yyyy-MM-dd, yyyy-MM-dd HH:mm:ss or with 'T' and a zone."""
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise invalid_value(f"Unable to parse date {text} for parameter startdate: use yyyy-MM-dd'T'HH:mm:ssZ")


@finisher("deferred_error")
def _deferred_error(sim: Simulator, code: int, text: str) -> dict[str, Any]:
    """The job of a plain async command whose checks failed: CloudStack runs those checks in
    the job (ApiAsyncJobDispatcher), so the submit succeeds and the job fails with the code."""
    raise ApiError(code, text)
