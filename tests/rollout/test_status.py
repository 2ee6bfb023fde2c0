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
        name = self.host.name  # type: ignore[attr-defined]
        self.pool.log.append((name, what))
        self.pool.scripts.append((name, what, script.text() if hasattr(script, "text") else str(script)))
        if what == "read the deploy state":
            return Result(0, self.pool.state, "")
        if what == "status" and name in self.pool.running:
            role, versions = self.pool.running[name]
            rows = [{"Names": f"demo-{role}-{v}", "Labels": f"service=demo,role={role},version={v}",
                     "State": "running", "Status": "Up", "Image": "x"} for v in versions]
            return Result(0, "\n".join(json.dumps(r) for r in rows) + "\n::proxy\n" + self.pool.proxy.get(name, ""), "")
        return Result(0, "::proxy\n", "")


class _Pool:
    def __init__(self, state: str, running: dict[str, tuple[str, tuple[str, ...]]] | None = None,
                 proxy: dict[str, str] | None = None) -> None:
        self.state = state
        self.running = running if running is not None else {"demo-worker-1": ("worker", ("v2", "v1"))}
        self.proxy = proxy or {}
        self.log: list[tuple[str, str]] = []
        self.scripts: list[tuple[str, str, str]] = []

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def connect(self, host: object) -> _Conn:
        return _Conn(host, self)


def _status(state: str, **pool_args: object) -> tuple[list[HostStatus], _Pool]:
    from cloudstack_deploy.progress import Recorder
    from cloudstack_deploy.rollout import ops
    from cloudstack_deploy.rollout.deploy import Rollout

    from .test_commands import SECRETS
    from .test_strategy import blueprint, inventory
    r = Rollout(blueprint(), inventory(1), SECRETS, Recorder())
    pool = _Pool(state, **pool_args)  # type: ignore[arg-type]
    r.pool = lambda *a, **k: pool  # type: ignore[method-assign]
    return asyncio.run(ops.status(r)), pool


HISTORY = json.dumps({"version": "v1", "status": "ok"}) + "\n" + json.dumps({"version": "v2", "status": "failed"}) + "\n"


def _locked(lease_age: int, **owner: object) -> str:
    """What the primary prints while a deploy holds the lock (facts.deploy_state)."""
    data = {"user": "ci", "host": "elsewhere", "version": "v2", "since": 1, "ttl": 900, "pid": 4242,
            "machine": "another/machine/ns", "lease": 45, "id": "ab" * 16, **owner}
    return f"::locked\n{json.dumps(data)}\nlease-age {lease_age}\n::history\n" + HISTORY


# `kamal-proxy list` as kamal-proxy 0.9 prints it (colours removed): padded columns, the Path
# column empty for a service without a path prefix
PROXY_V2 = ("Service   Host  Path  Target            State    TLS  \n"
            "demo-web  *           demo-web-v2:8000  running  no   \n")
PROXY_V1 = PROXY_V2.replace("demo-web-v2", "demo-web-v1")


def test_status_ends_a_leftover_when_the_history_says_which_version_runs() -> None:
    """The worker's host came back after a failed deploy with v1 and v2 running: the history
    says v1 (the last good deploy), no deploy holds the lock: v2 is stopped and said so."""
    hosts, pool = _status("::history\n" + HISTORY)
    worker = next(h for h in hosts if h.name == "demo-worker-1")
    assert ("demo-worker-1", "stop leftover worker") in pool.log
    assert worker.warnings == ["stopped demo-worker-v2: left over beside v1, which the history says role worker runs"]


def test_status_only_warns_while_a_deploy_holds_the_lock() -> None:
    hosts, pool = _status(_locked(3))
    worker = next(h for h in hosts if h.name == "demo-worker-1")
    assert not any(w.startswith("stop leftover") for _, w in pool.log)
    assert worker.warnings and worker.warnings[0].startswith("role worker runs 2 versions here")


