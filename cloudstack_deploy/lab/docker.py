"""Small async helpers around the docker CLI, shared by the lab's images and backends.

The lab talks to the host's Docker engine through the `docker` command (no extra Python
dependency); every call has a clear error naming what failed and how to get an engine.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from ..errors import CsdeployError
from ..localcmd import run_local


class DockerError(CsdeployError):
    """A docker command failed; the message carries its stderr."""


def docker_hint() -> str:
    return ("install and start a Docker engine: `apt-get install -y docker.io` then `dockerd &` "
            "(or `systemctl start docker`)")


async def docker(*args: str, input: bytes | None = None, check: bool = True, timeout: float | None = 600,
                 env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``docker ARGS``; return (exit code, stdout, stderr). Raises DockerError if check fails."""
    if shutil.which("docker") is None:
        raise DockerError("the docker command is not installed", hint=docker_hint())
    try:
        code, text_out, text_err = await run_local(["docker", *args], env=env, stdin=input, timeout=timeout)
    except TimeoutError:
        raise DockerError(f"docker {' '.join(args[:3])} did not finish within {timeout:.0f}s") from None
    if check and code != 0:
        lines = [ln.strip() for ln in text_err.strip().splitlines() if ln.strip()]
        detail = "; ".join(lines[-3:])[-600:] if lines else f"exit {code}"
        hint = docker_hint() if "Cannot connect to the Docker daemon" in text_err else None
        raise DockerError(f"docker {' '.join(_short(args))} failed: {detail}", hint=hint)
    return code, text_out, text_err


def _short(args: Sequence[str]) -> list[str]:
    return [a if len(a) < 60 else a[:57] + "..." for a in args[:6]]


async def engine_available() -> str | None:
    """None when a Docker engine answers; otherwise a sentence saying what is missing."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    code, _, err = await docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
    if code != 0:
        return "no Docker engine answers (" + (err.strip().splitlines() or ["?"])[-1] + ")"
    return None


async def image_label(image: str, label: str) -> str | None:
    """The value of ``label`` on a local image, or None if the image does not exist."""
    code, out, _ = await docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}',
                                image, check=False)
    if code != 0:
        return None
    value = out.strip()
    return "" if value in ("<no value>", "") else value
