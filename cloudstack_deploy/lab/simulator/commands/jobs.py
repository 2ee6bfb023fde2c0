"""Async job queries."""

from __future__ import annotations

from typing import Any

from ..engine import Simulator
from ..registry import Param, Request, command


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
