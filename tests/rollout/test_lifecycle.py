"""`app stop|start|remove|details`, `accessory start|stop|restart|remove|upgrade`, `prune`: the
scripts run under a real /bin/sh against a `docker` that keeps state (tests/support/fakedocker.py),
so each test checks what runs and what is gone afterwards, as a user would see with `docker ps`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import loads_blueprint
from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout import lifecycle
from cloudstack_deploy.rollout.commands import lifecycle as lc
from cloudstack_deploy.rollout.deploy import Rollout
from cloudstack_deploy.rollout.history import DeployRecord
from tests.support import fakedocker as fd

from .test_commands import BLUEPRINT, INVENTORY, run_script

WEB = {"service": "demo", "role": "web", "destination": "demo"}


def _states(state_file: Path) -> dict[str, str]:
    return {c["name"]: c["state"] for c in fd.load(state_file)["containers"]}


def _web(version: str, state: str = "running") -> dict[str, object]:
    return fd.container(f"demo-web-{version}", state, f"app:{version}", **WEB, version=version)


def test_stop_stops_every_running_container_of_the_role_and_nothing_else(tmp_path: Path) -> None:
    env, st = fd.install(tmp_path, {"containers": [
        _web("v1", "exited"), _web("v2"), _web("v3"), fd.container("demo-db", accessory="db", service="demo"),
        fd.container("other-web-v1", service="other", role="web", destination="demo")]})
    res = run_script(lc.app_stop(WEB), env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert lc.parse(res.stdout) == {"demo-web-v3": "stopped", "demo-web-v2": "stopped"}
    assert _states(st) == {"demo-web-v1": "exited", "demo-web-v2": "exited", "demo-web-v3": "exited",
                           "demo-db": "running", "other-web-v1": "running"}
    again = run_script(lc.app_stop(WEB), env, tmp_path)
    assert again.returncode == 0 and lc.parse(again.stdout) == {} and lc.NONE in again.stdout


def test_start_starts_the_current_version_and_routes_kamal_proxy_to_it(tmp_path: Path) -> None:
    """The history's version, not the newest container (a rollback leaves a newer one stopped)."""
    bp = loads_blueprint(BLUEPRINT)
    env, st = fd.install(tmp_path, {"containers": [_web("v1", "exited"), _web("v2", "exited")]})
    script = lc.app_start(WEB, "demo-web-v1", role="web", service="demo-web", proxy=bp.roles["web"].proxy)
    res = run_script(script, env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert lc.parse(res.stdout) == {"demo-web-v1": "started", "demo-web": "routed"}
    assert _states(st) == {"demo-web-v1": "running", "demo-web-v2": "exited"}
    deploy = fd.load(st)["proxy"][0]
    assert deploy[:3] == ["deploy", "demo-web", "--target=demo-web-v1:8000"]
    # the history's version is gone: the newest container of the role
    run_script(lc.app_stop(WEB), env, tmp_path)
    res = run_script(lc.app_start(WEB, "demo-web-v9", role="web"), env, tmp_path)
    assert lc.parse(res.stdout) == {"demo-web-v2": "started"}


def test_start_with_nothing_there_and_a_refused_route_fail_with_their_own_codes(tmp_path: Path) -> None:
    bp = loads_blueprint(BLUEPRINT)
    env, st = fd.install(tmp_path, {"containers": [], "proxy_fails": ["deploy"]})
    res = run_script(lc.app_start(WEB, None, role="web"), env, tmp_path)
    assert res.returncode == lc.NOTHING_EXIT and "no container of role web on this host: deploy it first" in res.stderr
    env, st = fd.install(tmp_path, {"containers": [_web("v2", "exited")], "proxy_fails": ["deploy"]})
    res = run_script(lc.app_start(WEB, None, role="web", service="demo-web", proxy=bp.roles["web"].proxy),
                     env, tmp_path)
    assert res.returncode == lc.PROXY_REFUSED_EXIT
    assert "kamal-proxy refused demo-web-v2 (it keeps running): Error: deploy refused" in res.stderr
    assert _states(st) == {"demo-web-v2": "running"}


def test_remove_removes_the_role_containers_and_its_route_only(tmp_path: Path) -> None:
    env, st = fd.install(tmp_path, {"containers": [_web("v1", "exited"), _web("v2"),
                                                   fd.container("demo-redis", accessory="redis", service="demo")]})
    res = run_script(lc.app_remove(WEB, service="demo-web"), env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert lc.parse(res.stdout) == {"demo-web-v2": "removed", "demo-web-v1": "removed", "demo-web": "route removed"}
    assert _states(st) == {"demo-redis": "running"}
    assert fd.load(st)["proxy"] == [["remove", "demo-web"]]
    again = run_script(lc.app_remove(WEB), env, tmp_path)
    assert again.returncode == 0 and lc.parse(again.stdout) == {}


def test_details_lists_the_role_containers(tmp_path: Path) -> None:
    env, _ = fd.install(tmp_path, {"containers": [_web("v1", "exited"), _web("v2")]})
    res = run_script(lc.details(WEB), env, tmp_path)
    assert res.stdout.splitlines() == ["demo-web-v2\tapp:v2\trunning\tUp", "demo-web-v1\tapp:v1\texited\tExited"]


def test_prune_keeps_retain_versions_stopped_containers_and_used_images(tmp_path: Path) -> None:
    old = [_web(f"v{n}", "exited") for n in range(1, 8)]
    env, st = fd.install(tmp_path, {"containers": [*old, _web("v8")],
                                    "images": [f"app:v{n}" for n in range(1, 9)]})
    res = run_script(lc.prune([(WEB, "demo-web-v8", "app")], 5, {"service": "demo"}), env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert lc.parse(res.stdout) == {"containers": "2", "images": "2"}
    assert sorted(_states(st)) == [f"demo-web-v{n}" for n in range(3, 9)]
    assert fd.load(st)["images"] == [f"app:v{n}" for n in range(3, 9)]


def test_accessory_start_stop_restart_and_nothing_there(tmp_path: Path) -> None:
    env, st = fd.install(tmp_path, {"containers": [fd.container("demo-db", accessory="db")]})
    assert lc.parse(run_script(lc.accessory_simple("demo-db", "stop"), env, tmp_path).stdout) == {"demo-db": "stopped"}
    assert _states(st) == {"demo-db": "exited"}
    assert lc.parse(run_script(lc.accessory_simple("demo-db", "start"), env, tmp_path).stdout) == {"demo-db": "started"}
    assert lc.parse(run_script(lc.accessory_simple("demo-db", "restart"), env, tmp_path).stdout) == {
        "demo-db": "restarted"}
    assert _states(st) == {"demo-db": "running"}
    res = run_script(lc.accessory_simple("demo-gone", "start"), env, tmp_path)
    assert res.returncode == lc.NOTHING_EXIT and "no container demo-gone on this host" in res.stderr


def test_accessory_remove_keeps_the_data_unless_asked(tmp_path: Path) -> None:
    data = tmp_path / "data" / "pg"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    env, st = fd.install(tmp_path, {"containers": [fd.container("demo-db", accessory="db")], "volumes": ["demo-x"]})
    envfile = Path(env["HOME"]) / ".csdeploy/demo/env/db.env"
    envfile.parent.mkdir(parents=True)
    envfile.write_text("POSTGRES_PASSWORD=x\n")
    res = run_script(lc.accessory_remove("demo-db", env_file=".csdeploy/demo/env/db.env"), env, Path(env["HOME"]))
    assert res.returncode == 0, res.stderr
    assert lc.parse(res.stdout) == {"demo-db": "removed"} and _states(st) == {}
    assert (data / "PG_VERSION").exists() and fd.load(st)["volumes"] == ["demo-x"] and not envfile.exists()
    res = run_script(lc.accessory_remove("demo-db", env_file=".csdeploy/demo/env/db.env",
                                         data=[str(data), "demo-x", "/nowhere/at/all"]), env, Path(env["HOME"]))
    assert res.returncode == 0, res.stderr
    assert lc.parse(res.stdout) == {"demo-db": "none", str(data): "deleted", "demo-x": "deleted"}
    assert not data.exists() and fd.load(st)["volumes"] == []


# ---- the operations: selection, the lock, what goes where ---------------------------------------------

class _Conn:
    def __init__(self, host: object, pool: _Pool) -> None:
        self.host, self.pool = host, pool

    async def run(self, script: object, *, what: str = "", **kw: object) -> object:
        from cloudstack_deploy.rollout.hosts import Result
        self.pool.log.append((self.host.name, what))  # type: ignore[attr-defined]
        if what == "read the deploy history":
            return Result(0, self.pool.history, "")
        if what.startswith("app "):
            self.pool.scripts[self.host.name] = script.text()  # type: ignore[attr-defined]
            return Result(0, "demo-web-v2|stopped\n", "")
        return Result(0, "", "")


class _Pool:
    def __init__(self, history: str = "") -> None:
        self.history = history
        self.log: list[tuple[str, str]] = []
        self.scripts: dict[str, str] = {}

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def connect(self, host: object) -> _Conn:
        return _Conn(host, self)

    async def each(self, fn, hosts):  # type: ignore[no-untyped-def]
        return [await fn(await self.connect(h)) for h in hosts]


def _rollout(pool: _Pool) -> Rollout:
    r = Rollout(loads_blueprint(BLUEPRINT), INVENTORY, {}, Recorder())
    r.pool = lambda concurrency=20: pool  # type: ignore[method-assign]
    return r


def test_app_stop_takes_the_deploy_lock_and_acts_on_the_selected_role_only() -> None:
    pool = _Pool()
    result = asyncio.run(lifecycle.app(_rollout(pool), "stop", roles=("web",)))
    assert result.hosts == {"demo-web-1": {"demo-web-v2": "stopped"}}
    whats = [w for _, w in pool.log]
    assert whats[0].startswith("read the host's state (and take the deploy lock)")
    assert whats[-1] == "release the deploy lock" and "app stop web" in whats
    assert "demo-worker-1" not in pool.scripts


def test_app_start_uses_the_history_s_current_version() -> None:
    rec = DeployRecord(version="v7", status="ok").to_json()
    pool = _Pool(history=rec + "\n")
    asyncio.run(lifecycle.app(_rollout(pool), "start", roles=("web",)))
    assert "demo-web-v7" in pool.scripts["demo-web-1"]


def test_unknown_names_are_refused_before_any_host() -> None:
    pool = _Pool()
    with pytest.raises(InvalidInput, match="no role named nope"):
        asyncio.run(lifecycle.app(_rollout(pool), "stop", roles=("nope",)))
    with pytest.raises(InvalidInput, match="no app role runs on the selected hosts"):
        asyncio.run(lifecycle.app(_rollout(pool), "stop", hosts=("demo-db-1",)))
    with pytest.raises(InvalidInput, match="no accessory named 'nope'"):
        asyncio.run(lifecycle.accessory(_rollout(pool), "nope", "stop"))
    with pytest.raises(InvalidInput, match="--delete-data goes with `accessory remove`"):
        asyncio.run(lifecycle.accessory(_rollout(pool), "db", "stop", delete_data=True))
    assert pool.log == []


def test_accessory_data_sources_are_the_volume_sources() -> None:
    assert lifecycle.data_sources(("/data/pg:/var/lib/postgresql/data", "cache:/cache:ro")) == ["/data/pg", "cache"]


def test_removing_asks_first_and_refuses_without_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.cli import cli

    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path))
    res = cli("app", "remove", "--env", "demo")
    assert res.exit_code == 2 and "refusing without --yes" in res.output
    res = cli("accessory", "remove", "db", "--env", "demo", "--delete-data")
    assert res.exit_code == 2 and "AND DELETE ITS DATA: refusing without --yes" in res.output
