"""The docker CLI for checks made from outside the lab, and whether Docker tests can run here."""

from __future__ import annotations

import os
import shutil
import subprocess


def docker_reason() -> str | None:
    """None if a Docker engine answers, else why the Docker tests are skipped."""
    try:
        out = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no docker command or engine ({exc}); install docker.io and start dockerd"
    if out.returncode != 0:
        return f"no Docker engine answers: {out.stderr.strip()[-200:]}"
    return None


def docker_backend_reason() -> str | None:
    """None when the simulator's docker backend can run here (VMs with loop-device disks)."""
    reason = docker_reason()
    if reason:
        return f"needs a Docker engine: {reason}"
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        return "needs root and losetup (data volumes are loop devices)"
    return None


def docker(*args: str, input: str | None = None, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``docker ARGS`` (text); with ``check`` a failure fails the test with docker's stderr."""
    proc = subprocess.run(["docker", *args], input=input, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc
