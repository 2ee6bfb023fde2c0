"""Test doubles of the server: a deploy that touches no host, given to the worker in-process
(the product has no switch for it), and the application served from a thread of the test
process on a free loopback port, for tests that talk to it as a client does (the CLI's
``--server``) while the runner stays the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from cloudstack_deploy.errors import CsdeployError
from cloudstack_deploy.progress import Event
from cloudstack_deploy.server import queue
from cloudstack_deploy.server.worker import JobProgress, Runner
from cloudstack_deploy.store import Journal
from cloudstack_deploy.store.url import StoreURL
from tests.support.ports import free_port


def fake_deploy(url: StoreURL, seconds: float = 0.2) -> Runner:
    """A deploy or rollback that touches no host but writes the history store's deployment
    record (at ``url``) as a real one does, with a few progress steps between; a version
    ``fail-...`` fails."""

    async def run(job: queue.Job, progress: JobProgress) -> dict[str, Any]:
        version = job.params.get("version") or "previous"
        journal = Journal(url)
        started = time.monotonic()
        try:
            dep = await journal.deployment_pending(env=job.env, cloud="fake", service="demo", version=version,
                                                   kind=job.kind)
            await journal.deployment_started(dep, {"hosts": ["fake-web-1", "fake-web-2"]})
            for host in ("fake-web-1", "fake-web-2"):
                progress.emit(Event(resource=f"host {host}", action=job.kind, status="running", env=job.env))
                await asyncio.sleep(float(job.params.get("seconds", seconds)))
                progress.emit(Event(resource=f"host {host}", action=job.kind, status="done", detail=version,
                                    env=job.env))
            ok = not version.startswith("fail-")
            await journal.deployment_finished(dep, ok=ok, seconds=time.monotonic() - started,
                                              error=None if ok else "fake failure", metadata={})
            if not ok:
                raise CsdeployError(f"{job.kind} of {version} failed (fake)")
            return {"version": version, "status": "ok"}
        finally:
            journal.close()

    return run


@contextlib.contextmanager
def served_in_thread(app: web.Application) -> Iterator[str]:
    """``app`` (its worker included) served on 127.0.0.1 from a thread with its own event
    loop; yields its URL and stops it after."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, name="served-app", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise AssertionError("the application did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
