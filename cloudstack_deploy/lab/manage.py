"""`csdeploy lab up | status | down`: the whole local lab as one thing a user starts and stops.

`up` is idempotent: it checks for a Docker engine (and says how to get one), builds or
reuses the VM templates and application images, starts the registry and the simulator
(docker backend) in the background, and writes the profile that makes the lab csdeploy's
default cloud. A second `up` rebuilds nothing and restarts nothing.
"""

from __future__ import annotations

import asyncio
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
from .ca import lab_dir, write_private
from .docker import docker, docker_hint, engine_available

DEFAULT_PORT = 8080
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


def _pid_file() -> Path:
    return lab_dir() / "simulator.pid"


def _log_file() -> Path:
    return lab_dir() / "simulator.log"


def secrets_file() -> Path:
    """Secret values the lab's demo needs (registry password, a PostgreSQL password), 0600."""
    return lab_dir() / "secrets.env"


def lab_secrets() -> dict[str, str]:
    try:
        lines = secrets_file().read_text().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _ensure_secrets(registry_password: str) -> None:
    have = lab_secrets()
    values = {"REGISTRY_PASSWORD": registry_password,
              "POSTGRES_PASSWORD": have.get("POSTGRES_PASSWORD") or secrets.token_urlsafe(18) + "@:/%"}
    if values != {k: have.get(k) for k in values}:
        body = "# written by `csdeploy lab up`: secret values for the lab's demo blueprint\n"
        write_private(secrets_file(), (body + "".join(f"{k}={v}\n" for k, v in values.items())).encode())


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
        return pid
    return pid


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


async def _start_simulator(port: int, progress: Progress) -> int:
    log = _log_file()
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "cloudstack_deploy", "lab", "simulator", "--backend", "docker",
            "--port", str(port), "--state", str(lab_dir() / "simulator.json"), "--write-profile",
            "--api-key", API_KEY]
    proc = _spawn_detached(argv, log)
    _pid_file().write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 600  # the first start may build the VM templates
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise LabError(f"the simulator exited at start (code {proc.returncode}):\n{tail}",
                           hint=f"see {log}")
        if await _answers(_endpoint(port)) and "csdeploy profile" in log.read_text(errors="replace"):
            return proc.pid
        await asyncio.sleep(0.5)
    raise LabError(f"the simulator did not answer on port {port} within 10 minutes", hint=f"see {log}")


async def lab_up(*, port: int = DEFAULT_PORT, progress: Progress, force_build: bool = False) -> LabStatus:
    problem = await engine_available()
    if problem:
        raise LabError(f"the lab needs a Docker engine: {problem}", hint=docker_hint())
    from .images import build_images
    from .registry import ensure_registry
    from .templates import ensure_templates

    progress.note("lab: VM templates (built once, then cached)")
    await ensure_templates(force=force_build, progress=lambda text: progress.note(text))
    progress.note("lab: registry and application images (built once, then cached)")
    info = await ensure_registry(progress=progress)
    await build_images(force=force_build, progress=progress, registry=info)
    _ensure_secrets(info.password_path.read_text().strip())
    pid = running_pid()
    if pid is not None and await _answers(_endpoint(port)):
        progress.note(f"lab: simulator already running (pid {pid})")
    else:
        progress.note(f"lab: starting the simulator on 127.0.0.1:{port} (log {_log_file()})")
        await _start_simulator(port, progress)
    # `csdeploy build --push` pushes to the address this machine reaches the registry at
    from ..cloud.config import record_lab_registry_push

    record_lab_registry_push(info.server, info.local_server)
    return await lab_status(port=port)


async def lab_status(*, port: int = DEFAULT_PORT) -> LabStatus:
    from .images import image_specs
    from .registry import registry_status
    from .simulator.docker_resources import LAB_LABEL, ROLE_LABEL

    pid = running_pid()
    endpoint = _endpoint(port)
    st = LabStatus(simulator="running" if pid and await _answers(endpoint) else "stopped",
                   endpoint=endpoint if pid else None, pid=pid, backend="docker" if pid else None)
    reg = await registry_status()
    st.registry = reg.state + (" (reachable)" if reg.reachable else "")
    for spec in image_specs():
        code, _, _ = await docker("image", "inspect", spec.name, check=False)
        st.images[spec.name] = code == 0
    _, out, _ = await docker("ps", "-q", "--filter", f"label={LAB_LABEL}=1", "--filter", f"label={ROLE_LABEL}=vm",
                             check=False)
    st.vms = len(out.split())
    return st


async def lab_down(*, purge: bool = False, progress: Progress) -> dict[str, Any]:
    """Stop the simulator, remove lab VMs, networks, forwarders and loop devices; keep images
    (and the registry's data) unless ``purge``."""
    from .registry import remove_registry
    from .simulator.docker_resources import cleanup_lab_resources

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
    removed = await cleanup_lab_resources()
    await remove_registry(purge=purge)
    if purge:
        _, out, _ = await docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                                 "reference=csdeploy-lab/*", check=False)
        images = out.split()
        if images:
            await docker("rmi", "-f", *images, check=False, timeout=300)
        removed["images"] = len(images)
        for name in ("simulator.json", "cloudstack.ini"):
            (lab_dir() / name).unlink(missing_ok=True)
    return removed
