"""Async job queries."""

from __future__ import annotations

from typing import Any

from ..engine import Simulator
from ..errors import ApiError
from ..registry import Param, Request, command, finisher


@command("queryAsyncJobResult", Param("jobid", "uuid", required=True, entity="jobs"), kind="raw")
def query_async_job_result(sim: Simulator, req: Request) -> dict[str, Any]:
    """Retrieves the current status of asynchronous job."""
    job = sim.get("jobs", req.get("jobid"))
    assert job is not None
    return sim.render_job(job)


@command("listAsyncJobs", Param("startdate", "date"), key="asyncjobs", listing=True)
def list_async_jobs(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all pending asynchronous jobs for the account."""
    jobs = sorted(sim.col("jobs").values(), key=lambda j: j["created"])
    return [sim.render_job(j) for j in jobs]


@finisher("deferred_error")
def _deferred_error(sim: Simulator, code: int, text: str) -> dict[str, Any]:
    """The job of a plain async command whose checks failed: CloudStack runs those checks in
    the job (ApiAsyncJobDispatcher), so the submit succeeds and the job fails with the code."""
    raise ApiError(code, text)
