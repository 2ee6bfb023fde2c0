"""The rollout's plan (rollout/plan.py), built by one pure function from the hosts' facts, as
provisioning's is from the cloud's: what each host's preparation takes and which app steps
follow, with their scripts; and `deploy --dry-run` printing it against a real SSH host.

The facts here are built in the test (no host, no pool): `plan.build` must not need one."""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout import apps, runs
from cloudstack_deploy.rollout import plan as planning
from cloudstack_deploy.rollout.canary import CanaryState
from cloudstack_deploy.rollout.commands import hardening
from cloudstack_deploy.rollout.commands.facts import HostFacts
from cloudstack_deploy.rollout.contract import accessory_env
from cloudstack_deploy.rollout.deploy import Rollout
from cloudstack_deploy.rollout.stages import accessory_hash
from cloudstack_deploy.rollout.strategy import CanarySpec
from tests.support.cli import cli_here

from .test_apps import Pool
from .test_commands import SECRETS
from .test_interactive import TOKEN
from .test_interactive import host as host  # noqa: F401 (fixture)
from .test_strategy import blueprint, inventory


def csdeploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in process: what these tests check is the plan it prints, not the process."""
    return cli_here(*args, env=env)

APP = "registry.lab:5000/demo-app"
PROXY = "basecamp/kamal-proxy:v0.9.2"
PASSWORD = "pg-" + "s3cr3t:/@"


def rollout(n: int = 2, *sets: str) -> Rollout:
    r = Rollout(blueprint(f"roles.web.count={n}", *sets), inventory(n, lb=True), SECRETS, Recorder())
    r.select()
    return r


def fresh(r: Rollout) -> dict[str, HostFacts]:
    """Every host as a new VM: nothing installed."""
    return {h.name: HostFacts() for h in r.inv.hosts}


def running(r: Rollout, version: str, *, pulled: tuple[str, ...] = ()) -> dict[str, HostFacts]:
    """Every host after a deploy of ``version``, with the app at ``pulled`` versions present too."""
    out = {}
    for h in r.inv.hosts:
        images = {f"{APP}:{v}": "sha256:" + v for v in (version, *pulled)}
        images[PROXY] = "sha256:p"
        images.update({r.bp.accessories[a].image: "sha256:a" for a in h.accessories})
        acc = {}
        for name in h.accessories:
            tuned = planning.tuned_accessory(r.bp, name, HostFacts())
            acc[f"demo-{name}"] = (accessory_hash(tuned, accessory_env(tuned, SECRETS), h.private_ip), "running")
        out[h.name] = HostFacts(docker=True, network=True, images=images,
                                service_label={f"{APP}:{v}": "demo" for v in (version, *pulled)},
                                proxy="running" if h.proxy else "", accessories=acc,
                                running={h.role: [f"demo-{h.role}-{version}"]} if h.app_role else {},
                                hardening=hardening.wanted(r.bp.hosts, *r.host_slot(h)))
    return out


def build(r: Rollout, facts: dict[str, HostFacts], version: str = "v2", **opts: object) -> planning.RolloutPlan:
    return runs.rollout_plan(r, runs.RolloutOptions(version=version, **opts), version, facts,  # type: ignore[arg-type]
                             [h for h in r.hosts if h.name in r._selected], cookie="csdeploy-c00c1e")


def stages(rp: planning.RolloutPlan, host: str, *, on_failure: bool = False) -> list[tuple[str, str | None]]:
    return [(s.stage, s.role) for s in rp.host(host).steps if s.on_failure == on_failure]


class NoPool:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the plan touched the pool ({name})")


def test_the_plan_is_a_function_of_its_inputs_and_touches_no_host() -> None:
    """Same facts in, equal plans out (scripts included); the rollout's pool is never used."""
    r = rollout()
    r.pool = NoPool  # type: ignore[assignment,method-assign]
    facts = running(r, "v1")
    one, two = build(r, facts), build(r, running(r, "v1"))
    assert one == two
    assert [s.script.text() for s in one.steps()] == [s.script.text() for s in two.steps()]
    later = build(r, {**facts, "demo-web-2": replace(facts["demo-web-2"], running={"web": []})})
    assert later != one, "different facts, a different plan"
    assert later.apps is not None and later.apps.previous[("web", "demo-web-2")] is None


