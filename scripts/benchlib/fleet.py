"""Fleet size: create-env --skip-rollout and teardown of 1, 50 and 200 VMs on the simulator,
sizes alternating within each round, medians over the rounds (one run swings by 10%).

The simulator (memory backend, its own process, limits lifted) makes every VM take L seconds
to boot and every job 0.2 s, so wall/L shows how far from "as fast as one VM" a size is. The
CLI runs as a user runs it, with `-v --log-format json`: its log lines give the API calls by
command (job polls counted apart), and `wait4` its peak RSS.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloudstack_deploy.lab.simulator.catalog import RESOURCE_LIMITS

from .kamal import CLI, ROOT

KEY, SECRET = "bench-key", "bench-secret"
POLLS = ("queryAsyncJobResult", "listAsyncJobs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def simulator(home: Path, *, boot: float, job: float = 0.2, poll: float = 0.25, public_range: str = "127.230.0.0/16",
              state: Path | None = None) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """The lab simulator in a process of its own (memory backend, limits lifted, VMs booting in
    ``boot`` s, jobs taking ``job`` s) and the CLI's environment for it (CSDEPLOY_HOME ``home``)."""
    port = _free_port()
    argv = [*CLI, "lab", "simulator", "--port", str(port), "--api-key", KEY, "--secret-key", SECRET,
            "--vm-boot-seconds", str(boot), "--job-seconds", str(job), "--public-range", public_range,
            *[a for _, lim, _ in RESOURCE_LIMITS for a in ("--limit", f"{lim}=-1")]]
    if state is not None:
        argv += ["--state", str(state)]
    sim = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        assert sim.stdout is not None
        for line in sim.stdout:
            if "listening on" in line:
                break
        yield sim, {**os.environ, "CSDEPLOY_HOME": str(home),
                    "CLOUDSTACK_ENDPOINT": f"http://127.0.0.1:{port}/client/api", "CLOUDSTACK_KEY": KEY,
                    "CLOUDSTACK_SECRET": SECRET, "CLOUDSTACK_POLL_INTERVAL": str(poll)}
    finally:
        sim.terminate()
        sim.wait(timeout=30)


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, str, str]:
    """Wall seconds, peak RSS (KiB), stdout, stderr of one CLI run."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"$ {' '.join(argv)}\nexit {proc.returncode}\n{stderr[-4000:]}")
    return took, usage.ru_maxrss, stdout, stderr


def _calls(stderr: str) -> Counter[str]:
    calls: Counter[str] = Counter()
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "api call":
                calls[event["command"]] += 1
    return calls


def run(sizes: tuple[int, ...], boot: float, state: bool, rounds: int = 3) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="csdeploy-bench-fleet-") as tmp, \
            simulator(Path(tmp) / "home", boot=boot, state=Path(tmp) / "state.json" if state else None) as (_, env):
        rows: dict[str, dict[str, Any]] = {}
        walls: dict[str, tuple[list[float], list[float]]] = {str(n): ([], []) for n in sizes}
        for r in range(rounds):  # sizes alternate within a round; medians over the rounds
            for n in sizes:
                name = f"fleet{n}r{r}"
                create = [*CLI, "-v", "--log-format", "json", "create-env",
                          str(ROOT / "blueprints" / "minimal.yml"), "--env", name, "--skip-rollout",
                          "--progress", "plain", "--set", f"roles.web.count={n}", "--max-ssh", "200"]
                c_wall, c_rss, _, c_err = _timed(create, env)
                teardown = [*CLI, "-v", "--log-format", "json", "teardown", "--env", name, "--yes",
                            "--progress", "plain"]
                t_wall, t_rss, _, t_err = _timed(teardown, env)
                walls[str(n)][0].append(c_wall)
                walls[str(n)][1].append(t_wall)
                c_calls, t_calls = _calls(c_err), _calls(t_err)
                rss = round(max(c_rss, t_rss) / 1024, 1)
                rows[str(n)] = {
                    "create_calls_per_vm": round(sum(v for k, v in c_calls.items() if k not in POLLS) / n, 2),
                    "create_job_polls": sum(c_calls[k] for k in POLLS),
                    "teardown_calls_per_vm": round(sum(v for k, v in t_calls.items() if k not in POLLS) / n, 2),
                    "teardown_job_polls": sum(t_calls[k] for k in POLLS),
                    "peak_rss_mb": max(rss, rows.get(str(n), {}).get("peak_rss_mb", 0)),
                    "create_calls": dict(c_calls.most_common()),
                    "teardown_calls": dict(t_calls.most_common()),
                }
                print(f"round {r + 1} {n:>4} VMs: create {c_wall:6.2f}s ({c_wall / boot:.1f} L), teardown "
                      f"{t_wall:6.2f}s, {rows[str(n)]['create_calls_per_vm']} calls/VM + "
                      f"{rows[str(n)]['create_job_polls']} polls, peak RSS {rss} MB", flush=True)
        for n, (c, t) in walls.items():
            c_med, t_med = statistics.median(c), statistics.median(t)
            rows[n].update({"create_s": round(c_med, 2), "create_wall_over_boot": round(c_med / boot, 2),
                            "teardown_s": round(t_med, 2), "create_runs": [round(x, 2) for x in c],
                            "teardown_runs": [round(x, 2) for x in t]})
    one = rows[str(sizes[0])]
    for row in rows.values():
        row["create_ratio_to_1"] = round(row["create_s"] / one["create_s"], 2)
        row["teardown_ratio_to_1"] = round(row["teardown_s"] / one["teardown_s"], 2)
    return rows


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run((1, 50), 3.0, False, 1), indent=2))
    sys.exit(0)
