"""`status` tells a host that runs two versions of a role (a deploy that lost the host while it
started the new one), and shows scheduled jobs' runs as such."""

from __future__ import annotations

import asyncio
import json

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


class _Conn:
    def __init__(self, host: object, pool: _Pool) -> None:
        self.host, self.pool = host, pool

    async def run(self, script: object, *, what: str = "", check: bool = True, read_only: bool = False,
                  timeout: float = 0) -> object:
        from cloudstack_deploy.rollout.hosts import Result
        self.pool.log.append((self.host.name, what))  # type: ignore[attr-defined]
        if what == "read the deploy state":
            return Result(0, self.pool.state, "")
        if what == "status" and self.host.name == "demo-worker-1":  # type: ignore[attr-defined]
            rows = [{"Names": f"demo-worker-{v}", "Labels": f"service=demo,role=worker,version={v}",
                     "State": "running", "Status": "Up", "Image": "x"} for v in ("v2", "v1")]
            return Result(0, "\n".join(json.dumps(r) for r in rows) + "\n::proxy\n", "")
        return Result(0, "::proxy\n", "")


class _Pool:
    def __init__(self, state: str) -> None:
        self.state = state
        self.log: list[tuple[str, str]] = []

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def connect(self, host: object) -> _Conn:
        return _Conn(host, self)


def _status(state: str) -> tuple[list[HostStatus], _Pool]:
    from cloudstack_deploy.progress import Recorder
    from cloudstack_deploy.rollout import ops
    from cloudstack_deploy.rollout.deploy import Rollout

    from .test_commands import SECRETS
    from .test_strategy import blueprint, inventory
    r = Rollout(blueprint(), inventory(1), SECRETS, Recorder())
    pool = _Pool(state)
    r.pool = lambda *a, **k: pool  # type: ignore[method-assign]
    return asyncio.run(ops.status(r)), pool


def test_status_ends_a_leftover_when_the_history_says_which_version_runs() -> None:
    """The worker's host came back after a failed deploy with v1 and v2 running: the history
    says v1 (the last good deploy), no deploy holds the lock: v2 is stopped and said so."""
    history = json.dumps({"version": "v1", "status": "ok"}) + "\n" + json.dumps({"version": "v2", "status": "failed"})
    hosts, pool = _status(history + "\n")
    worker = next(h for h in hosts if h.name == "demo-worker-1")
    assert ("demo-worker-1", "stop leftover worker") in pool.log
    assert worker.warnings == ["stopped demo-worker-v2: left over beside v1, which the history says role worker runs"]


def test_status_only_warns_while_a_deploy_holds_the_lock() -> None:
    history = json.dumps({"version": "v1", "status": "ok"})
    hosts, pool = _status("::locked\n" + history + "\n")
    worker = next(h for h in hosts if h.name == "demo-worker-1")
    assert not any(w.startswith("stop leftover") for _, w in pool.log)
    assert worker.warnings and worker.warnings[0].startswith("role worker runs 2 versions here")
