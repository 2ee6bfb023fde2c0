#!/usr/bin/env python3
"""Benchmark: reap N expired environments on the lab simulator, at several --max-parallel.

Each round creates N environments at once (1 VM with a public IP and a data disk each, TTL
1 s), waits until they expire, then times `reap` (listing, locking, teardown, the re-list
that proves each is gone). Async jobs take --job seconds and the client polls every
--poll seconds, as with the docker-backed lab, so the figures show how much concurrency buys.

    python scripts/bench_reap.py [--envs 10] [--parallel 1 4 10] [--job 0.2] [--poll 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloudstack_deploy.blueprint import load_blueprint  # noqa: E402
from cloudstack_deploy.cloud import Cloud, CloudConfig  # noqa: E402
from cloudstack_deploy.lab.simulator.server import SimulatorConfig, ThreadedSimulator  # noqa: E402
from cloudstack_deploy.progress import Recorder  # noqa: E402
from cloudstack_deploy.provision.reap import reap  # noqa: E402
from cloudstack_deploy.provision.run import CreateOptions, create_env  # noqa: E402
from cloudstack_deploy.state import EnvState  # noqa: E402

DISK = "roles.web.disk={size: 5, mount: /data/web}"


async def round_(config: CloudConfig, envs: int, parallel: int) -> tuple[float, int, int]:
    bp = load_blueprint(ROOT / "blueprints" / "minimal.yml", overrides=[DISK])
    async with Cloud(config, max_in_flight=40) as cloud:
        names = [f"bench-{parallel}-{i}" for i in range(envs)]
        await asyncio.gather(*(create_env(cloud, bp, n, EnvState(n), Recorder(),
                                          CreateOptions(ttl=timedelta(seconds=1), ssh_timeout=120))
                               for n in names))
        await asyncio.sleep(1.5)
        started = time.perf_counter()
        result = await reap(cloud, Recorder(), prefix=f"bench-{parallel}", max_parallel=parallel)
        wall = time.perf_counter() - started
    return wall, len(result.of("removed")), len(result.of("failed"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=10)
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--job", type=float, default=0.2, help="simulator --job-seconds")
    parser.add_argument("--poll", type=float, default=0.25, help="job poll interval of the client")
    args = parser.parse_args()
    sim_config = SimulatorConfig(port=0, api_key="bench-key", secret_key="bench-secret", vm_boot_seconds=0.2,
                                 job_seconds=args.job, public_range="127.39.0.0/16",
                                 limits={"user_vm": args.envs * 2 + 10, "public_ip": args.envs * 4 + 10,
                                         "network": args.envs * 2 + 10, "volume": args.envs * 2 + 10})
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ThreadedSimulator(sim_config) as sim:
        os.environ["CSDEPLOY_HOME"] = tmp
        config = CloudConfig(endpoint=sim.endpoint, key="bench-key", secret="bench-secret", source="bench",
                             poll_interval=args.poll)
        for parallel in args.parallel:
            rows.append((parallel, *asyncio.run(round_(config, args.envs, parallel))))
    print(f"reap of {args.envs} expired environments on the lab simulator (job {args.job}s, poll {args.poll}s)")
    print(f"{'max-parallel':>12} {'wall s':>8} {'removed':>8} {'failed':>7}")
    for parallel, wall, removed, failed in rows:
        print(f"{parallel:>12} {wall:>8.2f} {removed:>8} {failed:>7}")


if __name__ == "__main__":
    main()
