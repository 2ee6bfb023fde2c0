#!/usr/bin/env python3
"""Benchmark: create-env --skip-rollout of 1 VM and of N VMs on the lab simulator, side by side.

Prints wall time of each, their ratio, and API calls per VM. VMs take --vm-boot-seconds to
boot (3 s by default, as the issue asks), so a serial provisioner would need about N times
the single-VM time; ours should stay close to 1x. Every account limit is lifted, so N is
bounded by nothing but the public range.

With ``--state`` the same runs are made twice, on a simulator without and one with a state
file (the lab's default), and the table shows both: persistence must not slow the cloud.
``--history K`` adds a second table: the time of one state-changing call on a simulator
that already holds K finished jobs (0 and K), without and with a state file.

``--against REF`` compares two versions of csdeploy side by side instead: the checkout and
REF (a commit, extracted with `git archive`), each running create-env --skip-rollout and
teardown of 1 and N VMs through the CLI as a user runs it (``-v --log-format json``, whose
lines give the API calls by command), on one simulator in its own process, versions and
sizes alternating within each round; medians, each version's N/1 ratios and the load. The N
VMs sit behind a load balancer, and the ratio divides by 1 VM behind one (like with like); 1 VM
without one (minimal.yml as it is) is run and shown too.

    python scripts/bench_provision.py [--vms 30] [--boot 3] [--poll 0.25] [--state] [--rounds 3]
                                      [--history 3000]
    python scripts/bench_provision.py --against 6268b7a --vms 200 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from cloudstack_deploy.blueprint import load_blueprint  # noqa: E402
from cloudstack_deploy.cloud import Cloud, CloudConfig  # noqa: E402
from cloudstack_deploy.lab.simulator.catalog import RESOURCE_LIMITS  # noqa: E402
from cloudstack_deploy.lab.simulator.server import SimulatorConfig, ThreadedSimulator  # noqa: E402
from cloudstack_deploy.progress import Recorder  # noqa: E402
from cloudstack_deploy.provision.run import CreateOptions, create_env  # noqa: E402
from cloudstack_deploy.provision.teardown import teardown_env  # noqa: E402
from cloudstack_deploy.state import EnvState  # noqa: E402

KEY, SECRET = "bench-key", "bench-secret"
UNLIMITED = {name: -1 for _, name, _ in RESOURCE_LIMITS}


@dataclass
class Run:
    count: int
    wall: float
    sim_cpu: float
    calls: int
    by_cmd: Counter[str]


async def one(sim: ThreadedSimulator, count: int, poll: float, home: Path) -> Run:
    bp = load_blueprint(ROOT / "blueprints" / "minimal.yml", overrides=[f"roles.web.count={count}"])
    config = CloudConfig(endpoint=sim.endpoint, key=KEY, secret=SECRET, source="bench", poll_interval=poll)
    env = f"bench{count}"
    async with Cloud(config, max_in_flight=20) as cloud:
        cpu = sim.call(time.thread_time)  # the simulator's own CPU: a figure a busy machine blurs less
        started = time.perf_counter()
        result = await create_env(cloud, bp, env, EnvState(env, home), Recorder(),
                                  CreateOptions(max_ssh=50, ssh_timeout=300))
        wall = time.perf_counter() - started
        cpu = sim.call(time.thread_time) - cpu
        calls = Counter(cloud.calls)
        await teardown_env(cloud, env, Recorder())
    assert len(result.inventory.hosts) == count
    return Run(count, wall, cpu, sum(calls.values()), calls)


def sim_config(args: argparse.Namespace, state_file: Path | None) -> SimulatorConfig:
    return SimulatorConfig(port=0, api_key=KEY, secret_key=SECRET, vm_boot_seconds=args.boot,
                           job_seconds=args.job, public_range="127.210.0.0/16", limits=dict(UNLIMITED),
                           state_file=str(state_file) if state_file else None)


def fleet(args: argparse.Namespace, tmp: Path, state: bool) -> list[Run]:
    state_file = tmp / "sim-state.json" if state else None
    with ThreadedSimulator(sim_config(args, state_file)) as sim:
        return [asyncio.run(one(sim, count, args.poll, tmp)) for count in (1, args.vms)]


# ---- one changing call as history grows -------------------------------------------------------------

def _seed_history(sim: ThreadedSimulator, finished: int) -> None:
    """Add ``finished`` finished jobs, each a copy of a real finished deploy job (with its VM)."""
    def add() -> None:
        jobs = sim.sim.col("jobs")
        model = next(j for j in jobs.values() if j["jobstatus"] == 1 and "virtualmachine" in (j.get("jobresult") or {}))
        for _ in range(finished):
            job = copy.deepcopy(model)
            job["id"] = job["jobid"] = job["id"][:-12] + os.urandom(6).hex()
            sim.sim.add("jobs", job)
        sim.sim.changed()

    sim.call(add)


def _changing_calls(sim: ThreadedSimulator, calls: int) -> float:
    """Median seconds of a createTags + queryAsyncJobResult round (the cs client, fetch_result)."""
    from cs import CloudStack

    api = CloudStack(endpoint=sim.endpoint, key=KEY, secret=SECRET, poll_interval=0.01, fetch_result=True,
                     job_timeout=60)
    net = api.listNetworks()["network"][0]
    took = []
    for i in range(calls):
        started = time.perf_counter()
        api.createTags(resourcetype="Network", resourceids=net["id"], tags=[{"key": f"b{i}", "value": "v"}])
        took.append(time.perf_counter() - started)
    return statistics.median(took)


def history(args: argparse.Namespace, tmp: Path) -> list[tuple[str, int, float, int]]:
    from cs import CloudStack

    rows = []
    for label, state in (("memory", False), ("--state", True)):
        for finished in (0, args.history):
            state_file = tmp / f"hist-{label.strip('-')}-{finished}.json" if state else None
            cfg = sim_config(args, state_file)
            cfg.vm_boot_seconds, cfg.job_seconds = 0.0, 0.0
            with ThreadedSimulator(cfg) as sim:
                api = CloudStack(endpoint=sim.endpoint, key=KEY, secret=SECRET, poll_interval=0.01,
                                 fetch_result=True)
                zone = api.listZones()["zone"][0]["id"]
                off = api.listNetworkOfferings(guestiptype="Isolated")["networkoffering"][0]["id"]
                net = api.createNetwork(name="h", zoneid=zone, networkofferingid=off)["network"]
                api.deployVirtualMachine(zoneid=zone, networkids=net["id"], name="h-1",
                                         serviceofferingid=api.listServiceOfferings()["serviceoffering"][0]["id"],
                                         templateid=api.listTemplates(templatefilter="featured")["template"][0]["id"])
                _seed_history(sim, finished)
                per_call = _changing_calls(sim, args.history_calls)
                size = state_file.stat().st_size if state_file and state_file.exists() else 0
                size += sum(p.stat().st_size for p in tmp.glob(f"{state_file.name}.*")) if state_file else 0
            rows.append((label, finished, per_call, size))
    return rows


# ---- two versions side by side ---------------------------------------------------------------------

def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cli_run(tree: Path, argv: list[str], env: dict[str, str], sim_pid: int) -> tuple[float, float, Counter[str]]:
    """Wall seconds, CPU seconds (the CLI's and the simulator's: a figure a busy machine blurs
    less than wall time) and API calls by command of one CLI run of the csdeploy in ``tree``."""
    import json
    import subprocess

    with tempfile.TemporaryFile("w+") as err:
        sim_cpu = _cpu_of(sim_pid)
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "cloudstack_deploy", "-v", "--log-format", "json", *argv],
                                stdout=subprocess.DEVNULL, stderr=err, cwd=tree, env={**env, "PYTHONPATH": str(tree)})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        cpu = usage.ru_utime + usage.ru_stime + _cpu_of(sim_pid) - sim_cpu
        err.seek(0)
        stderr = err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{tree}: csdeploy {' '.join(argv)}: exit {os.waitstatus_to_exitcode(status)}\n{stderr[-3000:]}")
    calls: Counter[str] = Counter()
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "api call":
                calls[event["command"]] += 1
    return wall, cpu, calls


def against(args: argparse.Namespace) -> None:
    import subprocess

    from benchlib.fleet import simulator

    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="csdeploy-bench-against-") as tmp:
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.against], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        trees = {f"before {args.against}": before, f"after {head.stdout.strip()}+": ROOT}
        for tree in trees.values():  # as pip install does: bytecode first, not inside the timings
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "cloudstack_deploy")], check=True)
        # Like with like: the N-VM blueprint puts its VMs behind a load balancer (the default
        # from 2 VMs on), so the 1-VM run that the N/1 ratio divides by has one VM behind one
        # too (`LB`); the 1-VM run without it (minimal.yml as it is, the rows before 2026-12-06
        # 22:00 divided by that one) stays in the table as `no LB`.
        shapes = [(1, False), (1, True), (args.vms, True)]
        walls: dict[tuple[str, int, bool, str], list[float]] = {}
        cpus: dict[tuple[str, int, bool, str], list[float]] = {}
        calls: dict[tuple[str, int, bool, str], Counter[str]] = {}
        with simulator(Path(tmp) / "home", boot=args.boot, job=args.job, poll=args.poll,
                       public_range=args.public_range) as (sim, env):
            for r in range(args.rounds):
                order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
                for label, tree in order:
                    for n, lb in shapes:
                        name = f"cmp{n}{'l' if lb else 'n'}r{r}{'b' if label.startswith('before') else 'a'}"
                        for what, argv in (
                                ("create", ["create-env", str(ROOT / "blueprints" / "minimal.yml"), "--env", name,
                                            "--skip-rollout", "--progress", "plain", "--set", f"roles.web.count={n}",
                                            "--set", f"roles.web.proxy.load_balancer={str(lb).lower()}",
                                            "--max-ssh", str(max(50, n))]),
                                ("teardown", ["teardown", "--env", name, "--yes", "--progress", "plain"])):
                            wall, cpu, counted = _cli_run(tree, argv, env, sim.pid)
                            walls.setdefault((label, n, lb, what), []).append(wall)
                            cpus.setdefault((label, n, lb, what), []).append(cpu)
                            calls[(label, n, lb, what)] = counted
                        print(f"round {r + 1} {label:<16} {n:>4} VMs {'LB' if lb else 'no LB':<5}: create "
                              f"{walls[(label, n, lb, 'create')][-1]:6.2f}s "
                              f"teardown {walls[(label, n, lb, 'teardown')][-1]:6.2f}s", flush=True)
    polls = ("queryAsyncJobResult", "listAsyncJobs")
    print(f"\ncreate-env --skip-rollout and teardown, CLI, {args.rounds} rounds alternating (vm boot {args.boot}s, "
          f"job {args.job}s, poll {args.poll}s); load average at start {load}, at end "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"{'version':<18} {'VMs':>4} {'LB':<5} {'step':<9} {'median s':>9} {'x1 VM':>6} {'CPU s':>6} "
          f"{'CPU x1':>6} {'calls':>6} {'polls':>6}  runs")
    for label in trees:
        for what in ("create", "teardown"):
            # x1: against the 1-VM run of the same shape (behind a load balancer or not)
            base = {lb: statistics.median(walls[(label, 1, lb, what)]) for lb in (False, True)}
            cpu_base = {lb: statistics.median(cpus[(label, 1, lb, what)]) for lb in (False, True)}
            for n, lb in shapes:
                w, cpu = walls[(label, n, lb, what)], statistics.median(cpus[(label, n, lb, what)])
                c = calls[(label, n, lb, what)]
                print(f"{label:<18} {n:>4} {'LB' if lb else 'no LB':<5} {what:<9} {statistics.median(w):>9.2f} "
                      f"{statistics.median(w) / base[lb]:>6.2f} {cpu:>6.2f} {cpu / cpu_base[lb]:>6.2f} "
                      f"{sum(c.values()):>6} {sum(c[k] for k in polls):>6}  " + " ".join(f"{x:.2f}" for x in w))
    for label in trees:
        c = calls[(label, args.vms, True, "teardown")]
        print(f"{label} teardown of {args.vms}: " + ", ".join(f"{k} {v}" for k, v in c.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=30)
    parser.add_argument("--boot", type=float, default=3.0, help="simulator --vm-boot-seconds")
    parser.add_argument("--job", type=float, default=0.2, help="simulator --job-seconds")
    parser.add_argument("--poll", type=float, default=0.25, help="job poll interval of the client")
    parser.add_argument("--state", action="store_true", help="also run with a state file and compare")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat, alternating the simulators, and report medians (a busy machine is noisy)")
    parser.add_argument("--history", type=int, default=0, metavar="K",
                        help="also time one changing call with K finished jobs in the simulator")
    parser.add_argument("--history-calls", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--public-range", default="127.232.0.0/16",
                        help="the simulator's public addresses with --against (loopback; one range per person)")
    parser.add_argument("--against", metavar="REF",
                        help="compare with csdeploy at REF side by side (CLI runs, create and teardown)")
    args = parser.parse_args()
    if args.against:
        against(args)
        return

    modes = [("memory", False)] + ([("--state", True)] if args.state else [])
    runs: dict[str, list[list[Run]]] = {label: [] for label, _ in modes}
    hist: list[tuple[str, int, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CSDEPLOY_HOME"] = tmp
        for round_ in range(args.rounds):
            for label, state in modes:
                work = Path(tmp) / f"{label.strip('-')}-{round_}"
                work.mkdir()
                runs[label].append(fleet(args, work, state))
        if args.history:
            hist = history(args, Path(tmp))

    print(f"create-env --skip-rollout on the lab (vm boot {args.boot}s, job {args.job}s, poll {args.poll}s, "
          f"limits lifted; median of {args.rounds} round(s), simulators alternating)")
    print(f"{'simulator':<10} {'VMs':>4} {'wall s':>8} {'sim CPU s':>10} {'API calls':>10} {'calls/VM':>9} "
          f"{'wall/1 VM':>10}  wall of each round")
    medians: dict[str, tuple[float, float]] = {}
    for label, rounds in runs.items():
        base = statistics.median(r[0].wall for r in rounds)
        for i, count in enumerate((1, args.vms)):
            walls = [r[i].wall for r in rounds]
            wall, cpu = statistics.median(walls), statistics.median(r[i].sim_cpu for r in rounds)
            calls = rounds[-1][i].calls
            medians[label] = (wall, cpu)
            print(f"{label:<10} {count:>4} {wall:>8.2f} {cpu:>10.2f} {calls:>10} {calls / count:>9.1f} "
                  f"{wall / base:>10.2f}  " + " ".join(f"{w:.1f}" for w in walls))
    if "--state" in medians:
        (mw, mc), (sw, sc) = medians["memory"], medians["--state"]
        print(f"--state / memory at {args.vms} VMs: wall {sw / mw:.3f}, simulator CPU {sc / mc:.3f}  "
              "(target: within 1.10)")
    by_cmd = runs["memory"][-1][-1].by_cmd
    print("calls by command for the larger run:", ", ".join(f"{k} {v}" for k, v in by_cmd.most_common()))
    if hist:
        print()
        print(f"one createTags + its job query, median of {args.history_calls} in a row (simulator jobs take 0 s)")
        print(f"{'simulator':<10} {'finished jobs':>14} {'ms per call':>12} {'state bytes':>12}")
        for label, finished, per_call, size in hist:
            print(f"{label:<10} {finished:>14} {per_call * 1000:>12.1f} {size:>12}")


if __name__ == "__main__":
    main()
