"""The JSON API: one route table (method, path, role, handler, what it takes), from which the
routes are registered and `openapi` describes them.

Every answer passes through `log.redact`: a message that quotes a host's output or a driver's
error never carries a registered secret. The cloud's keys, SSH keys and secrets are never read
into an answer: environments show their hosts' names and addresses, not their access.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import InvalidInput
from ..log import get_logger, redact
from ..store.records import INTERRUPTED, STATUSES
from . import access, queue
from .access import Principal

log = get_logger("server.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
TEST_JOBS_VAR = "CSDEPLOY_SERVER_TEST_JOBS"
STATUS_TIMEOUT = 20.0
SSE_POLL = 0.3


STORE = web.AppKey("store", Any)
TEST_JOBS = web.AppKey("test_jobs", bool)
WORKER = web.AppKey("worker", Any)
BLUEPRINTS = web.AppKey("blueprints", Any)   # Path | None: where create's blueprints are
PRINCIPAL: Any = web.RequestKey("principal", Principal) if hasattr(web, "RequestKey") else "csdeploy.principal"


@dataclass(frozen=True)
class Param:
    name: str
    where: str = "query"           # query | path
    type: str = "string"
    description: str = ""
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    role: str | None = "viewer"     # None: no token needed
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None   # JSON schema of the request body
    answer: str = "application/json"
    codes: tuple[int, ...] = field(default=(200,))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=redact(json.dumps(data, default=str, sort_keys=True)), status=status,
                        content_type="application/json")


def error(status: int, message: str) -> web.Response:
    return _json({"error": redact(message)}, status)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def db(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, request.app[STORE], *args, **kwargs)


async def audit(request: web.Request, action: str, target: str | None, outcome: str, **detail: Any) -> None:
    who: Principal | None = request.get(PRINCIPAL)
    await db(request, access.audit, actor_name=who.name if who else "-", role=who.role if who else None,
             action=action, target=target, outcome=outcome, detail=detail)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body is not JSON"}),
                                 content_type="application/json") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}),
                                 content_type="application/json")
    return data


def check_env(env: Any) -> str:
    from ..state import validate_env_name

    return validate_env_name(env if isinstance(env, str) else str(env)[:60])


def check_version(version: Any, *, required: bool = True) -> str | None:
    if version in (None, "") and not required:
        return None
    if not isinstance(version, str) or not VERSION.match(version):
        raise InvalidInput(f"version {str(version)[:60]!r}: an image tag (letters, digits, '_', '.', '-')")
    return version


# ---- environments --------------------------------------------------------------------------------
async def list_environments(request: web.Request) -> web.Response:
    from .. import service

    envs = await service.environments()
    return _json({"environments": [e.to_dict() for e in envs]})


async def environment_detail(env: str) -> dict[str, Any]:
    """The environment's inventory (hosts by role, addresses; no SSH access) and, from its
    hosts, what runs there; a status that cannot be read is said, not raised."""
    from .. import service
    from ..state import EnvState

    inventory = EnvState(env).read_inventory()
    shown: dict[str, Any] = {"env": env, "inventory": None, "status": None, "status_error": None}
    if inventory is None:
        shown["status_error"] = "no inventory on this server (create-env or a deploy from here writes it)"
        return shown
    shown["inventory"] = {
        "service": inventory.service, "app_url": inventory.app_url, "expires": inventory.expires,
        "written": inventory.written, "roles": inventory.roles,
        "hosts": [{"name": h.name, "role": h.role, "public_ip": h.public_ip, "private_ip": h.private_ip,
                   "accessories": list(h.accessories)} for h in inventory.hosts],
    }
    try:
        hosts = await asyncio.wait_for(service.status(env), STATUS_TIMEOUT)
        shown["status"] = [{"name": h.name, "role": h.role, "address": h.address, "containers": h.containers,
                            "error": h.error, "warnings": h.warnings} for h in hosts]
    except Exception as exc:  # noqa: BLE001 - an unreachable host is a fact to show, not a failure
        shown["status_error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return shown


async def show_environment(request: web.Request) -> web.Response:
    env = check_env(request.match_info["env"])
    return _json(await environment_detail(env))


LOG_LINES_MAX = 10000
ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


async def environment_logs(request: web.Request) -> web.Response:
    """The last ``lines`` log lines of a role's (or an accessory's, or a scheduled job's)
    containers, as `csdeploy logs` shows them (``HOST | LINE``), through the same service
    function; the blueprint's secrets are replaced in every line."""
    from .. import service

    env = check_env(request.match_info["env"])
    q = request.query
    role = q.get("role") or ""
    if not ROLE.match(role):
        raise InvalidInput(f"role {role[:64]!r}: the name of a role, an accessory or a job of the blueprint")
    try:
        lines = int(q.get("lines") or 100)
    except ValueError:
        raise InvalidInput("lines: a number") from None
    if not 1 <= lines <= LOG_LINES_MAX:
        raise InvalidInput(f"lines: 1 to {LOG_LINES_MAX}")
    since = None
    if q.get("since"):
        from ..blueprint import parse_duration

        try:
            since = parse_duration(q["since"])
        except ValueError as exc:
            raise InvalidInput(f"since: {exc}") from None
    found: list[str] = []
    await service.logs(env, role, lines=lines, emit=found.append, since=since, redacted=True)
    await audit(request, "logs", env, "done", role=role, lines=lines)
    return _json({"env": env, "role": role, "lines": found})


