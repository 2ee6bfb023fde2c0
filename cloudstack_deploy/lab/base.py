"""The lab's base image: Debian bookworm minbase made with debootstrap, imported into Docker.

Nothing can be pulled from Docker Hub on our machines, so every lab image starts here. The
result is cached as a Docker image labelled with the recipe's hash: a second `lab up`
rebuilds nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from pathlib import Path

from ..errors import CsdeployError
from .docker import docker, image_label

BASE_IMAGE = "csdeploy-lab/debian:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
RECIPE_LABEL = "csdeploy.recipe"
RECIPE = f"debootstrap --variant=minbase {SUITE} {MIRROR} v1"


class BuildError(CsdeployError):
    """An image of the lab could not be built."""


def recipe_hash(*parts: str | bytes) -> str:
    """A short stable hash of everything an image is built from (for cache checks)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


async def ensure_base_image(*, force: bool = False) -> str:
    """Build (or reuse) the base image; returns its name."""
    want = recipe_hash(RECIPE)
    if not force and await image_label(BASE_IMAGE, RECIPE_LABEL) == want:
        return BASE_IMAGE
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed; the lab builds its images with it",
                         hint="apt-get install -y debootstrap")
    with tempfile.TemporaryDirectory(prefix="csdeploy-base-") as tmp:
        root = Path(tmp) / "rootfs"
        proc = await asyncio.create_subprocess_exec(
            "debootstrap", "--variant=minbase", SUITE, str(root), MIRROR,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            tail = "\n".join(out.decode(errors="replace").splitlines()[-5:])
            raise BuildError(f"debootstrap {SUITE} failed:\n{tail}", hint=f"check that {MIRROR} is reachable")
        tar = await asyncio.create_subprocess_exec("tar", "-C", str(root), "-c", ".", stdout=asyncio.subprocess.PIPE)
        assert tar.stdout is not None
        data = await tar.stdout.read()
        await tar.wait()
        await docker("import", "--change", f"LABEL {RECIPE_LABEL}={want}", "-", BASE_IMAGE, input=data)
    return BASE_IMAGE