def test_a_first_deploy_installs_pulls_boots_the_proxy_and_switches_every_host() -> None:
    r = rollout()
    rp = build(r, fresh(r), version="v1")
    for name in ("demo-web-1", "demo-web-2"):
        work = rp.work(name)
        assert work.install == "apt" and work.network and work.proxy
        assert f"{APP}:v1" in work.pulls and PROXY in work.pulls and work.check_images == (f"{APP}:v1",)
        assert stages(rp, name) == [("prepare", None), ("switch", "web"), ("stop old", "web")]
        assert "docker pull" in rp.host(name).step("prepare").script.text()
    assert rp.work("demo-worker-1").pulls == (f"{APP}:v1",)
    assert stages(rp, "demo-worker-1") == [("prepare", None), ("start", "worker"), ("stop old", "worker")]
    assert rp.work("demo-db-1").accessories == ("db",) and stages(rp, "demo-db-1") == [("prepare", None)]
    assert rp.apps is not None and rp.apps.groups == {"web": [[r.inv.host("demo-web-1"), r.inv.host("demo-web-2")]]}, \
        "hosts that serve nothing yet switch together, first"
    assert stages(rp, "demo-web-1", on_failure=True) == [("switch back", "web")]
    assert rp.host("demo-web-1").step("switch back").what == "switch web back to nothing"


def test_a_redeploy_with_v2_pulled_already_plans_no_pull_and_switches_in_batches() -> None:
    r = rollout()
    rp = build(r, running(r, "v1", pulled=("v2",)))
    for hp in rp.hosts:
        assert not hp.work.needed, hp.name
        assert not hp.work.pulls
    assert "docker pull" not in "".join(s.script.text() for s in rp.steps())
    assert rp.apps is not None
    assert [[h.name for h in g] for g in rp.apps.groups["web"]] == [["demo-web-1"], ["demo-web-2"]], \
        "behind a load balancer: one at a time"
    step = rp.host("demo-web-2").step("switch", "web")
    assert (step.batch, step.batches, step.what) == (2, 2, "switch web v2")
    assert rp.host("demo-web-1").step("switch back").what == "switch web back to demo-web-v1"
    assert "kamal-proxy deploy demo-web --target=demo-web-v2:8000" in rp.host("demo-web-1").step("switch").script.text()
    without = build(r, running(r, "v1"))
    assert without.work("demo-web-1").pulls == (f"{APP}:v2",), "not pulled yet: one pull, the new version only"


def test_a_host_canary_plans_only_its_hosts_and_no_commit() -> None:
    r = rollout(3)
    spec = CanarySpec(hosts=1)
    chosen = runs.choose_canary(r, spec)
    facts = running(r, "v1")
    rp = runs.rollout_plan(r, runs.RolloutOptions(version="v2", canary=spec), "v2", facts, chosen)
    assert [hp.name for hp in rp.hosts] == ["demo-web-1"]
    assert stages(rp, "demo-web-1") == [("prepare", None), ("switch", "web")]
    assert rp.apps is not None and not rp.apps.commit and rp.apps.worker_groups == {}


def test_a_percentage_canary_splits_with_the_cookie_it_is_given() -> None:
    r = rollout()
    spec = CanarySpec(percent=10)
    runs.choose_canary(r, spec)
    targets = [h for h in r.hosts if h.name in r._selected]
    rp = runs.rollout_plan(r, runs.RolloutOptions(version="v2", canary=spec), "v2", running(r, "v1"), targets,
                           cookie="csdeploy-given")
    assert rp.apps is not None and rp.apps.split == (10, "csdeploy-given")
    step = rp.host("demo-web-1").step("split", "web")
    assert "csdeploy-given" in step.script.text() and step.what == "split 10% web v2"
    assert stages(rp, "demo-web-1", on_failure=True) == [("end split", "web")]


def test_a_rollback_to_a_version_still_on_the_hosts_plans_no_registry() -> None:
    r = rollout(2, "registry.server=registry.lab:5000", "registry.username=ci",
                "registry.password=REGISTRY_PASSWORD")
    r.images = {"web": f"{APP}:v1", "worker": f"{APP}:v1"}
    facts = running(r, "v2", pulled=("v1",))
    rp = build(r, facts, version="v1", kind="rollback")
    assert rp.kind == "rollback"
    text = "".join(s.script.text() for s in rp.steps())
    assert "docker login" not in text and "docker pull" not in text
    assert SECRETS["REGISTRY_PASSWORD"] not in text
    assert stages(rp, "demo-web-1") == [("switch", "web"), ("stop old", "web")]
    gone = {**facts, "demo-web-1": replace(facts["demo-web-1"], images={PROXY: "sha256:p"})}
    again = build(r, gone, version="v1", kind="rollback")
    assert again.work("demo-web-1").pulls == (f"{APP}:v1",)
    assert "docker login" in again.host("demo-web-1").step("prepare").script.text(), "pulling needs the registry"


def test_an_abort_plans_each_canary_host_back_and_nothing_else() -> None:
    r = rollout(3)
    paused = CanaryState(version="v2", mode="hosts", hosts=["demo-web-1"])
    facts = running(r, "v1")
    facts["demo-web-1"] = replace(facts["demo-web-1"], running={"web": ["demo-web-v2", "demo-web-v1"]})
    rp = runs.rollout_plan(r, runs.RolloutOptions(version="v2", kind="abort", paused=paused), "v2", facts,
                           list(r.hosts))
    assert [(s.host, s.stage, s.on_failure) for s in rp.steps()] == [("demo-web-1", "switch back", False)]
    assert rp.host("demo-web-1").step("switch back").what == "switch web back to demo-web-v1"


