#!/usr/bin/env python3
"""Benchmark: create-env --skip-rollout of 1 VM and of N VMs on the lab simulator, side by side.

Prints wall time of each, their ratio, and API calls per VM. VMs take --vm-boot-seconds to
boot (3 s by default, as the issue asks), so a serial provisioner would need about N times
the single-VM time; ours should stay close to 1x.

    python scripts/bench_provision.py [--vms 30] [--boot 3] [--poll 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloudstack_deploy.blueprint import load_blueprint  # noqa: E402
from cloudstack_deploy.cloud import Cloud, CloudConfig  # noqa: E402
from cloudstack_deploy.lab.simulator.server import SimulatorConfig, ThreadedSimulator  # noqa: E402
from cloudstack_deploy.progress import Recorder  # noqa: E402
from cloudstack_deploy.provision.run import CreateOptions, create_env  # noqa: E402
from cloudstack_deploy.provision.teardown import teardown_env  # noqa: E402
from cloudstack_deploy.state import EnvState  # noqa: E402


async def one(endpoint: str, count: int, poll: float, home: Path) -> tuple[float, int, Counter[str]]:
    bp = load_blueprint(ROOT / "blueprints" / "minimal.yml", overrides=[f"roles.web.count={count}"])
    config = CloudConfig(endpoint=endpoint, key="bench-key", secret="bench-secret", source="bench",
                         poll_interval=poll)
    env = f"bench{count}"
    async with Cloud(config, max_in_flight=20) as cloud:
        started = time.perf_counter()
        result = await create_env(cloud, bp, env, EnvState(env, home), Recorder(),
                                  CreateOptions(max_ssh=50, ssh_timeout=120))
        wall = time.perf_counter() - started
        calls = Counter(cloud.calls)
        await teardown_env(cloud, env, Recorder())
    assert len(result.inventory["hosts"]) == count
    return wall, sum(calls.values()), calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=30)
    parser.add_argument("--boot", type=float, default=3.0, help="simulator --vm-boot-seconds")
    parser.add_argument("--job", type=float, default=0.2, help="simulator --job-seconds")
    parser.add_argument("--poll", type=float, default=0.25, help="job poll interval of the client")
    args = parser.parse_args()
    config = SimulatorConfig(port=0, api_key="bench-key", secret_key="bench-secret", vm_boot_seconds=args.boot,
                             job_seconds=args.job, public_range="127.210.0.0/16",
                             limits={"user_vm": args.vms + 10, "public_ip": args.vms + 10})
    with tempfile.TemporaryDirectory() as tmp, ThreadedSimulator(config) as sim:
        os.environ["CSDEPLOY_HOME"] = tmp
        rows = []
        for count in (1, args.vms):
            wall, calls, by_cmd = asyncio.run(one(sim.endpoint, count, args.poll, Path(tmp)))
            rows.append((count, wall, calls, by_cmd))
    print(f"create-env --skip-rollout on the lab (vm boot {args.boot}s, job {args.job}s, poll {args.poll}s)")
    print(f"{'VMs':>4} {'wall s':>8} {'API calls':>10} {'calls/VM':>9}")
    for count, wall, calls, _ in rows:
        print(f"{count:>4} {wall:>8.2f} {calls:>10} {calls / count:>9.1f}")
    (c1, w1, _, _), (cn, wn, _, by_cmd) = rows
    print(f"ratio wall({cn} VMs) / wall(1 VM) = {wn / w1:.2f}  (a serial provisioner: ~{cn}x)")
    print("calls by command for the larger run:", ", ".join(f"{k} {v}" for k, v in by_cmd.most_common()))


if __name__ == "__main__":
    main()
