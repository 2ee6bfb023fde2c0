"""Maintenance mode: kamal-proxy's `stop` (503 with a message) on every proxy host, kept through a
deploy, shown by `status`.

kamal-proxy v0.9.2 (the lab's csdeploy-lab/kamal-proxy image; internal/cmd/stop.go and
resume.go of basecamp/kamal-proxy) keeps a stopped service stopped when a new target is
deployed, and across a restart; a service removed and deployed again (a host's first deploy)
runs. These scripts run under a real /bin/sh with a `docker` that records its argv.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import loads_blueprint
from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.render import status_text
from cloudstack_deploy.rollout import ops
from cloudstack_deploy.rollout.commands import facts
from cloudstack_deploy.rollout.commands import proxy as p
from cloudstack_deploy.rollout.contract import role_env
from cloudstack_deploy.rollout.hosts import Result
from cloudstack_deploy.rollout.stages import canary_split_script, proxy_switch_script
from tests.support.fakedocker import SHEBANG

from .test_commands import BLUEPRINT, INVENTORY, SECRETS, calls, run_script

HOSTILE = "Back at 5 'o clock; $(touch PWNED) `touch PWNED2` | \\ *"


@pytest.fixture
def shim(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """`docker` records its argv; `kamal-proxy stop|resume` of demo-gone fails (not served there)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "docker.log"
    (bindir / "docker").write_text(
        SHEBANG + "\nimport json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1:2] == ['exec'] and 'demo-gone' in sys.argv: sys.exit(1)\n"
        "if sys.argv[1:2] == ['inspect']: print('healthy running')\n")
    (bindir / "docker").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(home)}, log


def test_on_leaves_the_marker_and_stops_each_service_with_the_message_as_one_word(shim, tmp_path: Path) -> None:
    env, log = shim
    home = Path(env["HOME"])
    res = run_script(p.maintenance_on("demo", [("demo-web", 3.0), ("demo-gone", 30.0)], HOSTILE), env, home)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["maintenance|demo-web|on", "maintenance|demo-gone|none"]
    marker = home / ".csdeploy/demo/maintenance"
    assert marker.read_text() == HOSTILE + "\n" and oct(marker.stat().st_mode & 0o777) == "0o600"
    assert calls(log)[0] == ["exec", "kamal-proxy", "kamal-proxy", "stop", "demo-web", f"--message={HOSTILE}",
                             "--drain-timeout=3s"]
    assert not list(home.glob("PWNED*")) and not list(tmp_path.glob("PWNED*"))


def test_off_removes_the_marker_and_resumes(shim) -> None:
    env, log = shim
    home = Path(env["HOME"])
    run_script(p.maintenance_on("demo", [("demo-web", 3.0)], "m"), env, home)
    res = run_script(p.maintenance_off("demo", ["demo-web", "demo-gone"]), env, home)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["maintenance|demo-web|off", "maintenance|demo-gone|none"]
    assert not (home / ".csdeploy/demo/maintenance").exists()
    assert calls(log)[-2][:5] == ["exec", "kamal-proxy", "kamal-proxy", "resume", "demo-web"]


def test_the_facts_read_the_marker_and_its_message(shim) -> None:
    env, _ = shim
    home = Path(env["HOME"])
    script = facts.script(images=[], accessories=[], containers=[], mounts=[], maintenance=p.maintenance_file("demo"))
    assert facts.parse(run_script(script, env, home).stdout).maintenance is None
    run_script(p.maintenance_on("demo", [("demo-web", 3.0)], "back | soon"), env, home)
    assert facts.parse(run_script(script, env, home).stdout).maintenance == "back | soon"
    run_script(p.maintenance_on("demo", [("demo-web", 3.0)], ""), env, home)
    assert facts.parse(run_script(script, env, home).stdout).maintenance == ""


def test_a_switch_during_maintenance_stops_the_service_again_after_kamal_proxy_deploy(shim) -> None:
    """A host's first deploy (or one after `app remove`) creates the service running: the switch
    stops it again, and leaves the marker on a host that had none (a new host)."""
    env, log = shim
    home = Path(env["HOME"])
    bp = loads_blueprint(BLUEPRINT)
    web_env = role_env(bp, "web", INVENTORY, SECRETS, "v2")
    res = run_script(proxy_switch_script(bp, "demo", bp.roles["web"], "v2", web_env, maintenance=HOSTILE), env, home)
    assert res.returncode == 0, res.stderr
    words = [c[3] if c[:3] == ["exec", "kamal-proxy", "kamal-proxy"] else None for c in calls(log)]
    assert words.index("deploy") < words.index("stop")
    stop = calls(log)[words.index("stop")]
    assert stop[4:] == ["demo-web", f"--message={HOSTILE}", "--drain-timeout=30s"]
    assert (home / ".csdeploy/demo/maintenance").read_text() == HOSTILE + "\n"
    # not in maintenance: no stop
    log.unlink()
    run_script(proxy_switch_script(bp, "demo", bp.roles["web"], "v3", web_env), env, home)
    assert not [c for c in calls(log) if c[3:4] == ["stop"]]
    # a percentage canary's split keeps it too
    log.unlink()
    run_script(canary_split_script(bp, "demo", bp.roles["web"], "v3", web_env, percent=10, cookie="c",
                                   maintenance="m"), env, home)
    assert [c[3] for c in calls(log) if c[:3] == ["exec", "kamal-proxy", "kamal-proxy"]][-1] == "stop"


