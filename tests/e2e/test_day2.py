"""Day two on the lab, as a person does it, in one environment (e2e-day2): one web VM with
kamal-proxy and PostgreSQL, the real kamal-proxy v0.9.2 (its `stop`/`resume`), the CLI as a
subprocess, a terminal from `script`.

  a. create-env -> 200 "demo v1"
  b. maintenance on -> 503 with the message; status says MAINTENANCE
  c. deploy v2 during maintenance -> still 503 (kamal-proxy and the marker keep it)
  d. maintenance off -> 200 "demo v2"
  e. app stop -> no 200; app start -> 200 v2 again
  f. psql (an alias), exec -i with stdin, exec -it under `script`: a terminal, the exit code
  g. accessory restart, upgrade (the same image: re-created, data kept) and prune; the app still answers;
     accessory remove, then start boots it again on its data (the rows are there)
  h. `csdeploy serve` on this lab, the dashboard in chromium: a deployer logs in, deploys v1 from
     the form, the progress screen follows it to "succeeded", the history shows it; a viewer has
     no deploy button and a posted form is refused (403); screenshots kept (path printed)
  i. `csdeploy --server URL deploy` of v2 through that server (this side: no cloud key, no store);
     the viewer reads the web role's logs through the API; no lab secret in any page, answer or
     the server's log
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.server.servers import ServeProcess, serve_process
from tests.support.browser import CHROMIUM, FLAGS, browser_or_skip, screenshots_dir
from tests.support.cli import run_cli

from .conftest import REPO, Lab, environment, http, page_version, wait_for_page

ENV = "e2e-day2"
BLUEPRINT = str(REPO / "tests" / "e2e" / "blueprints" / "day2.yml")
MESSAGE = "Back at 14:00 UTC"

pytestmark = pytest.mark.story


@dataclass
class Story:
    lab: Lab
    url: str = ""


@pytest.fixture(scope="module")
def story(lab: Lab) -> Iterator[Story]:
    with environment(lab, ENV):
        yield Story(lab)


def _status_within(url: str, want: int, seconds: float = 20) -> tuple[int, str]:
    end = time.monotonic() + seconds
    status, body = 0, ""
    while time.monotonic() < end:
        try:
            status, body = http("GET", url)
        except OSError as exc:
            status, body = 0, str(exc)
        if status == want:
            return status, body
        time.sleep(0.3)
    return status, body


def test_a_create_env_serves_v1(story: Story) -> None:
    story.lab.csdeploy("create-env", BLUEPRINT, "--env", ENV, "--version", "v1", "--progress", "plain", timeout=600)
    web = next(h for h in story.lab.inventory(ENV)["hosts"] if h.get("proxy"))
    story.url = f"http://{web['public_ip']}/"
    wait_for_page(story.url, "v1")


def test_b_maintenance_on_answers_503_with_the_message(story: Story) -> None:
    run = story.lab.csdeploy("maintenance", "on", "--env", ENV, "--message", MESSAGE)
    assert f"{ENV}-web-1: demo-web answers 503 ({MESSAGE})" in run.stdout, run.explain()
    status, body = _status_within(story.url, 503)
    assert status == 503 and MESSAGE in body, f"{status} {body[:300]}"
    run = story.lab.csdeploy("status", "--env", ENV)
    assert f"MAINTENANCE: kamal-proxy answers 503 ({MESSAGE})" in run.stdout, run.explain()


def test_c_a_deploy_during_maintenance_keeps_it(story: Story) -> None:
    run = story.lab.csdeploy("deploy", BLUEPRINT, "--env", ENV, "--version", "v2", "--progress", "plain")
    status, body = http("GET", story.url)
    assert status == 503 and MESSAGE in body, f"{status} {body[:300]}\n" + run.explain()


def test_d_maintenance_off_serves_the_new_version(story: Story) -> None:
    story.lab.csdeploy("maintenance", "off", "--env", ENV)
    wait_for_page(story.url, "v2", deadline=20)
    assert "MAINTENANCE" not in story.lab.csdeploy("status", "--env", ENV).stdout


def test_e_app_stop_and_start(story: Story) -> None:
    run = story.lab.csdeploy("app", "stop", "--env", ENV)
    assert f"{ENV}-web-1: demo-web-v2 stopped" in run.stdout, run.explain()
    status, _ = http("GET", story.url)
    assert status != 200
    run = story.lab.csdeploy("app", "start", "--env", ENV)
    assert "demo-web-v2 started" in run.stdout and "routed through kamal-proxy again" in run.stdout, run.explain()
    status, body = http("GET", story.url)
    assert status == 200 and page_version(body) == "v2", f"{status} {body[:200]}"


def test_f_psql_exec_i_and_a_terminal(story: Story) -> None:
    run = story.lab.csdeploy("alias", "sql", "--env", ENV)
    assert run.stdout.strip() == "42", run.explain()
    res = subprocess.run([sys.executable, "-m", "cloudstack_deploy", "exec", "-i", "--env", ENV, "--role", "web",
                          "--", "sh", "-c", 'read x; echo "got $x on $CSDEPLOY_VERSION"; exit 4'],
                         input="hello\n", env=story.lab.env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 4 and "got hello on v2" in res.stdout, res.stdout + res.stderr
    cmd = shlex.join([sys.executable, "-m", "cloudstack_deploy", "exec", "-it", "--env", ENV, "--role", "web", "--",
                      "sh", "-c", "test -t 0 && echo TTY-OK; exit 3"])
    res = subprocess.run(["script", "-qec", cmd, "/dev/null"], env=story.lab.env, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 3 and "TTY-OK" in res.stdout, res.stdout + res.stderr


SQL = ("psql", "--env", ENV, "--no-tty", "--", "-tAc")


def test_g_accessory_restart_upgrade_and_prune(story: Story) -> None:
    story.lab.csdeploy(*SQL, "create table kept (n int); insert into kept values (7), (11)")
    run = story.lab.csdeploy("accessory", "restart", "db", "--env", ENV)
    assert "demo-db restarted" in run.stdout, run.explain()
    run = story.lab.csdeploy("accessory", "upgrade", "db", "--env", ENV)
    assert "demo-db rebooted with registry.lab:5000/postgres:15 (the same image as before)" in run.stdout, \
        run.explain()
    assert story.lab.csdeploy("alias", "sql", "--env", ENV).stdout.strip() == "42"
    assert story.lab.csdeploy(*SQL, "select sum(n) from kept").stdout.strip() == "18"
    run = story.lab.csdeploy("prune", "--env", ENV)
    assert f"{ENV}-web-1: removed" in run.stdout, run.explain()
    wait_for_page(story.url, "v2", deadline=20)


def test_g2_accessory_remove_then_start_boots_it_with_its_rows(story: Story) -> None:
    """`accessory remove db` keeps the data; `accessory start db` creates the container again
    (Kamal's `accessory boot`) on the same data: the rows written before are there."""
    sql = SQL
    run = story.lab.csdeploy("accessory", "remove", "db", "--env", ENV, "--yes")
    assert "demo-db removed" in run.stdout, run.explain()
    gone = story.lab.csdeploy(*sql, "select 1", check=False)
    assert gone.code != 0, gone.explain()
    run = story.lab.csdeploy("accessory", "start", "db", "--env", ENV)
    assert "demo-db booted with registry.lab:5000/postgres:15 (its data kept)" in run.stdout, run.explain()
    rows = story.lab.csdeploy(*sql, "select sum(n) from kept")
    assert rows.stdout.strip() == "18", rows.explain()
    wait_for_page(story.url, "v2", deadline=20)


# ---- the team server on this environment (its API alone: tests/server, on the memory simulator) ------
@dataclass
class Team:
    url: str
    tokens: dict[str, str]          # name -> token text
    shots: Path                     # the screenshots (tests/support/browser.py: where)
    folder: Path                    # the test's own files: the server's log, the browser's profile
    pages: list[str] = field(default_factory=list)   # every page and answer seen: no secret in any
    server: ServeProcess | None = None


@pytest.fixture(scope="module")
def team(story: Story, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    """`csdeploy serve` over the lab's CSDEPLOY_HOME and history store (the one the CLI steps
    use), with a deployer and a viewer token for e2e-* made by `csdeploy token create`."""
    tokens = {name: story.lab.csdeploy("token", "create", "--name", name, "--role", role, "--env-prefix", "e2e-",
                                       "--json").json()["token"]
              for name, role in (("dana", "deployer"), ("vic", "viewer"))}
    folder = tmp_path_factory.mktemp("team-server")
    shots = screenshots_dir(folder, "e2e-day2-team-server")
    print(f"\n[e2e] team server: screenshots in {shots}, log in {folder / 'serve.log'}")
    with serve_process(story.lab.env, folder / "serve.log", "--heartbeat", "0.5", inherit=False) as server:
        found = Team(server.url, tokens, shots, folder, server=server)
        yield found
    log = server.output()
    for name, value in story.lab.secrets.items():
        assert value not in log, f"the server's log shows {name}"
        assert [p[:200] for p in found.pages if value in p] == [], f"a page or an answer shows {name}"


def test_h_the_dashboard_deploys_in_a_browser_and_a_viewer_may_not(story: Story, team: Team) -> None:
    """The fleet-engine story: log in with a token, deploy from the form, follow the progress
    screen to the end, find the deploy in the history (screenshots of each screen); a viewer
    has no deploy button, and the server refuses the form posted anyway."""
    browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(team.folder / "chromium"),
                                                        executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20000)

            def shot(name: str) -> None:
                team.pages.append(page.content())
                page.screenshot(path=str(team.shots / name), full_page=True)

            page.goto(team.url + "/")
            expect(page).to_have_url(team.url + "/login")
            page.fill("input[name=token]", team.tokens["dana"])
            page.click("button:text('Log in')")
            expect(page.locator("header")).to_contain_text("dana (deployer, e2e-*)")
            expect(page.locator("table").first).to_contain_text(ENV)
            shot("1-environments.png")
            page.fill("#deploy-form input[name=env]", ENV)
            page.fill("#deploy-form input[name=version]", "v1")
            page.click("#deploy-form button[value=deploy]")
            expect(page).to_have_url(re.compile(re.escape(team.url) + r"/jobs/[0-9a-f-]+$"))
            expect(page.locator("#state")).to_have_text("succeeded", timeout=180000)
            expect(page.locator("#events")).to_contain_text("deploy succeeded")
            expect(page.locator("#cancel")).to_have_count(0)
            shot("2-progress.png")
            wait_for_page(story.url, "v1", deadline=30)
            page.click("header a:text('History')")
            page.fill("#filters input[name=env]", ENV)
            page.click("#filters button")
            row = page.locator("#deployments tr", has_text="v1").first
            expect(row).to_contain_text("deployed")
            expect(row).to_contain_text("dana")
            shot("3-history.png")
            page.click("header button:text('Log out')")
            page.fill("input[name=token]", team.tokens["vic"])
            page.click("button:text('Log in')")
            expect(page.locator("header")).to_contain_text("vic (viewer, e2e-*)")
            expect(page.locator("table").first).to_contain_text(ENV)
            expect(page.locator("#deploy-form")).to_have_count(0)
            expect(page.locator("button", has_text="Deploy")).to_have_count(0)
            shot("4-viewer.png")
            csrf = page.locator("input[name=csrf]").first.get_attribute("value")
            refused = page.request.post(team.url + "/deploy", form={"csrf": csrf or "", "env": ENV, "version": "v2",
                                                                    "kind": "deploy"}, max_redirects=0)
            assert refused.status == 403, (refused.status, refused.text())
            team.pages.append(refused.text())
        finally:
            browser.close()
    assert sorted(p.name for p in team.shots.iterdir()) == ["1-environments.png", "2-progress.png",
                                                            "3-history.png", "4-viewer.png"]
    wait_for_page(story.url, "v1", deadline=10)   # the viewer's form changed nothing


def test_i_the_cli_deploys_through_the_server_and_a_viewer_reads_the_logs(story: Story, team: Team) -> None:
    """`csdeploy --server URL --token T deploy`: the served process deploys, with the server's keys;
    this side has no cloud key and no store. Then the API's logs of the role, for the viewer."""
    env = {k: v for k, v in story.lab.env.items() if not k.startswith("CLOUDSTACK_")}
    env.update(CSDEPLOY_HOME=str(team.folder / "client-home"), CSDEPLOY_STATE_URL="none")
    run = run_cli(["--server", team.url, "--token-file", str(_token_file(team, "dana")), "deploy", "--env", ENV,
                   "--version", "v2", "--progress", "plain"], env, timeout=300)
    assert run.code == 0 and f"deploy of {ENV} to v2: succeeded" in run.stdout, run.explain()
    team.pages += [run.stdout, run.stderr]
    wait_for_page(story.url, "v2", deadline=30)
    resp = requests.get(f"{team.url}/api/environments/{ENV}/logs", params={"role": "web", "lines": "5"},
                        headers={"Authorization": f"Bearer {team.tokens['vic']}"}, timeout=60)
    team.pages.append(resp.text)
    assert resp.status_code == 200, resp.text
    lines = resp.json()["lines"]
    assert 0 < len(lines) <= 5 and all(line.startswith(f"{ENV}-web-1 | ") for line in lines), lines


def _token_file(team: Team, name: str) -> Path:
    path = team.folder / f"{name}.token"
    path.write_text(team.tokens[name] + "\n")
    path.chmod(0o600)
    return path
