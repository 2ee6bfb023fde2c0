"""The dashboard: server-rendered HTML over the same data and checks as the API, no build step.

Login takes a token and starts a session (cookie ``csdeploy_session``: HttpOnly,
SameSite=Strict, Secure behind HTTPS; the store keeps its sha256). Every form that changes
something carries the session's CSRF token in a hidden field, checked (in constant time)
before anything else. The pages show buttons by role, and the server checks the role and the
env prefix again on every POST. The progress screen follows the job's server-sent events with a
few lines of plain JavaScript (allowed by a per-response CSP nonce; nothing else runs).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from html import escape
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..errors import CsdeployError, InvalidInput
from ..log import redact
from ..store.records import INTERRUPTED, STATUSES
from . import access, api, queue
from .access import Principal

COOKIE = "csdeploy_session"
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}header{background:#234;color:#fff;padding:8px 16px;
display:flex;gap:16px;align-items:center}header a{color:#fff}main{padding:16px}table{border-collapse:collapse;
margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}form.inline{display:inline}
.ok,.succeeded,.deployed,.done{color:#070}.failed,.interrupted,.error{color:#b00}.running,.queued{color:#a60}
#events{font-family:monospace;white-space:pre-wrap;background:#f6f6f6;padding:8px;min-height:4em}
.note{color:#555}label{margin-right:8px}
"""


def _e(value: Any) -> str:
    return escape(redact("" if value is None else str(value)))


async def _session(request: web.Request) -> tuple[Principal, str] | None:
    cookie = request.cookies.get(COOKIE)
    return await api.db(request, access.session_principal, cookie) if cookie else None