def test_a_long_or_multiline_message_is_refused_before_any_host() -> None:
    with pytest.raises(InvalidInput, match="one line"):
        ops.check_message("line one\nline two")
    with pytest.raises(InvalidInput, match="at most 500"):
        ops.check_message("x" * 501)
    assert ops.check_message("Back at 14:00 UTC") == "Back at 14:00 UTC"


class _Conn:
    def __init__(self, host: object, stdout: str) -> None:
        self.host, self.stdout = host, stdout

    async def run(self, script: object, **kw: object) -> Result:
        return Result(0, self.stdout, "")


class _Pool:
    def __init__(self, stdout: str) -> None:
        self.stdout = stdout

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def connect(self, host: object) -> _Conn:
        return _Conn(host, self.stdout)

    async def each(self, fn, hosts):  # type: ignore[no-untyped-def]
        return [await fn(await self.connect(h)) for h in hosts]


class _R:
    def __init__(self, stdout: str) -> None:
        self.bp = loads_blueprint(BLUEPRINT)
        self.inv = INVENTORY
        self.env = "demo"
        self.hosts = [h for h in INVENTORY.hosts if h.proxy]
        self._stdout = stdout

    def pool(self) -> _Pool:
        return _Pool(self._stdout)


def test_status_shows_maintenance_with_its_message() -> None:
    out = ops.status_script("demo").text()
    assert ".csdeploy/demo/maintenance" in out
    stdout = "::proxy\nService Host Target State\ndemo-web * demo-web-v1:8000 stopped\n::maintenance\nBack soon\n"
    hosts = asyncio.run(ops.status(_R(stdout)))  # type: ignore[arg-type]
    assert hosts[0].maintenance == "Back soon" and "stopped" in hosts[0].proxy_targets
    assert "MAINTENANCE: kamal-proxy answers 503 (Back soon)" in status_text(hosts)
    hosts = asyncio.run(ops.status(_R("::proxy\ndemo-web * demo-web-v1:8000 running\n")))  # type: ignore[arg-type]
    assert hosts[0].maintenance is None and "MAINTENANCE" not in status_text(hosts)


def test_maintenance_needs_a_proxy_host() -> None:
    r = _R("")
    r.inv = replace(INVENTORY, hosts=tuple(replace(h, proxy=False) for h in INVENTORY.hosts))
    with pytest.raises(InvalidInput, match="no proxy host"):
        asyncio.run(ops.maintenance(r, True, "m"))  # type: ignore[arg-type]


def test_maintenance_on_every_proxy_host_reports_each_service() -> None:
    out = asyncio.run(ops.maintenance(_R("maintenance|demo-web|on\n"), True, "m"))  # type: ignore[arg-type]
    assert out == {"demo-web-1": {"demo-web": "on"}}
    json.dumps(out)


def test_a_deploy_plan_keeps_maintenance_and_its_watch_only_reads_the_containers() -> None:
    """The watch's HTTP probes would get kamal-proxy's 503 and switch a good version back."""
    import dataclasses

    from cloudstack_deploy.progress import Recorder
    from cloudstack_deploy.rollout import plan as planning
    from cloudstack_deploy.rollout import runs
    from cloudstack_deploy.rollout.deploy import Rollout

    from .test_apps import ready_facts
    from .test_strategy import blueprint, inventory

    r = Rollout(blueprint("roles.web.count=2", "rollout.watch.duration=5"), inventory(2), SECRETS, Recorder())
    r.select(roles=("web",))
    got = ready_facts(r, "v1")
    opts = runs.RolloutOptions(version="v2")
    assert runs.plan(r, opts, "v2", got).maintenance is None
    got[r.inv.primary.name].maintenance = "Back soon"
    plan = runs.plan(r, opts, "v2", got)
    assert plan.maintenance == "Back soon"

    judged = [("web", h) for h in r.role_hosts("web")]
    during = planning.watch_targets(r.context(), plan, judged)
    after = planning.watch_targets(r.context(), dataclasses.replace(plan, maintenance=None), judged)
    assert during == [] and after


def test_the_cli_refuses_a_two_line_message_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.cli import cli

    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path))
    res = cli("maintenance", "on", "--env", "nowhere", "--message", "a\nb")
    assert res.exit_code == 2 and "--message must be one line" in res.output
    res = cli("maintenance", "off", "--env", "nowhere", "--message", "a")
    assert res.exit_code == 2 and "--message goes with `maintenance on`" in res.output
