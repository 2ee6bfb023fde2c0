"""`status` tells a host that runs two versions of a role (a deploy that lost the host while it
started the new one), and shows scheduled jobs' runs as such."""

from __future__ import annotations

from cloudstack_deploy.render import status_text
from cloudstack_deploy.rollout.ops import HostStatus


def _c(name: str, version: str | None, role: str, state: str = "running") -> dict[str, object]:
    return {"name": name, "version": version, "role": role, "state": state, "status": "Up 3 minutes", "image": "x"}


def test_two_running_versions_of_a_role_on_one_host_are_a_warning() -> None:
    st = HostStatus("demo-worker-1", "worker", "127.0.0.9", containers=[
        _c("demo-worker-v2", "v2", "worker"), _c("demo-worker-v1", "v1", "worker"),
        _c("demo-worker-v0", "v0", "worker", state="exited"), _c("demo-db", None, "db")])
    st.find_leftovers()
    assert st.warnings == ["role worker runs 2 versions here (v2, v1): a deploy or rollback stops all but the one "
                           "it runs"]
    assert "  warning: role worker runs 2 versions here" in status_text([st])


def test_one_version_per_role_and_job_runs_are_no_warning() -> None:
    st = HostStatus("demo-web-1", "web", "127.0.0.8", containers=[
        _c("demo-web-v2", "v2", "web"), _c("demo-web-v1", "v1", "web", state="exited"),
        _c("demo-web-job-tick-202612061530", None, "job web.tick", state="exited")])
    st.find_leftovers()
    assert st.warnings == [] and "warning" not in status_text([st])
