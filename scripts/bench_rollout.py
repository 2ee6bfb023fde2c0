#!/usr/bin/env python3
"""Benchmark: redeploys of the web role on the lab — wall time and SSH exec calls per host.

Needs a running lab (`csdeploy lab up`). Creates environment `bench` from blueprints/demo.yml
without the worker role (so the figures are the web role's: web VM with Redis, db VM),
then redeploys v2, v1, v2, ... and prints each run's wall time and exec calls per host.
Kamal's documented figure for one role is about 30 exec calls per host.

    python scripts/bench_rollout.py [--rounds 4] [--keep]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CLI = [sys.executable, "-m", "cloudstack_deploy"]
SETS = ["--set", "roles.worker.count=0"]


def run(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"csdeploy {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return took, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="do not tear the environment down")
    args = parser.parse_args()
    took, _ = run("create-env", "blueprints/demo.yml", "--env", "bench", "--version", "v1", "--progress", "plain",
                  *SETS)
    print(f"create-env (3 phases: provision, SSH, rollout v1): {took:.1f}s")
    rows = []
    for i in range(args.rounds):
        version = "v2" if i % 2 == 0 else "v1"
        took, out = run("deploy", "blueprints/demo.yml", "--env", "bench", "--version", version, "--json",
                        "--progress", "plain", *SETS)
        calls = json.loads(out)["ssh_exec_calls"]   # the result is one (indented) JSON document
        rows.append((version, took, calls))
        print(f"redeploy {version}: {took:5.2f}s  SSH exec calls per host: "
              + ", ".join(f"{h} {n}" for h, n in sorted(calls.items())))
    walls = [r[1] for r in rows]
    web = [r[2].get("bench-web-1", 0) for r in rows]
    print(f"median redeploy {statistics.median(walls):.2f}s; web host {statistics.median(web):.0f} exec calls "
          f"(Kamal: about 30 per host for one role, i.e. {30 / statistics.median(web):.1f}x more)")
    if not args.keep:
        run("teardown", "--env", "bench", "--yes", "--progress", "plain")


if __name__ == "__main__":
    main()
