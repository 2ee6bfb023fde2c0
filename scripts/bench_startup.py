#!/usr/bin/env python3
"""Benchmark: how soon after its process starts csdeploy answers `--help` and sends its first
CloudStack API call.

A memory-backend simulator runs in this process behind a loopback relay that notes when the
first bytes of a request arrive. Each command runs as a fresh `python -m cloudstack_deploy`
(its own CSDEPLOY_HOME, the simulator as its cloud) and is timed from just before the process
is started:

  --help       until the process exits;
  envs         until the first API request reaches the relay, and until the process exits;
  status       `status --env E --blueprint B` of an environment this machine has no inventory
               of: its first call is the inventory's rebuild from the cloud;
  plan         `plan B --env E`: its first call is the plan's first read.

Commands alternate (one of each per round, and with two or more --tree checkouts, one run
of each checkout per command, so a before/after pair shares the machine's load); medians and
the fastest of --runs rounds are printed, with the CPU time each process used (it moves far
less with the load than wall times do; also read when the first request comes), the load
average and each checkout's commit. The
package's bytecode is compiled first, as `pip install` does.

    python scripts/bench_startup.py [--runs 9] [--tree PATH [--tree PATH]]
    mkdir /tmp/before-REV && git archive REV | tar -x -C /tmp/before-REV
    python scripts/bench_startup.py --tree /tmp/before-REV --tree .

Not a test: run it on a quiet machine; the figures are what docs/benchmarks.md records.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloudstack_deploy.lab.simulator.server import SimulatorConfig, ThreadedSimulator  # noqa: E402

KEY, SECRET = "bench-api-key", "bench-secret-key"
BLUEPRINT = ROOT / "blueprints" / "demo.yml"


class Relay:
    """A loopback TCP relay to the simulator that notes when each request's first bytes came."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.first: list[float] = []
        self.first_cpu: list[float] = []
        self.pid = 0  # the process measured: its CPU time so far is read when its first request comes
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="relay").start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(65536)
        if not first:
            writer.close()
            return
        self.first.append(time.time())
        if not self.first_cpu and (cpu := cpu_of(self.pid)) is not None:
            self.first_cpu.append(cpu)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        up_writer.write(first)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def reset(self) -> None:
        self.first.clear()
        self.first_cpu.clear()


def cpu_of(pid: int) -> float | None:
    """User + system CPU seconds process ``pid`` has used so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Run = tuple[float, float | None, float, float | None]


def run_once(argv: list[str], env: dict[str, str], relay: Relay) -> Run:
    """(seconds until exit, seconds until the first API request or None, CPU seconds, CPU
    seconds until the first API request or None) of one process. CPU times (user + system)
    move little with the machine's load; wall times do. The CPU time at the first request is
    read from /proc when its first bytes come (clock ticks: 10 ms steps)."""
    relay.reset()
    started = time.time()
    # cwd: `python -m` puts it first on sys.path, before PYTHONPATH (the checkout measured)
    proc = subprocess.Popen([sys.executable, "-m", "cloudstack_deploy", *argv], env=env, cwd=env["CSDEPLOY_HOME"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay.pid = proc.pid
    _, _, usage = os.wait4(proc.pid, 0)
    ended = time.time()
    proc.returncode = 0  # reaped above
    first = min(relay.first) - started if relay.first else None
    return ended - started, first, usage.ru_utime + usage.ru_stime, (relay.first_cpu or [None])[0]


def commit_of(tree: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=tree)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=tree).stdout.strip()
    if out.returncode != 0:  # a copy without git (`git archive REV | tar -x -C DIR`): its name
        return tree.name
    return out.stdout.strip() + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="rounds (one of each command per round)")
    parser.add_argument("--tree", action="append", default=None,
                        help="a checkout whose csdeploy is measured (repeat it to compare checkouts, "
                             "alternating within each round); default: this one")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in (args.tree or [str(ROOT)])]
    for tree in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "cloudstack_deploy")], check=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    config = SimulatorConfig(port=0, api_key=KEY, secret_key=SECRET, ssh=False, job_seconds=0.01,
                             vm_boot_seconds=0.01, public_range="127.78.91.0/24")
    commands = {"--help": ["--help"], "envs": ["envs"],
                "status": ["status", "--env", "bench", "--blueprint", str(BLUEPRINT)],
                "plan": ["plan", str(BLUEPRINT), "--env", "bench"]}
    results: dict[tuple[int, str], list[Run]] = {}
    with ThreadedSimulator(config) as sim, tempfile.TemporaryDirectory(prefix="bench-startup-") as home:
        relay = Relay(int(sim.endpoint.split(":")[2].split("/")[0]))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSTACK_", "CSDEPLOY_"))}
        for _ in range(args.runs):
            for name, argv in commands.items():
                for index, tree in enumerate(trees):
                    Path(home, str(index)).mkdir(exist_ok=True)
                    env = {**base, "CSDEPLOY_HOME": str(Path(home) / str(index)), "PYTHONPATH": str(tree),
                           "CLOUDSTACK_ENDPOINT": f"http://127.0.0.1:{relay.port}/client/api",
                           "CLOUDSTACK_KEY": KEY, "CLOUDSTACK_SECRET": SECRET, "CSDEPLOY_STATE_URL": "none"}
                    results.setdefault((index, name), []).append(run_once(argv, env, relay))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average at start {load}, {args.runs} rounds, medians (fastest)")
    rows = [("commit", "command", "first API call s", "exit s", "CPU s", "CPU at first call s")]

    def shown(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ({min(values):.3f})" if values else "-"

    for index, tree in enumerate(trees):
        for name in commands:
            got = results[(index, name)]
            rows.append((commit_of(tree), name, shown([f for _, f, _, _ in got if f is not None]),
                         shown([e for e, _, _, _ in got]), shown([c for _, _, c, _ in got]),
                         shown([c for _, _, _, c in got if c is not None])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows))


if __name__ == "__main__":
    main()