def test_a_lock_whose_holder_is_gone_does_not_keep_status_from_ending_leftovers() -> None:
    """The deploy failed on a host it could not reach, which was also the primary: it could not
    release its lock there. Its lease is 90 s old (renewed every 10 s while it lives): status
    ends the leftover and says who still holds the lock."""
    hosts, pool = _status(_locked(90))
    assert ("demo-worker-1", "stop leftover worker") in pool.log
    primary = next(h for h in hosts if h.name == "demo-web-1")
    assert any("deploy lock is still held by ci@elsewhere deploying v2, which is gone (its lease was last "
               "renewed 90 s ago" in w for w in primary.warnings), primary.warnings


def test_a_web_host_whose_proxy_switched_to_the_leftover_is_switched_back_first() -> None:
    """The web host was paused while its kamal-proxy switched to v2 and the deploy failed; once
    it runs again kamal-proxy routes to v2 and v1 runs beside it, the history says v1. Stopping
    v2 would leave kamal-proxy routing to a stopped container: status switches kamal-proxy back
    to v1 (health-checked, as a failed deploy does) and removes v2."""
    hosts, pool = _status("::history\n" + HISTORY, running={"demo-web-1": ("web", ("v2", "v1"))},
                          proxy={"demo-web-1": PROXY_V2})
    web = next(h for h in hosts if h.name == "demo-web-1")
    assert ("demo-web-1", "switch web back to v1") in pool.log
    assert ("demo-web-1", "stop leftover web") not in pool.log
    script = next(text for name, what, text in pool.scripts if what == "switch web back to v1")
    assert "kamal-proxy deploy demo-web --target=demo-web-v1:8000" in script
    assert "docker rm --force demo-web-v2" in script
    assert web.warnings == ["switched kamal-proxy back to demo-web-v1 and removed demo-web-v2: left over by a deploy "
                            "that lost this host; the history says role web runs v1"]
    assert [c["name"] for c in web.containers] == ["demo-web-v1"]


def test_a_web_host_whose_proxy_routes_to_the_current_version_only_stops_the_leftover() -> None:
    hosts, pool = _status("::history\n" + HISTORY, running={"demo-web-1": ("web", ("v2", "v1"))},
                          proxy={"demo-web-1": PROXY_V1})
    assert ("demo-web-1", "stop leftover web") in pool.log
    assert not any(what.startswith("switch") for _, what in pool.log)


def test_nothing_is_stopped_on_a_web_host_whose_proxy_routes_elsewhere_or_says_nothing() -> None:
    """kamal-proxy down (no table) or routing to a container status does not know: stopping
    either version could leave the host serving nothing, so both stay and status says why."""
    for proxy in ("", PROXY_V2.replace("demo-web-v2", "demo-web-v7")):
        hosts, pool = _status("::history\n" + HISTORY, running={"demo-web-1": ("web", ("v2", "v1"))},
                              proxy={"demo-web-1": proxy})
        web = next(h for h in hosts if h.name == "demo-web-1")
        assert not any(what.startswith(("stop leftover", "switch")) for _, what in pool.log), pool.log
        assert any("left as it is" in w for w in web.warnings), web.warnings


def test_kamal_proxy_list_is_read_by_its_columns() -> None:
    from cloudstack_deploy.rollout.ops import routed

    table = ("Service        Host             Path    Target                       State    TLS  \n"
             "demo-docs      docs.example     /docs   demo-docs-v3:8080            running  yes  \n"
             "demo-web       *                        demo-web-v1:8000,demo-web-v2:8000  running  no   \n")
    # widths as kamal-proxy computes them: the longest cell of each column
    rows = [["Service", "Host", "Path", "Target", "State", "TLS"],
            ["demo-docs", "docs.example", "/docs", "demo-docs-v3:8080", "running", "yes"],
            ["demo-web", "*", "", "demo-web-v1:8000,demo-web-v2:8000", "running", "no"]]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    table = "".join("".join(c.ljust(w) + "  " for c, w in zip(r, widths, strict=True)) + "\n" for r in rows)
    assert routed(table) == {"demo-docs": ["demo-docs-v3"], "demo-web": ["demo-web-v1", "demo-web-v2"]}
    assert routed("") == {} and routed("kamal-proxy: dial unix: no such file\n") == {}