def test_the_plan_as_json_has_stable_keys_and_no_secret() -> None:
    r = rollout()
    rp = build(r, fresh(r), version="v1")
    data = rp.to_dict()
    assert list(data) == ["kind", "version", "hosts", "switch", "already", "workers", "watch", "commit", "canary",
                          "reboot", "notes"]
    web = data["hosts"][0]
    assert list(web) == ["name", "role", "roles", "prepare", "previous", "serving", "steps"]
    assert web["prepare"]["pull"][0] == f"{APP}:v1" and web["prepare"]["proxy"] is True
    assert [s["stage"] for s in web["steps"]] == ["prepare", "switch", "stop old", "switch back"]
    assert data["switch"] == {"web": [["demo-web-1", "demo-web-2"]]} and data["workers"] == {"worker": [["demo-worker-1"]]}
    text = json.dumps(rp.to_dict(scripts=True))
    assert "docker pull" in text
    plain = json.dumps(data)
    for value in SECRETS.values():
        assert value not in plain


# ---- deploy --dry-run through the CLI, against a host over SSH ---------------------------------------
@pytest.mark.parametrize("scripts", [False, True])
def test_deploy_dry_run_json_prints_the_plan_from_the_host_and_changes_nothing(host, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                              scripts: bool) -> None:
    ssh, env = host
    env = {**env, "API_TOKEN": TOKEN, "POSTGRES_PASSWORD": PASSWORD}
    before = ssh.docker_state()
    res = csdeploy(env, "deploy", str(tmp_path / "blueprint.yml"), "--env", "demo", "--version", "v2", "--dry-run", "--json",
                   *(["--scripts"] if scripts else []))
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["dry_run"] is True and plan["kind"] == "deploy" and plan["version"] == "v2"
    (web,) = [h for h in plan["hosts"] if h["role"] == "web"]
    assert web["previous"] == "demo-web-v1"
    assert f"{APP}:v2" in web["prepare"]["pull"], "v2 is not on the host: pulled"
    assert [s["stage"] for s in web["steps"] if not s["on_failure"]] == ["prepare", "switch", "stop old"]
    assert ("scripts" in plan) == scripts
    if scripts:
        whats = [s["what"] for s in plan["scripts"]]
        assert "take the deploy lock" in whats and "switch web v2" in whats
    after = ssh.docker_state()
    assert after["containers"] == before["containers"], "a dry run changes nothing"
    assert not any(c[0] in ("run", "pull", "stop", "rm") for c in after["calls"])
    assert not (ssh.home / ".csdeploy/demo/lock").exists()
    assert TOKEN not in res.stdout + res.stderr and PASSWORD not in res.stdout + res.stderr


def test_deploy_dry_run_text_shows_each_host_and_stage(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, env = host
    env = {**env, "API_TOKEN": TOKEN, "POSTGRES_PASSWORD": PASSWORD}
    blueprint_file = str(tmp_path / "blueprint.yml")
    res = csdeploy(env, "deploy", blueprint_file, "--env", "demo", "--version", "v2", "--dry-run")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "deploy v2 --dry-run: nothing was changed" in out
    assert "  switch:   web to v2, batch 1/1 (serves demo-web-v1 now)" in out
    assert f"pull {APP}:v2" in out
    assert "### " not in out, "scripts only with --scripts or -v"
    verbose = csdeploy(env, "-v", "deploy", blueprint_file, "--env", "demo", "--version", "v2", "--dry-run")
    assert verbose.returncode == 0, verbose.stderr
    assert "### demo-web-1: switch web v2" in verbose.stdout and "### demo-web-1: take the deploy lock" in verbose.stdout
    assert "[REDACTED]" in verbose.stdout, "the env file's secret line is shown, redacted"
    assert TOKEN not in verbose.stdout + verbose.stderr


def test_a_prepare_only_plan_is_carried_out_on_its_host_alone() -> None:
    """`accessory reboot` (and `accessory upgrade`) hand the executor a plan of one host's
    preparation, no app steps: that host's prepare runs, with the accessory forced."""
    r = rollout()
    db = r.inv.host("demo-db-1")
    facts = running(r, "v1")
    rp = planning.build(r.context(), facts, [db], reboot=("db",), user=r.inv.ssh.user)
    assert rp.apps is None and [hp.name for hp in rp.hosts] == ["demo-db-1"]
    assert rp.work("demo-db-1").accessories == ("db",) and not rp.work("demo-db-1").pulls
    pool = Pool(set())
    asyncio.run(apps.converge(r, pool, rp))  # type: ignore[arg-type]
    assert pool.log == [("demo-db-1", "prepare (db)")]
    assert planning.build(r.context(), facts, [db], user=r.inv.ssh.user).hosts[0].steps == (), \
        "not asked for and unchanged: nothing to do"
