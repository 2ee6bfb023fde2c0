"""`csdeploy nightly` on the lab, as a CI job runs it: the CLI as a subprocess, real VMs,
kamal-proxy, the demo app; the JUnit file read back with junitparser (a CI system's view)
and the cloud checked with the `cs` client.

  a. a nightly killed with SIGKILL half-way leaves its environment (TTL 1m) behind
  b. the next nightly of the demo: its reap removes that environment once expired; create,
     deploy, HTTP checks through the proxy host and a command in the web container pass;
     the JUnit file says so; the environment is torn down; the history store has it all
  c. a nightly of version `broken` fails: the JUnit failure text carries the health check's
     answer, the checks are skipped, it still tears down and exits 1

Environment names are ``e2e-nightly-MMDD-xxx``; whatever of them is left is torn down at the
end of the module, whatever happened.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from junitparser import Failure, JUnitXml, Skipped

from tests.support.cli import cli_argv

from .conftest import REPO, Lab

PREFIX = "e2e-nightly"
BLUEPRINT = str(REPO / "blueprints" / "demo.yml")
#: the killed nightly is killed once its progress says a VM was created: half-way through its
#: create-env (before SSH, the rollout and the checks), its environment in the cloud by then.
#: (A kill after a fixed 35 s found no environment at all once in CI, at load average 9: the
#: run had not created its network yet.)
HALF_WAY = re.compile(r"^\[[ \d.]+s\] (\[[^]]+\] )?vm \S+: create done")
HALF_WAY_DEADLINE = 300.0  # seconds: a nightly that never gets there fails the test
CHECKS = ("--check", "GET / 200 demo v1", "--check", "GET /up 200",
          "--check-cmd", "web:python3 -c 'print(6 * 7)'")

pytestmark = pytest.mark.story


@dataclass
class Story:
    lab: Lab
    tmp: Path
    killed: str = ""
    passed: dict[str, Any] = field(default_factory=dict)


def ours(lab: Lab) -> dict[str, dict[str, Any]]:
    return {e["env"]: e for e in lab.csdeploy("envs", "--json").json() if e["env"].startswith(PREFIX + "-")}


def in_cloud(lab: Lab, env: str) -> list[str]:
    """What a `cs` user still sees of ``env``: tagged resources and its network and key pair."""
    cs = lab.cs()
    left = [f"{t['resourcetype']} {t['resourceid']}" for t in
            cs.listTags(listall=True, key="csdeploy:env", value=env).get("tag", [])]
    left += [f"network {n['name']}" for n in cs.listNetworks(listall=True).get("network", [])
             if n["name"] == f"csdeploy-{env}"]
    left += [f"keypair {k['name']}" for k in cs.listSSHKeyPairs(listall=True).get("sshkeypair", [])
             if k["name"] == f"csdeploy-{env}"]
    return left


@pytest.fixture(scope="module")
def story(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    try:
        yield Story(lab, tmp_path_factory.mktemp("nightly"))
    finally:
        for env in ours(lab):
            done = lab.csdeploy("teardown", "--env", env, "--yes", "--progress", "plain", check=False)
            assert done.code == 0, f"final teardown of {env} failed\n" + done.explain()


def cases(junit: Path) -> tuple[Any, dict[str, Any]]:
    suite = next(iter(JUnitXml.fromfile(str(junit))))
    return suite, {c.name: c for c in suite}


def test_a_a_killed_nightly_leaves_its_environment(story: Story) -> None:
    before = set(ours(story.lab))
    argv = cli_argv("nightly", BLUEPRINT, "--prefix", PREFIX, "--version", "v1", "--ttl", "1m",
                    "--progress", "plain")
    proc = subprocess.Popen(argv, cwd=REPO, env=story.lab.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = threading.Timer(HALF_WAY_DEADLINE, proc.kill)
    deadline.start()
    said: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            said.append(line)
            if HALF_WAY.match(line):
                break
    finally:
        deadline.cancel()
        proc.kill()  # SIGKILL, half-way (or at the deadline)
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert said and HALF_WAY.match(said[-1]), "the nightly never said a VM was created:\n" + "".join(said[-40:])
    assert proc.returncode == -signal.SIGKILL
    left = set(ours(story.lab)) - before
    assert len(left) == 1, f"the killed nightly should leave one environment, found {left}"
    story.killed = left.pop()
    assert in_cloud(story.lab, story.killed), "the killed nightly's environment is not in the cloud"


def test_b_the_next_nightly_reaps_it_and_the_demo_passes(story: Story) -> None:
    lab = story.lab
    end = time.monotonic() + 120
    while not ours(lab)[story.killed]["expired"]:  # TTL 1m from its creation
        assert time.monotonic() < end, f"{story.killed} did not expire"
        time.sleep(3)
    junit = story.tmp / "passing.xml"
    run = lab.csdeploy("nightly", BLUEPRINT, "--prefix", PREFIX, "--version", "v1", *CHECKS, "--junit", str(junit),
                       "--json", "--progress", "plain", timeout=900)
    summary = run.json()
    story.passed = summary
    lab.record("nightly", passing_seconds=round(run.seconds, 1),
               phases={c["name"]: c["seconds"] for c in summary["cases"]})
    assert (summary["passed"], summary["exit_code"], summary["torn_down"]) == (True, 0, True), run.explain()

    suite, by_name = cases(junit)
    assert list(by_name) == ["reap", "create-env", "deploy", "GET / 200 'demo v1'", "GET /up 200",
                             "web: python3 -c 'print(6 * 7)'", "teardown"]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (7, 0, 0, 0)
    assert all(c.is_passed for c in suite)
    assert f"{story.killed}: removed" in (by_name["reap"].system_out or ""), by_name["reap"].system_out
    assert "42" in (by_name["web: python3 -c 'print(6 * 7)'"].system_out or "")
    assert in_cloud(lab, story.killed) == [], "the reap left the killed nightly's resources"
    assert in_cloud(lab, summary["env"]) == [], "the passing nightly did not tear down"

    deployed = lab.csdeploy("history", "--env", summary["env"], "--json").json()
    assert [(d["version"], d["status"]) for d in deployed] == [("v1", "deployed")]
    assert [e["type"] for e in deployed[0]["events"]] == ["deploy_started", "deploy_completed"]
    lives = {e["name"]: e for e in lab.csdeploy("history", "--show", "environments", "--json",
                                                  "--limit", "500").json()}
    assert lives[summary["env"]]["torn_down_how"] == "nightly"
    assert lives[story.killed]["torn_down_how"] == "reap"


def test_c_a_broken_version_fails_with_the_health_checks_answer(story: Story) -> None:
    junit = story.tmp / "broken.xml"
    run = story.lab.csdeploy("nightly", BLUEPRINT, "--prefix", PREFIX, "--version", "broken", *CHECKS,
                             "--junit", str(junit), "--json", "--progress", "plain", check=False, timeout=900)
    story.lab.record("nightly", broken_seconds=round(run.seconds, 1))
    assert run.code == 1, "a nightly whose deploy fails must exit 1\n" + run.explain()
    summary = run.json()
    suite, by_name = cases(junit)
    assert (suite.failures, suite.skipped) == (1, 3), run.explain()
    (failure,) = by_name["deploy"].result
    assert isinstance(failure, Failure)
    for part in ("kamal-proxy", "/up", "HTTP 500", "unhealthy", "last logs of demo-web-broken"):
        assert part in failure.text, f"the JUnit failure text lacks {part!r}:\n{failure.text}"
    for name in ("GET / 200 'demo v1'", "GET /up 200", "web: python3 -c 'print(6 * 7)'"):
        (skipped,) = by_name[name].result
        assert isinstance(skipped, Skipped)
    assert by_name["teardown"].is_passed and summary["torn_down"] is True
    assert in_cloud(story.lab, summary["env"]) == []
    failed = story.lab.csdeploy("history", "--env", summary["env"], "--status", "failed", "--json").json()
    assert [d["version"] for d in failed] == ["broken"] and "HTTP 500" in failed[0]["error"]
    assert json.dumps(failed)
