#!/usr/bin/env python3
"""Benchmark: the team server's API latency with N deployments in the history store.

Fills a fresh store (SQLite in a temp dir, or the PostgreSQL of CSDEPLOY_BENCH_PG_URL) with N
deployments over 10 environments (each with its two events), starts the server's application
on a loopback port, and times R requests of each kind, one at a time, over one connection:
list (GET /api/deployments, the default page of 100, and one environment's page), show (GET
/api/deployments/{id}), and the job list. Prints median, p95 and max in milliseconds.

    python scripts/bench_api.py [--deployments 1000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from cloudstack_deploy.server import access  # noqa: E402
from cloudstack_deploy.server.app import make_app  # noqa: E402
from cloudstack_deploy.store import records  # noqa: E402
from cloudstack_deploy.store.db import Store  # noqa: E402
from cloudstack_deploy.store.url import parse_store_url  # noqa: E402


def fill(store: Store, n: int) -> list[str]:
    ids = []
    for i in range(n):
        dep = records.deployment_pending(store, env=f"env-{i % 10}", cloud="bench", service="shop",
                                         version=f"v{i}", kind="deploy", by="bench")
        records.deployment_started(store, dep, {"hosts": 4})
        records.deployment_finished(store, dep, ok=i % 7 != 0, seconds=12.5, error=None if i % 7 else "watch failed",
                                    metadata={})
        ids.append(dep)
    return ids


async def timed(session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int,
                path_of: object) -> list[float]:
    took = []
    for n in range(count):
        path = path_of(n) if callable(path_of) else path_of
        started = time.perf_counter()
        async with session.get(url + path, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, (path, resp.status)
        took.append((time.perf_counter() - started) * 1000)
    return took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="csdeploy-bench-api-"))
    url = os.environ.get("CSDEPLOY_BENCH_PG_URL") or f"sqlite:///{tmp / 'history.db'}"
    parsed = parse_store_url(url)
    assert parsed is not None
    with Store(parsed) as store:
        started = time.perf_counter()
        ids = await asyncio.to_thread(fill, store, args.deployments)
        print(f"store {parsed.display}: {args.deployments} deployments written in {time.perf_counter() - started:.1f}s")
        token = access.create_token(store, name="bench", role="viewer")[1]
        runner = web.AppRunner(make_app(store), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port the OS chose
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        rng = random.Random(7)
        cases = [
            ("list: GET /api/deployments (100 newest)", "/api/deployments"),
            ("list: GET /api/deployments?env=env-3&status=deployed", "/api/deployments?env=env-3&status=deployed"),
            ("list: GET /api/deployments?limit=1000", "/api/deployments?limit=1000"),
            ("show: GET /api/deployments/{id}", lambda n: f"/api/deployments/{rng.choice(ids)}"),
            ("list: GET /api/jobs", "/api/jobs"),
        ]
        try:
            async with aiohttp.ClientSession() as session:
                await timed(session, base, headers, 5, "/api/deployments")  # warm up
                print(f"{'request':58} {'n':>5} {'median':>8} {'p95':>8} {'max':>8}  (ms)")
                for name, path in cases:
                    count = max(10, args.requests // 10) if "limit=1000" in name else args.requests
                    took = sorted(await timed(session, base, headers, count, path))
                    p95 = took[min(len(took) - 1, int(len(took) * 0.95))]
                    print(f"{name:58} {count:5d} {statistics.median(took):8.2f} {p95:8.2f} {took[-1]:8.2f}")
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
