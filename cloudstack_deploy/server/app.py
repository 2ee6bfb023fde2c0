"""The aiohttp application of `csdeploy serve`: the API's routes behind their role checks, the
dashboard, and the queue's worker started and stopped with the application."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import CsdeployError, InvalidInput
from ..log import get_logger, redact
from ..store.db import Store
from . import access, api, queue
from .access import RANK
from .schedule import Scheduler
from .worker import Worker

log = get_logger("server")
SCHEDULER = web.AppKey("scheduler", Any)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def protect(route: api.Route) -> api.Handler:
    """``route``'s handler behind its check: 401 without a valid token, 403 below its role;
    csdeploy errors as JSON (400 for bad input)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            if route.role is not None:
                text = _bearer(request)
                who = await api.db(request, access.authenticate, text) if text else None
                if who is None:
                    await api.audit(request, f"{route.method} {route.path}", None, "unauthenticated")
                    return web.Response(status=401, text=json.dumps({"error": "a valid bearer token is needed"}),
                                        content_type="application/json",
                                        headers={"WWW-Authenticate": 'Bearer realm="csdeploy"'})
                request[api.PRINCIPAL] = who
                if RANK[who.role] < RANK[route.role]:
                    await api.audit(request, f"{route.method} {route.path}", request.match_info.get("env"),
                                    "denied")
                    return api.error(403, f"{who.role} token {who.name!r} may not do this ({route.role} needed)")
            return await route.handler(request)
        except InvalidInput as exc:
            return api.error(400, str(exc) + (f" ({exc.hint})" if exc.hint else ""))
        except CsdeployError as exc:
            return api.error(502, str(exc))
        except web.HTTPException:
            raise
        except Exception:  # a bug: said in the log (redacted), not in the answer
            log.exception("request failed", route=f"{route.method} {route.path}")
            return api.error(500, "internal error (the server's log has the details)")

    handler.__name__ = route.handler.__name__
    return handler


def make_app(store: Store, *, worker: Worker | None = None, test_jobs: bool = False,
             blueprints: Path | None = None, scheduler: Scheduler | None = None) -> web.Application:
    """The application over ``store``; ``worker`` runs the queue's jobs (its ``runners`` say how
    each kind runs: `serve` gives the service functions, a test may give its own);
    ``scheduler`` queues the blueprints' scheduled backups."""
    app = web.Application(client_max_size=256 * 1024)
    app[api.STORE] = store
    app[api.TEST_JOBS] = test_jobs
    app[api.WORKER] = worker
    app[api.BLUEPRINTS] = blueprints.resolve() if blueprints is not None else None
    app[SCHEDULER] = scheduler
    for route in api.ROUTES:
        app.router.add_route(route.method, route.path, protect(route))
    from . import dashboard

    dashboard.add_routes(app)
    app.cleanup_ctx.append(_worker_running)
    app.cleanup_ctx.append(_scheduler_running)
    return app


async def _scheduler_running(app: web.Application) -> AsyncIterator[None]:
    scheduler: Scheduler | None = app[SCHEDULER]
    task = asyncio.get_running_loop().create_task(scheduler.run_forever()) if scheduler else None
    yield
    if scheduler is not None and task is not None:
        scheduler.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _worker_running(app: web.Application) -> AsyncIterator[None]:
    worker: Worker | None = app[api.WORKER]
    task = asyncio.get_running_loop().create_task(worker.run_forever()) if worker else None
    yield
    if worker is not None and task is not None:
        await worker.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidInput(f"--bind {text!r}: HOST:PORT, e.g. 127.0.0.1:8700")
    return host.strip("[]"), int(port)


def serve(store: Store, *, bind: str, blueprints: Path | None = None, max_jobs: int = 2, heartbeat: float = 2.0, stale_after: float = 30.0,
          poll: float = 0.5, schedule_interval: float = 20.0, print_: Any = print) -> None:
    """Run the server until interrupted (SIGINT/SIGTERM): the API, the dashboard, a worker and
    the scheduler of the blueprints' backups."""
    from .worker import RUNNERS

    host, port = parse_bind(bind)
    test_jobs = api.test_jobs_enabled()
    kinds = queue.KINDS + (queue.TEST_KINDS if test_jobs else ())
    worker = Worker(store, kinds=kinds, max_jobs=max_jobs, heartbeat=heartbeat, stale_after=stale_after,
                    poll=poll, runners=dict(RUNNERS))
    app = make_app(store, worker=worker, test_jobs=test_jobs, blueprints=blueprints,
                   scheduler=Scheduler(store, interval=schedule_interval))
    print_(redact(f"csdeploy serve: http://{host}:{port}/ (API: /api/openapi.json; store {store.url.display})"))
    web.run_app(app, host=host, port=port, print=None, access_log_format='%a "%r" %s %b %Tfs')
