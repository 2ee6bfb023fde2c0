"""listAsyncJobs as the `cs` client gets it from CloudStack: what csdeploy's job watcher reads.

Checked against CloudStack's source: ListAsyncJobsCmd (startdate, a DATE, plus the list
parameters), QueryManagerImpl.searchForAsyncJobsInternal (``created >= startdate``, sorted by
id, removed rows skipped: completeAsyncJob marks a finished job removed), AsyncJobResponse
and BaseResponse (jobid, jobstatus, cmd, userid, accountid, jobinstancetype/-id, created;
jobresult only once there is one).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from cs import CloudStack

from .cloudkit import catalog, network, vm_params, wait_job


def _date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


@pytest.mark.simulator(vm_boot_seconds=2)
def test_pending_jobs_since_a_date_with_the_fields_a_client_reads(cs: CloudStack, cs_raw: CloudStack) -> None:
    cat = catalog(cs)
    net = network(cs, cat)
    before = time.time() - 1
    jobs = [cs_raw.deployVirtualMachine(**vm_params(cat, net, f"vm-{i}"))["jobid"] for i in range(3)]
    listed = cs_raw.listAsyncJobs(startdate=_date(before))["asyncjobs"]
    assert [j["jobid"] for j in listed] == jobs
    for job in listed:
        assert job["jobstatus"] == 0 and "jobresult" not in job, job
        assert job["cmd"].startswith("org.apache.cloudstack.api.command.") and job["cmd"].endswith("Cmd"), job
        assert {"userid", "jobinstancetype", "jobinstanceid", "created"} <= set(job), job
        assert job["jobinstancetype"] == "VirtualMachine"
    assert cs_raw.listAsyncJobs(startdate=_date(time.time() + 60)) == {}, "none created after that date"
    assert cs_raw.listAsyncJobs(startdate=_date(before)[:10])["count"] == 3  # yyyy-MM-dd too
    done = wait_job(cs_raw, jobs[0])
    assert done["jobstatus"] == 1 and "virtualmachine" in done["jobresult"]  # queried: with its result
    assert jobs[0] not in [j["jobid"] for j in cs_raw.listAsyncJobs(startdate=_date(before)).get("asyncjobs", [])]
