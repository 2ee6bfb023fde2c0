"""`csdeploy lab up | status | down`: the whole local lab as one thing a user starts and stops.

`up` is idempotent: it checks for a Docker engine (and says how to get one), builds or
reuses the VM templates and application images, starts the registry and the simulator
(docker backend) in the background, and writes the profile that makes the lab csdeploy's
default cloud. A second `up` rebuilds nothing and restarts nothing.

One lab per CSDEPLOY_HOME: its ports, registry and docker labels come from its own
``lab.json`` (lab/config.py), so `up`, `status` and `down` only ever see and touch this
home's lab, never another one running beside it. The images are shared (and cached).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ..errors import CsdeployError
from ..progress import Progress
from .ca import lab_dir
from .config import (
    HOME_LABEL,
    LabConfig,
    current_lab_config,
    ensure_lab_config,
    is_default_home,
    load_lab_config,
    other_labs,
    pick_port,
    port_free,
    release_lab_config,
    update_lab_config,
)
from .docker import docker, docker_hint, engine_available
from .profile import add_secrets_file, read_secrets, secrets_path, update_secrets

API_KEY = "lab-api-key"


class LabError(CsdeployError):
    """The lab cannot be brought up (no Docker engine, a port in use, a build failure)."""


@dataclass
class LabStatus:
    simulator: str                      # running | stopped
    endpoint: str | None = None
    pid: int | None = None
    backend: str | None = None
    registry: str = "absent"
    images: dict[str, bool] = field(default_factory=dict)
    vms: int = 0
    lab: dict[str, Any] = field(default_factory=dict)
    """This home's lab: id, home, slot, ports, registry container, public range."""


def _pid_file() -> Path:
    return lab_dir() / "simulator.pid"


def _log_file() -> Path:
    return lab_dir() / "simulator.log"


def secrets_file() -> Path:
    """Secret values the lab's demo needs (registry password, a PostgreSQL password), 0600."""
    return secrets_path()


def lab_secrets() -> dict[str, str]:
    return read_secrets()


def _ensure_secrets(registry_password: str) -> None:
    have = lab_secrets()
    update_secrets({"REGISTRY_PASSWORD": registry_password,
                    "POSTGRES_PASSWORD": have.get("POSTGRES_PASSWORD") or secrets.token_urlsafe(18) + "@:/%"})


def running_pid() -> int | None:
    try:
        pid = int(_pid_file().read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid if _is_this_labs_simulator(pid) else None


def _is_this_labs_simulator(pid: int) -> bool:
    """Whether ``pid`` runs this home's simulator (a stale pid file may name a reused pid,
    or, after a copy of the home, another lab's simulator)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to ask: trust the pid file
    if b"simulator" not in argv or b"--state" not in argv[:-1]:
        return False
    state = Path(os.fsdecode(argv[argv.index(b"--state") + 1]))
    return state.resolve() == _state_file()


def _state_file() -> Path:
    return (lab_dir() / "simulator.json").resolve()


async def _answers(endpoint: str) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s, s.get(endpoint) as r:
            return r.status in (401, 432, 200)
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


def _endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}/client/api"


def _spawn_detached(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A daemon in its own session: it outlives this command, as `lab up` promises."""
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True)


async def _start_simulator(lab: LabConfig, progress: Progress) -> int:
    log = _log_file()
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "cloudstack_deploy", "lab", "simulator", "--backend", "docker",
            "--port", str(lab.api_port), "--public-range", lab.public_range,
            "--state", str(_state_file()), "--write-profile", "--api-key", API_KEY]
    offset = log.stat().st_size if log.exists() else 0  # only this start's lines count
    proc = _spawn_detached(argv, log)
    _pid_file().write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 600  # the first start may build the VM templates
    while time.monotonic() < deadline:
        text = log.read_bytes()[offset:].decode(errors="replace")
        if proc.poll() is not None:
            tail = "\n".join(text.splitlines()[-15:])
            raise LabError(f"the simulator exited at start (code {proc.returncode}):\n{tail}",
                           hint=f"see {log}")
        if "csdeploy profile" in text and await _answers(lab.endpoint):
            return proc.pid
        await asyncio.sleep(0.5)
    raise LabError(f"the simulator did not answer on port {lab.api_port} within 10 minutes", hint=f"see {log}")


