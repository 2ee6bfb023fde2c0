"""Building the lab's images from the Dockerfiles in lab/assets/apps, with a recipe cache.

Every image is tagged with a `csdeploy.recipe` label: a hash of its Dockerfile, every file
in its build folder, its build arguments, anything outside the folder that shapes it (the
kamal-proxy version) and the base image's id. When the label on the local image matches,
nothing runs, so a second `lab up` costs one `docker image inspect` per image. A new base
image (or an edited asset) changes the hash and rebuilds exactly what depends on it.

The legacy builder is used on purpose (DOCKER_BUILDKIT=0): it finds `FROM` images in the
local image store without asking a registry, and needs no buildx plugin.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import Event, Progress
from .base import RECIPE_LABEL, BuildError, ensure_base_image, recipe_hash
from .docker import docker

ASSETS = Path(__file__).resolve().parent / "assets" / "apps"
BUILD_TIMEOUT = 1800.0
"""Seconds for one `docker build`: a cold build downloads Debian packages."""

Extras = Callable[[], Awaitable[Mapping[str, Path]]]
"""Called only when an image must be built: files to add to its build folder (name -> path)."""


@dataclass(frozen=True)
class ImageSpec:
    """One lab image: where its Dockerfile lives and what else goes into it."""

    name: str
    """The local tag, e.g. ``csdeploy-lab/demo-app:v1``."""
    folder: str
    """The build folder under lab/assets/apps."""
    build_args: tuple[tuple[str, str], ...] = ()
    recipe_extra: str = ""
    """What shapes the image but is not in the folder (e.g. a pinned upstream version)."""
    extras: Extras | None = field(default=None, compare=False)

    @property
    def context(self) -> Path:
        return ASSETS / self.folder


@dataclass(frozen=True)
class BuildResult:
    name: str
    built: bool
    """False when the cached image matched its recipe and nothing ran."""
    seconds: float
    image_id: str


def folder_files(folder: Path) -> list[Path]:
    """The files of a build folder in a stable order, skipping Python caches."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def spec_recipe(spec: ImageSpec, base_id: str) -> str:
    """The recipe hash of ``spec`` on top of the base image ``base_id``."""
    parts: list[str | bytes] = [spec.name, base_id, spec.recipe_extra]
    parts += [f"{k}={v}" for k, v in spec.build_args]
    for path in folder_files(spec.context):
        parts += [path.relative_to(spec.context).as_posix(), path.read_bytes()]
    return recipe_hash(*parts)


async def image_id(name: str) -> str | None:
    code, out, _ = await docker("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return out.strip() if code == 0 else None


async def image_identity(name: str) -> tuple[str, dict[str, str]] | None:
    """(id, labels) of a local image, or None if it does not exist: one inspect for both."""
    code, out, _ = await docker("image", "inspect", "--format", "{{.Id}} {{json .Config.Labels}}",
                                name, check=False)
    if code != 0:
        return None
    ident, _, labels = out.strip().partition(" ")
    return ident, json.loads(labels) or {}


async def build_image(spec: ImageSpec, *, force: bool = False, progress: Progress | None = None,
                      base_id: str | None = None) -> BuildResult:
    """Build ``spec`` unless an image with its recipe hash is already there."""
    started = time.monotonic()
    resource = f"image {spec.name}"
    if base_id is None:
        base_id = await image_id(await ensure_base_image())
        if base_id is None:
            raise BuildError("the lab's base image vanished while building")
    want = spec_recipe(spec, base_id)
    old_id, labels = await image_identity(spec.name) or ("", {})
    if not force and labels.get(RECIPE_LABEL) == want:
        _emit(progress, resource, "skipped", "cached")
        return BuildResult(spec.name, False, time.monotonic() - started, old_id)
    _emit(progress, resource, "running", "building")
    with tempfile.TemporaryDirectory(prefix="csdeploy-build-") as tmp:
        ctx = Path(tmp) / "ctx"
        shutil.copytree(spec.context, ctx, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if spec.extras is not None:
            for name, path in (await spec.extras()).items():
                shutil.copy2(path, ctx / name)
        args = ["build", "--label", f"{RECIPE_LABEL}={want}", "--build-arg", f"BASE={base_id}",
                "--tag", spec.name]
        for key, value in spec.build_args:
            args += ["--build-arg", f"{key}={value}"]
        code, out, err = await docker(*args, str(ctx), check=False, timeout=BUILD_TIMEOUT,
                                      env={"DOCKER_BUILDKIT": "0"})
    if code != 0:
        tail = "\n".join((out + err).strip().splitlines()[-15:])
        _emit(progress, resource, "failed", tail.splitlines()[-1] if tail else f"exit {code}")
        raise BuildError(f"building {spec.name} failed:\n{tail}",
                         hint="Debian packages come from deb.debian.org: check that it is reachable "
                              "from containers (docker run --rm csdeploy-lab/debian:bookworm "
                              "apt-get update)")
    seconds = time.monotonic() - started
    _emit(progress, resource, "done", f"built in {seconds:.0f}s")
    new_id = await image_id(spec.name) or ""
    if old_id and old_id != new_id:  # the replaced image, if nothing else uses or names it
        await docker("rmi", old_id, check=False)
    return BuildResult(spec.name, True, seconds, new_id)


def _emit(progress: Progress | None, resource: str, status: str, detail: str) -> None:
    if progress is not None:
        progress.emit(Event(resource=resource, action="build", status=status, detail=detail))
