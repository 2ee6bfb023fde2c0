"""A `docker` for scripts run under a real /bin/sh: it keeps containers, volumes and images in a
JSON file (FAKE_DOCKER_STATE) and answers the calls csdeploy's life-cycle scripts make, so a test
sees what a user would see afterwards (what runs, what is gone), not only the argv.

`install(tmp_path, state)` writes the script and returns (env, state file); `load(state_file)`
reads the state back (``calls``: every argv, in order).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

#: The first line of a fake tool written in Python: this interpreter, without site (the tools
#: need only the standard library), never `/usr/bin/env python3`, which may be pyenv's shim (a
#: bash script: three times the CPU of the interpreter itself, and 0.4 s a call here).
SHEBANG = f"#!{sys.executable} -S"

SCRIPT = r'''#!/usr/bin/env python3
import fcntl, json, os, sys
path = os.environ["FAKE_DOCKER_STATE"]
# one docker call at a time (two "hosts" of a test may share this state): read, change, write
# whole under a lock, so that no call reads a half-written state or loses another's change
lock = open(path + ".lock", "w")
fcntl.flock(lock, fcntl.LOCK_EX)
st = json.load(open(path))
args = sys.argv[1:]
st.setdefault("calls", []).append(args)
def save():
    with open(path + ".tmp", "w") as f:
        json.dump(st, f)
    os.replace(path + ".tmp", path)
def find(name):
    return next((c for c in st["containers"] if c["name"] == name), None)
def fmt(template, c):
    if template == "{{json .}}":
        return json.dumps({"Names": c["name"], "State": c["state"], "Image": c["image"],
                           "Labels": ",".join(f"{k}={v}" for k, v in c["labels"].items()), "Status": c["state"]})
    out = template.replace("{{.Names}}", c["name"]).replace("{{.Image}}", c["image"])
    return out.replace("{{.State}}", c["state"]).replace("{{.Status}}", "Up" if c["state"] == "running" else "Exited")
def opts(rest):
    flags, names, i = {"filter": []}, [], 0
    while i < len(rest):
        a = rest[i]
        if a in ("--format", "--filter", "--time", "--type"):
            if a == "--filter":
                flags["filter"].append(rest[i + 1])
            else:
                flags[a[2:]] = rest[i + 1]
            i += 2
            continue
        if a.startswith("--"):
            flags[a[2:]] = True
        else:
            names.append(a)
        i += 1
    return flags, names
cmd, rest = (args[0], args[1:]) if args else ("", [])
rc = 0
if cmd == "ps":
    f, _ = opts(rest)
    rows = list(reversed(st["containers"]))  # newest first, as docker lists them
    if not f.get("all"):
        rows = [c for c in rows if c["state"] == "running"]
    for flt in f["filter"]:
        k, _, v = flt.partition("=")
        if k == "label":
            lk, _, lv = v.partition("=")
            rows = [c for c in rows if c["labels"].get(lk) == lv]
        elif k == "status":
            rows = [c for c in rows if c["state"] == v]
    for c in rows:
        print(fmt(f.get("format", "{{.Names}}"), c))
elif cmd == "inspect":
    f, names = opts(rest)
    for n in names:
        c = find(n)
        if c is None:
            print(f"Error: No such object: {n}", file=sys.stderr)
            rc = 1
            continue
        print(f["format"].replace("{{.State.Status}}", c["state"]).replace("{{.Image}}", "sha256:" + c["image"])
              .replace("{{.Config.Image}}", c["image"]))
elif cmd in ("start", "stop", "restart"):
    _, names = opts(rest)
    for n in names:
        c = find(n)
        if c is None:
            print(f"Error: No such container: {n}", file=sys.stderr)
            rc = 1
        else:
            c["state"] = "exited" if cmd == "stop" else "running"
elif cmd == "rm":
    _, names = opts(rest)
    st["containers"] = [c for c in st["containers"] if c["name"] not in names]
elif cmd == "volume":
    sub, name = rest[0], rest[-1]
    if name not in st["volumes"]:
        rc = 1
    elif sub == "rm":
        st["volumes"].remove(name)
elif cmd == "images":
    f, names = opts(rest)
    for image in st["images"]:
        if f.get("quiet"):
            print("id-" + image)
        elif not names or image.rsplit(":", 1)[0] == names[0]:
            print(image)
elif cmd == "image" and rest[:1] == ["rm"]:
    if any(c["image"] == rest[1] for c in st["containers"]):
        rc = 1
    else:
        st["images"] = [i for i in st["images"] if i != rest[1]]
elif cmd == "exec" and rest[:2] == ["kamal-proxy", "kamal-proxy"]:
    action = rest[2]
    if action in st.get("proxy_fails", []):
        print(f"Error: {action} refused", file=sys.stderr)
        rc = 1
    st.setdefault("proxy", []).append(rest[2:])
elif cmd == "exec" or (cmd == "run" and "--detach" not in rest):
    # a foreground container: the command runs here, as docker would run it inside
    i, flags, env = 0, set(), dict(os.environ)
    with_value = ("--network", "--env", "--env-file", "--label", "--volume", "--name", "--user", "--workdir")
    while i < len(rest) and rest[i].startswith("-"):
        if rest[i] in with_value:
            if rest[i] == "--env":
                k, _, v = rest[i + 1].partition("=")
                env[k] = v
            elif rest[i] == "--env-file":
                for line in open(rest[i + 1]).read().splitlines():
                    k, _, v = line.partition("=")
                    env[k] = v
            i += 2
        else:
            flags.add(rest[i])
            i += 1
    target, argv = rest[i], rest[i + 1:]
    if cmd == "exec":
        c = find(target)
        if c is None or c["state"] != "running":
            print(f"Error response from daemon: container {target} is not running", file=sys.stderr)
            save()
            sys.exit(1)
        env.update(c.get("env", {}))
    if "--tty" in flags and not os.isatty(0):
        print("the input device is not a TTY", file=sys.stderr)
        save()
        sys.exit(1)
    if "--interactive" not in flags:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
    env["FAKE_CONTAINER"] = target
    save()
    fcntl.flock(lock, fcntl.LOCK_UN)  # the container's command may call docker itself
    os.execvpe(argv[0], argv, env)
elif cmd == "logs":
    # a container's "logs" (a list of lines); --tail as docker does, --since only recorded in calls
    c = find(rest[-1])
    if c is None:
        print(f"Error response from daemon: No such container: {rest[-1]}", file=sys.stderr)
        rc = 1
    else:
        lines = c.get("logs", [])
        if "--tail" in rest:
            n = int(rest[rest.index("--tail") + 1])
            lines = lines[-n:] if n else []
        for line in lines:
            print(line)
elif cmd == "pull":
    st["images"] = sorted(set(st["images"]) | {rest[-1]})
save()
sys.exit(rc)
'''


def install(tmp_path: Path, state: dict[str, Any]) -> tuple[dict[str, str], Path]:
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    (bindir / "docker").write_text(SCRIPT.replace("#!/usr/bin/env python3", SHEBANG, 1))
    (bindir / "docker").chmod(0o755)
    state_file = tmp_path / "docker-state.json"
    state_file.write_text(json.dumps({"containers": [], "volumes": [], "images": [], **state}))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "HOME": str(home), "FAKE_DOCKER_STATE": str(state_file)}
    return env, state_file


def load(state_file: Path) -> dict[str, Any]:
    return json.loads(state_file.read_text())


def container(name: str, state: str = "running", image: str = "app:v1", **labels: str) -> dict[str, Any]:
    return {"name": name, "state": state, "image": image, "labels": labels}