async def _stop_simulator(progress: Progress) -> None:
    pid = running_pid()
    if pid is not None:
        progress.note(f"lab: stopping the simulator (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if running_pid() is None:
                break
            await asyncio.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    _pid_file().unlink(missing_ok=True)


async def _registry_port_of(name: str) -> int | None:
    """The host port a running registry container publishes, or None."""
    fmt = ('{{if .State.Running}}{{with index .HostConfig.PortBindings "5000/tcp"}}'
           '{{(index . 0).HostPort}}{{end}}{{end}}')
    code, out, _ = await docker("container", "inspect", "--format", fmt, name, check=False)
    return int(out.strip()) if code == 0 and out.strip().isdigit() else None


async def _settle_ports(lab: LabConfig, port: int | None, registry_port: int | None,
                        progress: Progress) -> LabConfig:
    """This lab's ports for this start: as asked, else as recorded unless something else
    took them since (then free ones, recorded in lab.json and said)."""
    sim_here = running_pid() is not None and await _answers(lab.endpoint)
    reg_here = await _registry_port_of(lab.registry_container)
    changes: dict[str, int] = {}
    for kind, asked, have, ours in (("api", port, lab.api_port, lab.api_port if sim_here else None),
                                    ("registry", registry_port, lab.registry_port, reg_here)):
        flag = "--port" if kind == "api" else "--registry-port"
        if asked is not None:
            if asked != ours and not port_free(asked):
                raise LabError(f"port {asked} on 127.0.0.1 is in use ({flag})",
                               hint=f"free it (ss -ltnp 'sport = :{asked}') or choose another {flag}")
            if asked != have:
                changes[f"{kind}_port"] = asked
        elif have != ours and not port_free(have):
            new = pick_port(kind)
            progress.note(f"lab: port {have} ({kind}) is taken on this machine; this lab now uses {new}")
            changes[f"{kind}_port"] = new
    return update_lab_config(**changes) if changes else lab


async def lab_up(*, port: int | None = None, registry_port: int | None = None, progress: Progress,
                 force_build: bool = False) -> LabStatus:
    """Bring this home's lab up (idempotent). ``port``/``registry_port``: the simulator's API
    and the registry's port on 127.0.0.1 (default: the lab's recorded ones, see lab/config.py)."""
    problem = await engine_available()
    if problem:
        raise LabError(f"the lab needs a Docker engine: {problem}", hint=docker_hint())
    from .base import BASE_IMAGE, RECIPE_LABEL, base_recipe, ensure_base_image
    from .docker import image_label
    from .images import build_images
    from .registry import PushResult, RegistryInfo, ensure_registry, save_seed
    from .templates import ensure_templates

    lab = await _settle_ports(ensure_lab_config(), port, registry_port, progress)
    progress.note("lab: VM templates, registry and application images (built once, then cached)")
    if await image_label(BASE_IMAGE, RECIPE_LABEL) != base_recipe():  # missing or older
        progress.note(f"building the lab's base image {BASE_IMAGE} (debootstrap, about half a minute)")
    await ensure_base_image()  # what they all build on; then the templates beside the rest
    pushed: list[PushResult] = []

    async def registry_and_images() -> RegistryInfo:
        info = await ensure_registry(progress=progress)
        await build_images(force=force_build, progress=progress, registry=info, pushed=pushed)
        return info

    # a first lab up on a fresh engine: 81 s instead of 98 one after the other (2026-12-07)
    _, info = await asyncio.gather(ensure_templates(force=force_build, progress=lambda text: progress.note(text)),
                                   registry_and_images())
    if info.fresh and (not info.seeded or any(p.pushed for p in pushed)):
        await save_seed(info, progress)  # the next new lab copies what was just pushed
    _ensure_secrets(info.password_path.read_text().strip())
    pid = running_pid()
    if pid is not None and await _answers(lab.endpoint):
        progress.note(f"lab: simulator already running (pid {pid})")
        add_secrets_file(lab_dir() / "cloudstack.ini")  # a profile written before secrets_file existed
    else:
        await _stop_simulator(progress)  # e.g. still running on the port it had before
        progress.note(f"lab: starting the simulator on 127.0.0.1:{lab.api_port} (log {_log_file()})")
        await _start_simulator(lab, progress)
    # `csdeploy build --push` pushes to the address this machine reaches the registry at
    from ..cloud.config import record_lab_registry_push

    record_lab_registry_push(info.server, info.local_server)
    return await lab_status(port=lab.api_port)


def _lab_summary(lab: LabConfig) -> dict[str, Any]:
    if load_lab_config() is None:  # never set up here: only its names are known
        return {"id": lab.id, "home": lab.home, "configured": False,
                "registry_container": lab.registry_container}
    return {"id": lab.id, "home": lab.home, "configured": True, "slot": lab.slot,
            "api_port": lab.api_port, "registry_port": lab.registry_port,
            "registry_container": lab.registry_container, "public_range": lab.public_range}


async def lab_status(*, port: int | None = None) -> LabStatus:
    """This home's lab: its simulator, registry, VMs (and the shared images)."""
    from .images import image_specs
    from .registry import registry_status
    from .simulator.docker_resources import ROLE_LABEL

    lab = current_lab_config()
    endpoint = _endpoint(port or lab.api_port)
    pid = running_pid()
    st = LabStatus(simulator="running" if pid and await _answers(endpoint) else "stopped",
                   endpoint=endpoint if pid else None, pid=pid, backend="docker" if pid else None,
                   lab=_lab_summary(lab))
    reg = await registry_status(name=lab.registry_container)
    st.registry = reg.state + (" (reachable)" if reg.reachable else "")
    if reg.host_port:
        st.registry += f", {lab.registry_container} on 127.0.0.1:{reg.host_port}"
    for spec in image_specs():
        code, _, _ = await docker("image", "inspect", spec.name, check=False)
        st.images[spec.name] = code == 0
    _, out, _ = await docker("ps", "-q", "--filter", f"label={HOME_LABEL}={lab.id}",
                             "--filter", f"label={ROLE_LABEL}=vm", check=False)
    st.vms = len(out.split())
    return st


def _simulator_id() -> str | None:
    """The simulator's own id (``csdeploy.lab.sim``) from its state file, if any: it also
    finds what a simulator made before labs had their own ids."""
    try:
        return json.loads((lab_dir() / "simulator.json").read_text()).get("lab_id") or None
    except (FileNotFoundError, ValueError, AttributeError):
        return None


async def lab_down(*, purge: bool = False, progress: Progress) -> dict[str, Any]:
    """Stop this home's lab: its simulator, VMs, networks, forwarders and loop devices; keep
    images (and the registry's data) unless ``purge``. Never touches another home's lab.

    ``purge`` also removes this lab's registry data, state and config (its slot is freed);
    the shared images go only with the default home's lab, and only when no other lab is
    set up on this machine.
    """
    from .registry import remove_registry, remove_seed
    from .simulator.docker_resources import cleanup_lab_resources

    lab = current_lab_config()
    await _stop_simulator(progress)
    removed = await cleanup_lab_resources()
    sim_id = _simulator_id()
    if sim_id:
        for key, count in (await cleanup_lab_resources(sim_id)).items():
            removed[key] = removed.get(key, 0) + count
    await remove_registry(name=lab.registry_container, volume=lab.registry_volume, purge=purge)
    if purge:
        removed["images"] = 0
        others = other_labs()
        if is_default_home() and not others:
            _, out, _ = await docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                                     "reference=csdeploy-lab/*", check=False)
            images = out.split()
            if images:
                await docker("rmi", "-f", *images, check=False, timeout=300)
            removed["images"] = len(images)
            await remove_seed()  # shared like the images: a copy of their pushes
        else:
            progress.note("lab: images kept: every lab on this machine shares them "
                          "(the default home's `lab down --purge` removes them when it is the last lab)")
        for name in ("simulator.json", "cloudstack.ini"):
            (lab_dir() / name).unlink(missing_ok=True)
        release_lab_config()
    return removed
