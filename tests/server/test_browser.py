"""The dashboard in a real browser: Debian's chromium, headless, driven by playwright.

Log in with a token, see the environment (created on the memory simulator), start a deploy from
the form, watch the progress screen follow it to the end (server-sent events, the page's own
JavaScript), find it in the history. The deploy is the server's test-only fake (no hosts on a
memory VM) that writes the history store's record as a real one does. Screenshots are saved
under the test's tmp dir; the path is printed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from cloudstack_deploy.server import access
from cloudstack_deploy.store.db import Store
from cloudstack_deploy.store.url import parse_store_url
from tests.support.sim import KEY, SECRET, make_config

from .servers import serve_process

CHROMIUM = Path("/usr/bin/chromium")
DEMO = Path(__file__).resolve().parents[2] / "blueprints" / "demo.yml"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


def _browser_or_skip() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e .[test])")
    if not CHROMIUM.exists():
        missing.append("chromium (apt-get install chromium)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing: {', '.join(missing)}: scripts/lab-prereqs --test installs them")
        pytest.skip(f"missing: {', '.join(missing)}")


@pytest.fixture
def sim() -> ThreadedSimulator:
    with ThreadedSimulator(make_config()) as simulator:
        yield simulator


def test_log_in_deploy_watch_it_finish_and_find_it_in_history(sim: ThreadedSimulator, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    env = {"CLOUDSTACK_ENDPOINT": sim.endpoint, "CLOUDSTACK_KEY": KEY, "CLOUDSTACK_SECRET": SECRET,
           "CLOUDSTACK_POLL_INTERVAL": "0.05", "CSDEPLOY_HOME": str(tmp_path / "home"),
           "CSDEPLOY_STATE_URL": f"sqlite:///{tmp_path / 'history.db'}", "CSDEPLOY_SERVER_FAKE_DEPLOY": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from cloudstack_deploy import load_blueprint, service  # type: ignore[attr-defined]

    asyncio.run(service.create_env(load_blueprint(DEMO), "dev-web", skip_rollout=True))
    parsed = parse_store_url(env["CSDEPLOY_STATE_URL"])
    assert parsed is not None
    with Store(parsed) as store:
        token = access.create_token(store, name="dana", role="deployer", env_prefix="dev-")[1]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    with serve_process(env, tmp_path / "serve.log", "--heartbeat", "0.2") as server, sync_playwright() as pw:
        # a profile of the test's own (playwright passes it as --user-data-dir)
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "chromium"), executable_path=str(CHROMIUM),
                                                        headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20000)
            page.goto(server.url + "/")
            expect(page).to_have_url(server.url + "/login")
            page.fill("input[name=token]", token)
            page.click("button:text('Log in')")
            expect(page.locator("header")).to_contain_text("dana (deployer, dev-*)")
            expect(page.locator("table")).to_contain_text("dev-web")
            page.screenshot(path=str(shots / "1-environments.png"), full_page=True)
            page.fill("#deploy-form input[name=env]", "dev-web")
            page.fill("#deploy-form input[name=version]", "v42")
            page.click("#deploy-form button[value=deploy]")
            expect(page).to_have_url(f"{server.url}/jobs/" + page.url.rsplit("/", 1)[-1])
            expect(page.locator("#state")).to_have_text("succeeded")
            expect(page.locator("#events")).to_contain_text("host fake-web-2: deploy done (v42)")
            expect(page.locator("#cancel")).to_have_count(0)
            page.screenshot(path=str(shots / "2-progress.png"), full_page=True)
            page.click("header a:text('History')")
            page.fill("#filters input[name=env]", "dev-web")
            page.click("#filters button")
            row = page.locator("#deployments tr", has_text="v42")
            expect(row).to_contain_text("deployed")
            expect(row).to_contain_text("dana")
            page.screenshot(path=str(shots / "3-history.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(p.name for p in shots.iterdir()) == ["1-environments.png", "2-progress.png", "3-history.png"]
