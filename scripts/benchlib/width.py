"""Rollout width: one redeploy to 1, 4 and 8 web hosts of one environment; ratio to 1 host.

Every host switches through its own kamal-proxy; the rollout reads all hosts' state at once
and prepares and switches them in parallel, so the wall time should barely grow with the
number of hosts. Eight web VMs sit behind a load balancer, where csdeploy rolls one host at a
time by default; `rollout.batch` is set to all of them here, since the width of one switch is
what is measured (a rolling deploy takes about one switch per host, by design).
"""

from __future__ import annotations

import statistics
from typing import Any

from .kamal import BLUEPRINT, CLI, sh

ENV = "bench-width"
WIDTHS = (1, 4, 8)


def run(rounds: int, keep: bool) -> dict[str, Any]:
    sets = ["--set", f"roles.web.count={max(WIDTHS)}", "--set", "roles.worker.count=0",
            "--set", f"rollout.batch={max(WIDTHS)}"]
    sh([*CLI, "create-env", str(BLUEPRINT), "--env", ENV, "--version", "v1", "--progress", "plain", *sets])
    walls: dict[int, list[float]] = {n: [] for n in WIDTHS}
    try:
        deploy = [*CLI, "deploy", str(BLUEPRINT), "--env", ENV, "--progress", "plain", *sets]
        for i in range(rounds):
            for n in WIDTHS:
                # every measured host flips version: all hosts on v1 first (not timed), then n of them to v2
                sh([*deploy, "--version", "v1"])
                hosts = ",".join(f"{ENV}-web-{k}" for k in range(1, n + 1))
                took, _ = sh([*deploy, "--version", "v2", "--hosts", hosts])
                walls[n].append(took)
                print(f"round {i + 1}: {n} web host(s) v1 -> v2 in {took:.2f}s", flush=True)
    finally:
        if not keep:
            sh([*CLI, "teardown", "--env", ENV, "--yes", "--progress", "plain"], check=False)
    one = statistics.median(walls[1])
    return {str(n): {"median_s": round(statistics.median(w), 2), "ratio_to_1": round(statistics.median(w) / one, 2),
                     "runs": [round(x, 2) for x in w]} for n, w in walls.items()}
