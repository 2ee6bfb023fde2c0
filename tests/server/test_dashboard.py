"""The dashboard as a browser client sees it (cookies, forms, redirects): login by token, the
session cookie's flags, the CSRF token on every form, role-dependent buttons that the server
enforces anyway, the progress stream, the history filters, and escaped output."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from .conftest import Served


async def _login(served: Served, name: str) -> TestClient:
    c = served.client
    c.session.cookie_jar.clear()
    resp = await c.post("/login", data={"token": served.tokens[name]}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"
    return c


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def test_pages_need_a_login_and_the_cookie_is_httponly_and_strict(served: Served) -> None:
    c = served.client
    for path in ("/", "/history", "/envs/dev-a", "/jobs/x"):
        resp = await c.get(path, allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "/login", path
    bad = await c.post("/login", data={"token": "csd_wrong"}, allow_redirects=False)
    assert bad.status == 401 and "not valid" in await bad.text()
    resp = await c.post("/login", data={"token": served.tokens["vera"]}, allow_redirects=False)
    cookie = resp.headers["Set-Cookie"]
    assert "csdeploy_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert served.tokens["vera"] not in cookie
    home = await c.get("/")
    assert home.status == 200 and "vera (viewer)" in await home.text()
    assert "script-src 'nonce-" in home.headers["Content-Security-Policy"]


async def test_a_viewer_sees_no_deploy_button_and_a_posted_form_is_refused(served: Served) -> None:
    c = await _login(served, "vera")
    html = await (await c.get("/")).text()
    assert "deploy-form" not in html and ">Deploy<" not in html
    resp = await c.post("/deploy", data={"csrf": _csrf(html), "env": "dev-a", "version": "v1", "kind": "deploy"},
                        allow_redirects=False)
    assert resp.status == 403
    assert served.store.query("SELECT id FROM jobs") == []


async def test_a_form_without_the_sessions_csrf_token_changes_nothing(served: Served) -> None:
    c = await _login(served, "dan")
    html = await (await c.get("/")).text()
    assert "deploy-form" in html
    for token in ("", "forged", _csrf(html)[:-1] + "x"):
        resp = await c.post("/deploy", data={"csrf": token, "env": "dev-a", "version": "v1", "kind": "deploy"},
                            allow_redirects=False)
        assert resp.status == 403
    assert served.store.query("SELECT id FROM jobs") == []


async def test_deploy_from_the_form_watch_it_and_find_it_in_history(served: Served) -> None:
    c = await _login(served, "dan")
    csrf = _csrf(await (await c.get("/")).text())
    resp = await c.post("/deploy", data={"csrf": csrf, "env": "prod-a", "version": "v1", "kind": "deploy"},
                        allow_redirects=False)
    assert resp.status == 403                            # outside the deployer's prefix
    resp = await c.post("/deploy", data={"csrf": csrf, "env": "dev-a", "version": "v9", "kind": "deploy",
                                         "canary": "1"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/jobs/")
    page = await c.get(resp.headers["Location"])
    text = await page.text()
    assert "new EventSource" in text and 'id="events"' in text
    stream = await (await c.get(resp.headers["Location"] + "/events")).text()
    assert "event: progress" in stream and '"status": "succeeded"' in stream.split("event: end")[1]
    history = await (await c.get("/history?env=dev-a&status=deployed")).text()
    assert "v9" in history and "dan" in history
    failed = await (await c.get("/history?env=dev-a&status=failed")).text()
    assert "<td>v9</td>" not in failed


async def test_cancel_from_the_progress_screen(served: Served) -> None:
    c = await _login(served, "dan")
    csrf = _csrf(await (await c.get("/")).text())
    job = (await (await c.post("/api/jobs", json={"env": "dev-z", "params": {"seconds": 30, "steps": 30}},
                               headers=served.auth("dan"))).json())["job"]["id"]
    page = await (await c.get(f"/jobs/{job}")).text()
    assert 'id="cancel"' in page
    assert (await c.post(f"/jobs/{job}/cancel", data={"csrf": "nope"}, allow_redirects=False)).status == 403
    resp = await c.post(f"/jobs/{job}/cancel", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303
    stream = await (await c.get(f"/jobs/{job}/events")).text()
    assert '"status": "cancelled"' in stream.split("event: end")[1]


async def test_what_a_user_typed_is_shown_escaped(served: Served) -> None:
    c = await _login(served, "vera")
    html = await (await c.get("/history", params={"env": "<script>alert(1)</script>"})).text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert (await c.get("/envs/NOT A NAME")).status == 400


async def test_logout_ends_the_session(served: Served) -> None:
    c = await _login(served, "vera")
    csrf = _csrf(await (await c.get("/")).text())
    cookie = next(m.value for m in c.session.cookie_jar if m.key == "csdeploy_session")
    assert (await c.post("/logout", data={"csrf": csrf}, allow_redirects=False)).status == 303
    c.session.cookie_jar.update_cookies({"csdeploy_session": cookie})   # the old cookie, replayed
    assert (await c.get("/", allow_redirects=False)).status == 302