async def create_environment(request: web.Request) -> web.Response:
    """Queue create-env of ``env`` from ``blueprint``: a file name in the server's blueprint
    directory (``serve --blueprints DIR``), never a path a caller chooses."""
    env, params = create_params(request.app[BLUEPRINTS], await _body(request))
    return await _enqueue(request, "create", env, params)


BLUEPRINT_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\.ya?ml")


def stored_blueprints(folder: Path | None) -> list[str]:
    """The blueprint files a create may name: those of the server's directory (none without one)."""
    if folder is None:
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and BLUEPRINT_FILE.fullmatch(p.name))


def create_params(folder: Path | None, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(env, the create job's params) from a request (the API's JSON, the dashboard's form):
    the blueprint is a file of ``folder``, loaded now so a bad one is refused before queueing."""
    env = check_env(body.get("env"))
    if folder is None:
        raise InvalidInput("this server has no blueprint directory", hint="start it with --blueprints DIR")
    name = body.get("blueprint")
    if not isinstance(name, str) or not BLUEPRINT_FILE.fullmatch(name) or not (folder / name).is_file():
        raise InvalidInput(f"blueprint {str(name)[:100]!r}: not a .yml file of the server's blueprint directory")
    from ..blueprint import load_blueprint, parse_duration

    load_blueprint(folder / name)   # bad blueprints are refused now, not in the job
    params: dict[str, Any] = {"blueprint": name, "blueprint_path": str(folder / name),
                              "version": check_version(body.get("version") or None, required=False)}
    if body.get("ttl"):
        try:
            parse_duration(str(body["ttl"]))
        except ValueError as exc:
            raise InvalidInput(f"ttl: {exc}") from None
        params["ttl"] = str(body["ttl"])
    return env, params


async def teardown_environment(request: web.Request) -> web.Response:
    env = check_env(request.match_info["env"])
    return await _enqueue(request, "teardown", env, {})


# ---- deployments -----------------------------------------------------------------------------------
def history_filters(query: Any) -> dict[str, Any]:
    status = query.get("status") or None
    if status is not None and status not in (*STATUSES, INTERRUPTED):
        raise InvalidInput(f"status {status!r}: one of {', '.join((*STATUSES, INTERRUPTED))}")
    since = query.get("since") or None
    if since:
        from ..blueprint import parse_duration

        try:
            since = parse_duration(since)
        except ValueError as exc:
            raise InvalidInput(f"since: {exc}") from None
    try:
        limit = int(query.get("limit") or 100)
    except ValueError:
        raise InvalidInput("limit: a number") from None
    return {"env": query.get("env") or None, "service": query.get("service") or None, "status": status,
            "since": since, "limit": max(1, min(limit, 1000))}


def _deployment(d: Any) -> dict[str, Any]:
    return d.to_dict() if hasattr(d, "to_dict") else asdict(d)


async def list_deployments(request: web.Request) -> web.Response:
    from ..store import records

    filters = history_filters(request.query)
    found = await db(request, records.deployments, **filters)
    return _json({"deployments": [_deployment(d) for d in found]})


async def show_deployment(request: web.Request) -> web.Response:
    dep_id = request.match_info["id"]
    from ..store import records

    found = await db(request, records.deployment, dep_id)
    if found is None:
        return error(404, f"no deployment {dep_id[:60]}")
    return _json(_deployment(found))


async def start_deployment(request: web.Request) -> web.Response:
    body = await _body(request)
    env = check_env(body.get("env"))
    kind = body.get("kind", "deploy")
    if kind not in ("deploy", "rollback"):
        raise InvalidInput(f"kind {str(kind)[:30]!r}: deploy or rollback")
    version = check_version(body.get("version"), required=kind == "deploy")
    params: dict[str, Any] = {"version": version}
    if kind == "deploy" and body.get("canary"):
        from ..rollout.strategy import parse_canary

        parse_canary(str(body["canary"]))
        params["canary"] = str(body["canary"])
    return await _enqueue(request, kind, env, params)


async def _enqueue(request: web.Request, kind: str, env: str, params: dict[str, Any]) -> web.Response:
    who = principal(request)
    allowed = who.may_change(env) and (kind not in ("create", "teardown") or who.role == "admin") and \
        (kind in queue.KINDS or request.app[TEST_JOBS])
    if not allowed:
        await audit(request, kind, env, "denied", params=params)
        return error(403, f"{who.role} token {who.name!r} may not {kind} {env}")
    job = await db(request, queue.enqueue, kind=kind, env=env, params=params, by=who.name)
    await audit(request, kind, env, "queued", job=job.id, params=params)
    return _json({"job": job.to_dict(), "events_url": f"/api/jobs/{job.id}/events"}, 202)


# ---- jobs ---------------------------------------------------------------------------------------------
async def list_jobs(request: web.Request) -> web.Response:
    q = request.query
    status = q.get("status") or None
    if status is not None and status not in queue.JOB_STATUSES:
        raise InvalidInput(f"status {status!r}: one of {', '.join(queue.JOB_STATUSES)}")
    found = await db(request, queue.jobs, env=q.get("env") or None, status=status, kind=q.get("kind") or None,
                     limit=max(1, min(int(q.get("limit") or 100), 1000)))
    return _json({"jobs": [j.to_dict() for j in found]})


async def _job_or_404(request: web.Request) -> queue.Job:
    job = await db(request, queue.get, request.match_info["id"])
    if job is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such job"}), content_type="application/json")
    return job


async def show_job(request: web.Request) -> web.Response:
    job = await _job_or_404(request)
    found = await db(request, queue.events, job.id)
    return _json({"job": job.to_dict(), "events": found})


async def start_test_job(request: web.Request) -> web.Response:
    if not request.app[TEST_JOBS]:
        return error(404, f"test jobs are off (set {TEST_JOBS_VAR}=1 on the server)")
    body = await _body(request)
    env = check_env(body.get("env"))
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidInput("params: an object")
    return await _enqueue(request, "sleep", env, params)


async def cancel_job(request: web.Request) -> web.Response:
    job = await _job_or_404(request)
    who = principal(request)
    if not who.may_change(job.env):
        await audit(request, "cancel", job.env, "denied", job=job.id)
        return error(403, f"{who.role} token {who.name!r} may not cancel a job of {job.env}")
    after = await db(request, queue.request_cancel, job.id)
    await audit(request, "cancel", job.env, "asked", job=job.id)
    return _json({"job": after.to_dict()})


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each progress event as ``event: progress``/``note`` with its JSON,
    then ``event: end`` with the job once it has finished. ``Last-Event-ID`` resumes."""
    return await stream_job(request, await _job_or_404(request))


async def stream_job(request: web.Request, job: queue.Job) -> web.StreamResponse:
    """``job``'s events as server-sent events (read from the store: any server process can
    stream a job that another one runs)."""
    try:
        after = int(request.headers.get("Last-Event-ID") or request.query.get("after") or 0)
    except ValueError:
        after = 0
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    while True:
        found = await db(request, queue.events, job.id, after=after)
        for e in found:
            after = e["seq"]
            await response.write(f"id: {e['seq']}\nevent: {e['type']}\ndata: {redact(json.dumps(e))}\n\n".encode())
        if job.finished and not found:
            break
        if not found:
            await response.write(b": waiting\n\n")
            await asyncio.sleep(SSE_POLL)
        job = await db(request, queue.get, job.id)
    await response.write(f"event: end\ndata: {redact(json.dumps(job.to_dict(), default=str))}\n\n".encode())
    await response.write_eof()
    return response


# ---- audit and tokens -----------------------------------------------------------------------------------
async def list_audit(request: web.Request) -> web.Response:
    q = request.query
    found = await db(request, access.audit_entries, limit=max(1, min(int(q.get("limit") or 100), 1000)),
                     actor_name=q.get("actor") or None, action=q.get("action") or None)
    return _json({"audit": found})


async def whoami(request: web.Request) -> web.Response:
    return _json(principal(request).to_dict())


async def list_tokens(request: web.Request) -> web.Response:
    return _json({"tokens": [t.to_dict() for t in await db(request, access.list_tokens)]})


async def create_token(request: web.Request) -> web.Response:
    body = await _body(request)
    row, text = await db(request, access.create_token, name=str(body.get("name", "")), role=str(body.get("role", "")),
                         env_prefix=body.get("env_prefix") or None, by=principal(request).name)
    await audit(request, "token create", row.name, "done", role_given=row.role, env_prefix=row.env_prefix)
    return _json({"token": row.to_dict(), "secret": text}, 201)


async def revoke_token(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not await db(request, access.revoke_token, name):
        return error(404, f"no live token named {name[:64]!r}")
    await audit(request, "token revoke", name, "done")
    return _json({"revoked": name})


async def openapi_json(request: web.Request) -> web.Response:
    from .openapi import spec

    return _json(spec(ROUTES))


_ENV = Param("env", "path", description="environment name")
_ID = Param("id", "path")
_LIMIT = Param("limit", type="integer", description="at most this many (1-1000, default 100)")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/openapi.json", openapi_json, "This API's OpenAPI 3 description", role=None),
    Route("GET", "/api/whoami", whoami, "The caller's token: name, role, env prefix"),
    Route("GET", "/api/environments", list_environments, "Environments in the cloud (by their tags)"),
    Route("GET", "/api/environments/{env}", show_environment, "An environment's inventory and status", params=(_ENV,)),
    Route("GET", "/api/environments/{env}/logs", environment_logs,
          "The last log lines of a role's containers, as `csdeploy logs` shows them (secrets replaced)",
          params=(_ENV, Param("role", description="a role, accessory or scheduled job of the blueprint"),
                  Param("lines", type="integer", description="at most this many per container (1-10000, default 100)"),
                  Param("since", description="only lines of this last stretch: 30m, 2h, 1d")),
          codes=(200, 400, 502)),
    Route("POST", "/api/environments", create_environment,
          "Queue create-env from a blueprint of the server's directory, with an optional rollout (admin)",
          role="admin", codes=(202, 400, 403),
          body={"type": "object", "required": ["env", "blueprint"], "properties": {
              "env": {"type": "string"}, "blueprint": {"type": "string", "description": "file name, e.g. demo.yml"},
              "version": {"type": "string"}, "ttl": {"type": "string", "description": "e.g. 8h"}}}),
    Route("DELETE", "/api/environments/{env}", teardown_environment, "Queue a teardown (admin)", role="admin",
          params=(_ENV,), codes=(202, 403)),
    Route("GET", "/api/deployments", list_deployments, "Deployments in the history store, newest first",
          params=(Param("env"), Param("service"), Param("status", enum=(*STATUSES, INTERRUPTED)),
                  Param("since", description="a duration: 30m, 2h, 7d"), _LIMIT)),
    Route("GET", "/api/deployments/{id}", show_deployment, "A deployment with its events", params=(_ID,),
          codes=(200, 404)),
    Route("POST", "/api/deployments", start_deployment, "Queue a deploy or a rollback (deployer, within its prefix)",
          role="deployer", codes=(202, 400, 403),
          body={"type": "object", "required": ["env"], "properties": {
              "env": {"type": "string"}, "kind": {"type": "string", "enum": ["deploy", "rollback"]},
              "version": {"type": "string", "description": "required for a deploy; a rollback's target"},
              "canary": {"type": "string", "description": "N hosts or P% (a deploy only)"}}}),
    Route("GET", "/api/jobs", list_jobs, "Jobs of the queue, newest first",
          params=(Param("env"), Param("status", enum=queue.JOB_STATUSES), Param("kind"), _LIMIT)),
    Route("POST", "/api/jobs", start_test_job, f"Queue a test-only sleep job (when {TEST_JOBS_VAR}=1)",
          role="deployer", codes=(202, 403, 404),
          body={"type": "object", "required": ["env"], "properties": {
              "env": {"type": "string"}, "params": {"type": "object"}}}),
    Route("GET", "/api/jobs/{id}", show_job, "A job with its progress events", params=(_ID,), codes=(200, 404)),
    Route("GET", "/api/jobs/{id}/events", job_events, "A job's progress as server-sent events", params=(_ID,),
          answer="text/event-stream", codes=(200, 404)),
    Route("POST", "/api/jobs/{id}/cancel", cancel_job, "Cancel a job (queued: at once; running: stopped safely)",
          role="deployer", params=(_ID,), codes=(200, 403, 404)),
    Route("GET", "/api/audit", list_audit, "The audit log, newest first (admin)", role="admin",
          params=(Param("actor"), Param("action"), _LIMIT)),
    Route("GET", "/api/tokens", list_tokens, "Live tokens (admin)", role="admin"),
    Route("POST", "/api/tokens", create_token, "Create a token; its secret is in this answer only (admin)",
          role="admin", codes=(201, 400),
          body={"type": "object", "required": ["name", "role"], "properties": {
              "name": {"type": "string"}, "role": {"type": "string", "enum": list(access.ROLES)},
              "env_prefix": {"type": "string"}}}),
    Route("DELETE", "/api/tokens/{name}", revoke_token, "Revoke a token (admin)", role="admin",
          params=(Param("name", "path"),), codes=(200, 404)),
)


def test_jobs_enabled() -> bool:
    return os.environ.get(TEST_JOBS_VAR) == "1"

