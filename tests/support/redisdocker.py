"""A `docker` for Redis containers, run by scripts under a real /bin/sh: each "container" is a
real redis-server (Debian's) on a loopback address of its own (port 6379, as in a container),
started, stopped (SIGTERM: Redis saves as it does in a container) and started again with the
same arguments, so what csdeploy's backup and restore scripts do to Redis' files really
happens. `docker exec NAME ...` runs the command here with a `redis-cli` that talks to that
container's Redis first on PATH; `docker run --detach --volumes-from C IMAGE redis-server ARGS`
starts another Redis with ARGS (the paths are this machine's: a container's volume is a
directory here). Only the calls csdeploy's Redis scripts make are answered.

`RedisDocker.start(tmp_path, net)` gives the environment the scripts run with; `container(name,
*args)` starts one Redis; `calls()` is every argv, in order; `fail_runs()` makes `docker run` fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SCRIPT = r'''#!/usr/bin/env python3
import json, os, signal, subprocess, sys, time
path = os.environ["FAKE_REDIS_STATE"]
st = json.load(open(path))
args = sys.argv[1:]
st["calls"].append(args)
def save():  # whole or not at all: a reader (the test, another call) never sees it half-written
    with open(path + ".tmp-%d" % os.getpid(), "w") as f:
        json.dump(st, f)
    os.replace(f.name, path)
def pid_of(c):
    try:
        pid = int(open(c["pidfile"]).read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None
def running(c):
    return c is not None and c.get("up") and pid_of(c) is not None
def launch(c):
    for f in (c["pidfile"],):
        if os.path.exists(f):
            os.unlink(f)
    subprocess.run([os.environ["FAKE_REDIS_SERVER"], *c["args"], "--bind", c["addr"], "--port", "6379",
                    "--daemonize", "yes", "--pidfile", c["pidfile"], "--logfile", c["logfile"]], check=True)
    for _ in range(200):
        if pid_of(c) is not None:
            break
        time.sleep(0.02)
    c["up"] = True
def stop(c, sig=signal.SIGTERM):
    pid = pid_of(c)
    if pid is not None:
        os.kill(pid, sig)
        for _ in range(1500):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.02)
    c["up"] = False
def fail(text):
    print(text, file=sys.stderr)
    save()
    sys.exit(1)
cmd, rest = (args[0], args[1:]) if args else ("", [])
cs = st["containers"]
if cmd == "exec":
    interactive = rest[0] == "-i"
    name = rest[1] if interactive else rest[0]
    argv = rest[2:] if interactive else rest[1:]
    c = cs.get(name)
    if not running(c):
        fail(f"Error response from daemon: container {name} is not running")
    save()
    env = dict(os.environ)
    env.update(c.get("env") or {})  # the container's own environment (`container(..., env=)`)
    env["PATH"] = c["bin"] + ":" + env["PATH"]
    if not interactive:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.execvpe(argv[0], argv, env)
elif cmd == "inspect":
    fmt, name = rest[rest.index("--format") + 1], rest[-1]
    c = cs.get(name)
    if c is None:
        fail(f"Error: No such object: {name}")
    print(fmt.replace("{{.Image}}", "sha256:" + c["image"])
          .replace("{{.State.Running}}", "true" if running(c) else "false"))
elif cmd == "stop":
    c = cs.get(rest[-1]) or fail(f"Error: No such container: {rest[-1]}")
    stop(c)
elif cmd == "start":
    c = cs.get(rest[-1]) or fail(f"Error: No such container: {rest[-1]}")
    if not running(c):
        launch(c)
elif cmd == "rm":
    name = rest[-1]
    c = cs.get(name)
    if c is None:
        fail(f"Error: No such container: {name}")
    if running(c):
        if "-f" not in rest:
            fail(f"Error: container {name} is running")
        stop(c, signal.SIGKILL)
    del cs[name]
elif cmd == "logs":
    c = cs.get(rest[-1]) or fail(f"Error: No such container: {rest[-1]}")
    n = int(rest[rest.index("--tail") + 1]) if "--tail" in rest else 1000
    lines = open(c["logfile"]).read().splitlines() if os.path.exists(c["logfile"]) else []
    print("\n".join(lines[-n:]))
elif cmd == "run" and "--detach" in rest:
    i, opts = 0, {}
    while rest[i].startswith("-"):
        if rest[i] in ("--name", "--network", "--volumes-from"):
            opts[rest[i]] = rest[i + 1]
            i += 2
        else:
            i += 1
    image, argv = rest[i], rest[i + 1:]
    name = opts["--name"]
    if st.get("fail_run"):
        fail("docker: Error response from daemon: no space left on device (injected)")
    if name in cs:
        fail(f"Error: the container name {name} is already in use")
    if opts.get("--volumes-from") not in cs:
        fail(f"Error: No such container: {opts.get('--volumes-from')}")
    assert argv[0] == "redis-server", argv
    st["next"] += 1
    cs[name] = c = {"addr": st["net"] + "." + str(st["next"]), "args": argv[1:], "image": image.split(":")[-1],
                    "pidfile": st["dir"] + f"/{name}.pid", "logfile": st["dir"] + f"/{name}.log",
                    "bin": st["dir"] + f"/bin-{name}"}
    os.makedirs(c["bin"], exist_ok=True)
    with open(c["bin"] + "/redis-cli", "w") as f:
        f.write(f"#!/bin/sh\nexec {os.environ['FAKE_REDIS_CLI']} -h {c['addr']} -p 6379 \"$@\"\n")
    os.chmod(c["bin"] + "/redis-cli", 0o755)
    launch(c)
    print("id-" + name)
else:
    fail(f"fake docker: {args} is not answered here")
save()
'''


@dataclass
class RedisDocker:
    env: dict[str, str]
    state_file: Path
    net: str

    @classmethod
    def start(cls, tmp_path: Path, net: str) -> RedisDocker:
        """``net``: a loopback /24's first three octets (each container takes an address in it)."""
        top = tmp_path / "redis-docker"
        (top / "bin").mkdir(parents=True)
        (top / "bin" / "docker").write_text(SCRIPT.replace("#!/usr/bin/env python3", f"#!{sys.executable} -S", 1))
        (top / "bin" / "docker").chmod(0o755)
        state = top / "state.json"
        state.write_text(json.dumps({"containers": {}, "calls": [], "next": 1, "net": net, "dir": str(top)}))
        env = {**os.environ, "PATH": f"{top / 'bin'}:{os.environ['PATH']}", "FAKE_REDIS_STATE": str(state),
               "FAKE_REDIS_SERVER": shutil.which("redis-server") or "redis-server",
               "FAKE_REDIS_CLI": shutil.which("redis-cli") or "redis-cli"}
        return cls(env, state, net)

    def _state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def _save(self, st: dict) -> None:
        """Write the state whole (a `docker` call reading it meanwhile sees the old or the new)."""
        tmp = self.state_file.with_name(f"{self.state_file.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(st))
        os.replace(tmp, self.state_file)

    def container(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """A running Redis container ``name``: redis-server ``args``; ``env``: its environment
        (what `docker exec` in it sees)."""
        st = self._state()
        st["next"] += 1
        top = self.state_file.parent
        st["containers"][name] = {"addr": f"{self.net}.{st['next']}", "args": list(args), "image": "redis7",
                                  "pidfile": str(top / f"{name}.pid"), "logfile": str(top / f"{name}.log"),
                                  "bin": str(top / f"bin-{name}"), "env": env or {}}
        st["calls"] = []
        self._save(st)
        c = st["containers"][name]
        Path(c["bin"]).mkdir(exist_ok=True)
        (Path(c["bin"]) / "redis-cli").write_text(
            f"#!/bin/sh\nexec {self.env['FAKE_REDIS_CLI']} -h {c['addr']} -p 6379 \"$@\"\n")
        (Path(c["bin"]) / "redis-cli").chmod(0o755)
        self.docker("start", name)

    def docker(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *argv], env=self.env, capture_output=True, text=True, timeout=120)

    def cli(self, name: str, *argv: str) -> str:
        """``redis-cli`` against container ``name``'s Redis: its output."""
        out = self.docker("exec", name, "redis-cli", *argv)
        assert out.returncode == 0, out.stderr
        return out.stdout.rstrip("\n")

    def fail_runs(self) -> None:
        """From now on `docker run` fails (as on a host whose disk is full)."""
        st = self._state()
        st["fail_run"] = True
        self._save(st)

    def calls(self) -> list[list[str]]:
        return self._state()["calls"]

    def names(self) -> list[str]:
        return sorted(self._state()["containers"])

    def close(self) -> None:
        for c in self._state()["containers"].values():
            try:
                pid = int(Path(c["pidfile"]).read_text().strip())
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