def _page(request: web.Request, title: str, body: str, who: Principal | None = None, csrf: str = "",
          script: str = "") -> web.Response:
    nonce = secrets.token_urlsafe(16)
    nav = ""
    if who is not None:
        nav = (f'<a href="/">Environments</a><a href="/history">History</a><span>{_e(who.name)} '
               f'({_e(who.role)}{", " + _e(who.env_prefix) + "*" if who.env_prefix else ""})</span>'
               f'<form class="inline" method="post" action="/logout"><input type="hidden" name="csrf" '
               f'value="{_e(csrf)}"><button>Log out</button></form>')
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)} · csdeploy</title>'
            f'<style nonce="{nonce}">{_CSS}</style></head><body><header><strong>csdeploy</strong>{nav}</header>'
            f'<main><h1>{_e(title)}</h1>{body}</main>'
            + (f'<script nonce="{nonce}">{script}</script>' if script else "") + "</body></html>")
    return web.Response(text=html, content_type="text/html", headers={
        "Content-Security-Policy": f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                                   "frame-ancestors 'none'; form-action 'self'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})


def _login_redirect() -> web.HTTPFound:
    return web.HTTPFound("/login")


async def _signed_in(request: web.Request) -> tuple[Principal, str]:
    found = await _session(request)
    if found is None:
        raise _login_redirect()
    request[api.PRINCIPAL] = found[0]
    return found


async def _checked_form(request: web.Request) -> tuple[Principal, str, Any]:
    """The session and the posted form, its CSRF token checked first (403 when wrong)."""
    who, csrf = await _signed_in(request)
    form = await request.post()
    if not hmac.compare_digest(str(form.get("csrf", "")), csrf):
        await api.audit(request, "form", request.path, "bad csrf")
        raise web.HTTPForbidden(text="the form's CSRF token is missing or wrong: reload the page")
    return who, csrf, form


# ---- login -----------------------------------------------------------------------------------------
async def login_page(request: web.Request, message: str = "") -> web.Response:
    body = ((f'<p class="error">{_e(message)}</p>' if message else "")
            + '<form method="post" action="/login"><label>Token <input type="password" name="token" '
              'autocomplete="off" size="50" autofocus></label><button>Log in</button></form>'
              '<p>A token comes from <code>csdeploy token create</code>.</p>')
    return _page(request, "Log in", body)


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    who = await api.db(request, access.authenticate, str(form.get("token", "")).strip())
    if who is None:
        await api.audit(request, "login", None, "unauthenticated")
        response = await login_page(request, "That token is not valid (or was revoked).")
        response.set_status(401)
        return response
    session, _ = await api.db(request, access.start_session, who)
    request[api.PRINCIPAL] = who
    await api.audit(request, "login", None, "done")
    response = web.HTTPSeeOther("/")
    response.set_cookie(COOKIE, session, httponly=True, samesite="Strict", secure=request.secure, path="/",
                        max_age=int(access.SESSION_LIFETIME.total_seconds()))
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    await _checked_form(request)
    await api.db(request, access.end_session, request.cookies.get(COOKIE, ""))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# ---- environments and the deploy form ------------------------------------------------------------
def _current_versions(store: Any, envs: list[str]) -> dict[str, str]:
    from ..store import records

    found = {}
    for env in envs:
        deployed = records.deployments(store, env=env, status="deployed", limit=1)
        if deployed:
            found[env] = deployed[0].version
    return found


async def home(request: web.Request) -> web.Response:
    who, csrf = await _signed_in(request)
    from .. import service

    problem = ""
    try:
        envs = [e.to_dict() for e in await asyncio.wait_for(service.environments(), 30)]
    except (CsdeployError, TimeoutError, OSError) as exc:
        envs, problem = [], f"the cloud could not be read: {exc}"
    versions = await api.db(request, _current_versions, [e["env"] for e in envs])
    rows = "".join(
        f'<tr><td><a href="/envs/{_e(e["env"])}">{_e(e["env"])}</a></td><td>{_e(e.get("service"))}</td>'
        f'<td>{_e(", ".join(f"{r}×{n}" for r, n in (e.get("roles") or {}).items()))}</td><td>{_e(e.get("vms"))}</td>'
        f'<td>{_e(versions.get(e["env"], "—"))}</td><td>{_e(e.get("expires") or "")}</td>'
        f'<td>{_e(e.get("lock") or "")}</td></tr>' for e in envs)
    body = (f'<p class="error">{_e(problem)}</p>' if problem else "") + (
        '<table><tr><th>Environment</th><th>Service</th><th>Roles</th><th>VMs</th><th>Version</th>'
        f'<th>Expires</th><th>Lock</th></tr>{rows}</table>' if envs else "<p>No environments in the cloud.</p>")
    if who.at_least("deployer"):
        options = "".join(f'<option value="{_e(e["env"])}">' for e in envs if who.may_change(e["env"]))
        body += ('<h2>Deploy</h2><form method="post" action="/deploy" id="deploy-form">'
                 f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
                 f'<label>Environment <input name="env" list="envs" required></label><datalist id="envs">{options}'
                 '</datalist><label>Version <input name="version" required></label>'
                 '<label>Canary <input name="canary" placeholder="1 or 25%" size="6"></label>'
                 '<button name="kind" value="deploy">Deploy</button>'
                 '<button name="kind" value="rollback" formnovalidate>Roll back</button></form>')
    if who.role == "admin":
        body += _create_form(request, csrf)
    return _page(request, "Environments", body, who, csrf)


def _create_form(request: web.Request, csrf: str) -> str:
    names = api.stored_blueprints(request.app[api.BLUEPRINTS])
    if not names:
        return ("<h2>Create</h2><p>No stored blueprints: start the server with "
                "<code>csdeploy serve --blueprints DIR</code> to create environments from here.</p>")
    options = "".join(f'<option value="{_e(n)}">{_e(n)}</option>' for n in names)
    return ('<h2>Create</h2><form method="post" action="/create" id="create-form">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
            f'<label>Blueprint <select name="blueprint" required>{options}</select></label>'
            '<label>Environment <input name="env" required></label>'
            '<label>Version <input name="version" placeholder="none: VMs only" size="10"></label>'
            '<label>TTL <input name="ttl" placeholder="8h" size="5"></label>'
            '<button>Create…</button></form>')


async def env_page(request: web.Request) -> web.Response:
    who, csrf = await _signed_in(request)
    try:
        env = api.check_env(request.match_info["env"])
    except InvalidInput as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    shown = await api.environment_detail(env)
    body = ""
    inv = shown["inventory"]
    if inv:
        body += (f'<p>Service {_e(inv["service"])}; app {_e(inv["app_url"] or "—")}; expires '
                 f'{_e(inv["expires"] or "never")}</p><table><tr><th>Host</th><th>Role</th><th>Public</th>'
                 '<th>Private</th></tr>' + "".join(
                     f'<tr><td>{_e(h["name"])}</td><td>{_e(h["role"])}</td><td>{_e(h["public_ip"])}</td>'
                     f'<td>{_e(h["private_ip"])}</td></tr>' for h in inv["hosts"]) + "</table>")
    if shown["status"]:
        body += "<h2>Running</h2><table><tr><th>Host</th><th>Container</th><th>Version</th><th>State</th></tr>"
        for h in shown["status"]:
            for c in h["containers"] or [{}]:
                body += (f'<tr><td>{_e(h["name"])}</td><td>{_e(c.get("name", h.get("error") or ""))}</td>'
                         f'<td>{_e(c.get("version", ""))}</td><td>{_e(c.get("state", ""))}</td></tr>')
        body += "</table>"
    if shown["status_error"]:
        body += f'<p class="error">Status: {_e(shown["status_error"])}</p>'
    if who.role == "admin":
        body += (f'<h2>Teardown</h2><form method="post" action="/envs/{_e(env)}/teardown" id="teardown-form">'
                 f'<input type="hidden" name="csrf" value="{_e(csrf)}"><button>Tear down…</button></form>')
    return _page(request, f"Environment {env}", body, who, csrf)


# ---- create and teardown (admins; each asks once more before it is queued) --------------------------
async def _admin_form(request: web.Request, action: str, target: str | None) -> tuple[Principal, str, Any]:
    who, csrf, form = await _checked_form(request)
    if who.role != "admin":
        await api.audit(request, action, target, "denied")
        raise web.HTTPForbidden(text=f"{who.role} token {who.name!r} may not {action} environments (admin needed)")
    return who, csrf, form


async def _queued(request: web.Request, who: Principal, kind: str, env: str, params: dict[str, Any]) -> web.HTTPSeeOther:
    job = await api.db(request, queue.enqueue, kind=kind, env=env, params=params, by=who.name)
    await api.audit(request, kind, env, "queued", job=job.id, params=params)
    return web.HTTPSeeOther(f"/jobs/{job.id}")


def _hidden(fields: dict[str, Any]) -> str:
    return "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items() if v)


async def create(request: web.Request) -> web.StreamResponse:
    who, csrf, form = await _admin_form(request, "create", None)
    fields = {k: str(form.get(k) or "").strip() for k in ("blueprint", "env", "version", "ttl")}
    try:
        env, params = api.create_params(request.app[api.BLUEPRINTS], fields)
    except InvalidInput as exc:
        raise web.HTTPBadRequest(text=str(exc) + (f" ({exc.hint})" if exc.hint else "")) from None
    if form.get("confirmed") == "yes":
        raise await _queued(request, who, "create", env, params)
    what = f"{params['blueprint']}" + (f", version {params['version']}" if params.get("version") else ", no rollout")
    body = (f'<p>Create environment <strong>{_e(env)}</strong> from {_e(what)}'
            f'{", expiring after " + _e(params["ttl"]) if params.get("ttl") else ""}? Its VMs, disks and addresses '
            'are made in the cloud.</p><form method="post" action="/create" id="confirm-form">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}">{_hidden(fields)}'
            '<input type="hidden" name="confirmed" value="yes"><button>Create</button> <a href="/">Cancel</a></form>')
    return _page(request, f"Create {env}?", body, who, csrf)


async def teardown(request: web.Request) -> web.StreamResponse:
    try:
        env = api.check_env(request.match_info["env"])
    except InvalidInput as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    who, csrf, form = await _admin_form(request, "teardown", env)
    typed = str(form.get("confirm") or "")
    if typed == env:
        raise await _queued(request, who, "teardown", env, {})
    body = ((f'<p class="error">{_e(typed)} is not the environment\'s name.</p>' if typed else "")
            + f'<p>Tear down <strong>{_e(env)}</strong>: every VM, disk, address and rule it has in the cloud is '
            'deleted, with its data.</p>'
            f'<form method="post" action="/envs/{_e(env)}/teardown" id="confirm-form">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}"><label>Type its name to confirm '
            '<input name="confirm" autocomplete="off" required></label><button>Tear down</button> '
            f'<a href="/envs/{_e(env)}">Cancel</a></form>')
    return _page(request, f"Tear down {env}?", body, who, csrf)


async def deploy(request: web.Request) -> web.StreamResponse:
    who, _, form = await _checked_form(request)
    kind = str(form.get("kind") or "deploy")
    try:
        env = api.check_env(str(form.get("env", "")))
        if kind not in ("deploy", "rollback"):
            raise InvalidInput("kind: deploy or rollback")
        version = api.check_version(str(form.get("version") or ""), required=kind == "deploy")
        params: dict[str, Any] = {"version": version}
        canary = str(form.get("canary") or "").strip()
        if canary and kind == "deploy":
            from ..rollout.strategy import parse_canary

            parse_canary(canary)
            params["canary"] = canary
    except InvalidInput as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if not (who.at_least("deployer") and who.may_change(env)):
        await api.audit(request, kind, env, "denied", params=params)
        raise web.HTTPForbidden(text=f"{who.role} token {who.name!r} may not {kind} {env}")
    job = await api.db(request, queue.enqueue, kind=kind, env=env, params=params, by=who.name)
    await api.audit(request, kind, env, "queued", job=job.id, params=params)
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


# ---- a job's progress --------------------------------------------------------------------------------
_FOLLOW = """
const list = document.getElementById('events'), state = document.getElementById('state');
const source = new EventSource(location.pathname + '/events');
function line(text, cls) { const d = document.createElement('div'); d.textContent = text; d.className = cls; list.appendChild(d); }
source.addEventListener('progress', e => { const d = JSON.parse(e.data);
  line(`${d.resource}: ${d.action} ${d.status}${d.detail ? ' (' + d.detail + ')' : ''}`, d.status); });
source.addEventListener('note', e => { const d = JSON.parse(e.data); line(d.text, 'note ' + d.level); });
source.addEventListener('end', e => { const d = JSON.parse(e.data); source.close();
  state.textContent = d.status; state.className = d.status; const c = document.getElementById('cancel'); if (c) c.remove(); });
"""


async def job_page(request: web.Request) -> web.Response:
    who, csrf = await _signed_in(request)
    job = await api.db(request, queue.get, request.match_info["id"])
    if job is None:
        raise web.HTTPNotFound(text="no such job")
    cancel = ""
    if not job.finished and who.at_least("deployer") and who.may_change(job.env):
        cancel = (f'<form id="cancel" method="post" action="/jobs/{_e(job.id)}/cancel">'
                  f'<input type="hidden" name="csrf" value="{_e(csrf)}"><button>Cancel</button></form>')
    params = ", ".join(f"{k} {v}" for k, v in job.params.items() if v)
    body = (f'<p>{_e(job.kind)} of <a href="/envs/{_e(job.env)}">{_e(job.env)}</a> ({_e(params)}), asked by '
            f'{_e(job.requested_by)} at {_e(job.created_at[:19])}: <strong id="state" class="{_e(job.status)}">'
            f'{_e(job.status)}</strong></p>{cancel}<div id="events"></div>'
            + (f'<p class="error">{_e(job.error)}</p>' if job.error else ""))
    return _page(request, f"Job {job.id[:8]}", body, who, csrf, script=_FOLLOW)


async def job_stream(request: web.Request) -> web.StreamResponse:
    await _signed_in(request)
    job = await api.db(request, queue.get, request.match_info["id"])
    if job is None:
        raise web.HTTPNotFound(text="no such job")
    return await api.stream_job(request, job)


async def cancel(request: web.Request) -> web.StreamResponse:
    who, _, _ = await _checked_form(request)
    job = await api.db(request, queue.get, request.match_info["id"])
    if job is None:
        raise web.HTTPNotFound(text="no such job")
    if not (who.at_least("deployer") and who.may_change(job.env)):
        await api.audit(request, "cancel", job.env, "denied", job=job.id)
        raise web.HTTPForbidden(text=f"{who.role} token {who.name!r} may not cancel a job of {job.env}")
    await api.db(request, queue.request_cancel, job.id)
    await api.audit(request, "cancel", job.env, "asked", job=job.id)
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


# ---- history --------------------------------------------------------------------------------------
async def history(request: web.Request) -> web.Response:
    who, csrf = await _signed_in(request)
    from ..store import records

    q = request.query
    try:
        filters = api.history_filters(q)
    except InvalidInput as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    deps = await api.db(request, records.deployments, **filters)
    jobs = await api.db(request, queue.jobs, env=filters["env"], limit=filters["limit"])
    statuses = "".join(f'<option{" selected" if q.get("status") == s else ""}>{s}</option>'
                       for s in ("", *STATUSES, INTERRUPTED))
    body = ('<form method="get" action="/history" id="filters">'
            f'<label>Environment <input name="env" value="{_e(q.get("env", ""))}"></label>'
            f'<label>Service <input name="service" value="{_e(q.get("service", ""))}"></label>'
            f'<label>Status <select name="status">{statuses}</select></label>'
            f'<label>Since <input name="since" value="{_e(q.get("since", ""))}" placeholder="7d" size="5"></label>'
            '<button>Filter</button></form><h2>Deployments</h2>'
            '<table id="deployments"><tr><th>Started</th><th>Environment</th><th>Service</th><th>Kind</th>'
            '<th>Version</th><th>Status</th><th>By</th><th>Seconds</th></tr>'
            + "".join(f'<tr><td>{_e(d.started_at[:19])}</td><td>{_e(d.env)}</td><td>{_e(d.service)}</td>'
                      f'<td>{_e(d.kind)}</td><td>{_e(d.version)}</td><td class="{_e(d.status)}">{_e(d.status)}</td>'
                      f'<td>{_e(d.deployed_by)}</td><td>{_e(round(d.duration_seconds or 0, 1))}</td></tr>'
                      for d in deps)
            + '</table><h2>Jobs</h2><table id="jobs"><tr><th>Asked</th><th>Job</th><th>Environment</th>'
              '<th>Status</th><th>By</th></tr>'
            + "".join(f'<tr><td>{_e(j.created_at[:19])}</td><td><a href="/jobs/{_e(j.id)}">{_e(j.kind)} '
                      f'{_e(j.id[:8])}</a></td><td>{_e(j.env)}</td><td class="{_e(j.status)}">{_e(j.status)}</td>'
                      f'<td>{_e(j.requested_by)}</td></tr>' for j in jobs)
            + "</table>")
    more = {k: v for k, v in q.items() if v}
    if more:
        body += f'<p><a href="/history?{_e(urlencode(more))}">link to these filters</a></p>'
    return _page(request, "History", body, who, csrf)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", home)
    app.router.add_get("/envs/{env}", env_page)
    app.router.add_post("/deploy", deploy)
    app.router.add_post("/create", create)
    app.router.add_post("/envs/{env}/teardown", teardown)
    app.router.add_get("/jobs/{id}", job_page)
    app.router.add_get("/jobs/{id}/events", job_stream)
    app.router.add_post("/jobs/{id}/cancel", cancel)
    app.router.add_get("/history", history)
