"""The lab's application images, built offline and pushed into the lab registry.

Nothing can be pulled from Docker Hub on our machines, so the lab makes what a deploy of
blueprints/demo.yml needs from sources it can reach: kamal-proxy from its Go module, the
demo app from lab/assets/apps/demo, PostgreSQL and Redis from Debian packages, all on the
lab's Debian base image. They are pushed under the names a real deploy would use
(``registry.lab:5000/basecamp/kamal-proxy:v0.9.2``, ``registry.lab:5000/demo-app:v1``, ...).

A second `build_images()` rebuilds nothing (recipe labels, see build.py) and pushes nothing
(the registry's manifest digest is compared with the image's own).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..progress import Progress
from .base import BuildError, ensure_base_image
from .build import BuildResult, ImageSpec, build_image, image_id
from .ca import lab_dir
from .registry import SERVER, PushResult, RegistryInfo, ensure_registry, push

KAMAL_PROXY_MODULE = "github.com/basecamp/kamal-proxy"
KAMAL_PROXY_VERSION = "v0.9.2"
KAMAL_PROXY_GO = (1, 25, 5)
"""kamal-proxy v0.9.2's go.mod says `go 1.25.5`; a Go >= 1.21 fetches that toolchain itself."""
GO_BUILD = "CGO_ENABLED=0 go build -trimpath ./cmd/kamal-proxy"
"""What upstream's Makefile runs; part of the image recipe."""
DEMO_VERSIONS = ("v1", "v2", "broken", "degrading")
GO_TIMEOUT = 1200.0


async def _kamal_proxy_extras() -> Mapping[str, Path]:
    return {"kamal-proxy": await kamal_proxy_binary()}


KAMAL_PROXY = ImageSpec(f"csdeploy-lab/kamal-proxy:{KAMAL_PROXY_VERSION}", "kamal-proxy",
                        recipe_extra=f"{KAMAL_PROXY_MODULE}@{KAMAL_PROXY_VERSION} {GO_BUILD}",
                        extras=_kamal_proxy_extras)
DEMO = {v: ImageSpec(f"csdeploy-lab/demo-app:{v}", "demo", build_args=(("APP_VERSION", v),))
        for v in DEMO_VERSIONS}
POSTGRES = ImageSpec("csdeploy-lab/postgres:15", "postgres")
REDIS = ImageSpec("csdeploy-lab/redis:7", "redis")

PUSH_AS: dict[str, str] = {
    KAMAL_PROXY.name: f"basecamp/kamal-proxy:{KAMAL_PROXY_VERSION}",
    **{spec.name: f"demo-app:{v}" for v, spec in DEMO.items()},
    POSTGRES.name: "postgres:15",
    REDIS.name: "redis:7",
}
"""Local image -> repository:tag in the registry (the same path under every registry name)."""


def cache_dir() -> Path:
    """``$CSDEPLOY_HOME/lab/cache``: build products worth keeping between runs."""
    return lab_dir() / "cache"


async def _run(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
               timeout: float = GO_TIMEOUT) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BuildError(f"{' '.join(args[:3])} did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-10:])
        raise BuildError(f"{' '.join(args[:4])} failed:\n{tail}",
                         hint="the Go module proxy (GOPROXY, default proxy.golang.org) must be reachable")
    return out.decode(errors="replace")


async def _check_go() -> None:
    hint = (f"install Go >= {'.'.join(map(str, KAMAL_PROXY_GO))} from https://go.dev/dl/ "
            "(Debian bookworm's golang-go is 1.19: too old to build kamal-proxy; any Go >= 1.21 "
            "downloads the right toolchain by itself through the module proxy)")
    if shutil.which("go") is None:
        raise BuildError("Go is not installed; the lab builds kamal-proxy from its Go module", hint=hint)
    version = (await _run("go", "env", "GOVERSION")).strip()
    m = re.match(r"go(\d+)\.(\d+)", version)
    if m is None or (int(m[1]), int(m[2])) < (1, 21):
        raise BuildError(f"{version or 'this Go'} cannot build kamal-proxy {KAMAL_PROXY_VERSION}",
                         hint=hint)


async def kamal_proxy_binary(*, force: bool = False) -> Path:
    """A static kamal-proxy binary built from the released module, cached by version.

    Not `go install module@version`: that also asks the proxy for the module's version list
    (to look for a deprecation notice), which some proxies refuse ("403 Forbidden"). `go mod
    download` fetches the exact release (checked against go.sum's checksum database), and
    building inside it is what upstream's Makefile does.
    """
    binary = cache_dir() / "bin" / "kamal-proxy"
    stamp = binary.with_name("kamal-proxy.recipe")
    recipe = f"{KAMAL_PROXY_MODULE}@{KAMAL_PROXY_VERSION} {GO_BUILD}"
    if not force and binary.exists() and stamp.exists() and stamp.read_text() == recipe:
        return binary
    await _check_go()
    with tempfile.TemporaryDirectory(prefix="csdeploy-go-") as tmp:
        info = json.loads(await _run("go", "mod", "download", "-json",
                                     f"{KAMAL_PROXY_MODULE}@{KAMAL_PROXY_VERSION}", cwd=Path(tmp)))
        if info.get("Error") or not info.get("Dir"):
            raise BuildError(f"go mod download {KAMAL_PROXY_MODULE}: {info.get('Error')}")
        out = Path(tmp) / "kamal-proxy"
        await _run("go", "build", "-trimpath", "-o", str(out), "./cmd/kamal-proxy", cwd=Path(info["Dir"]),
                   env={"CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"})
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(out, binary)
    stamp.write_text(recipe)
    return binary


def image_specs() -> list[ImageSpec]:
    """Every application image of the lab (the registry's own image is in registry.py)."""
    return [KAMAL_PROXY, *DEMO.values(), POSTGRES, REDIS]


async def build_images(force: bool = False, progress: Progress | None = None, *,
                       registry: RegistryInfo | None = None, push_images: bool = True,
                       results: list[BuildResult] | None = None,
                       pushed: list[PushResult] | None = None) -> dict[str, str]:
    """Build (or reuse) every lab image and push it; returns local image -> registry name.

    Independent images build concurrently (their apt downloads overlap) and each is pushed
    as soon as it and the registry are ready; the demo app's versions build one after
    another so v2, broken and degrading reuse v1's layers. ``registry`` defaults to the lab registry
    (started if needed). ``results``, if given, receives one BuildResult per image (built
    or cached), in build order, for callers that report; ``pushed`` one PushResult per image
    pushed or found in the registry already.
    """
    base_id = await image_id(await ensure_base_image())
    if base_id is None:
        raise BuildError("the lab's base image is missing after building it")
    target: asyncio.Future[RegistryInfo | None] = asyncio.get_running_loop().create_future()
    pushes = asyncio.Semaphore(2)
    done: list[BuildResult] = []

    async def chain(*specs: ImageSpec) -> None:
        for spec in specs:
            done.append(await build_image(spec, force=force, progress=progress, base_id=base_id))
            info = await asyncio.shield(target)
            if info is not None:
                async with pushes:
                    result = await push(spec.name, PUSH_AS[spec.name], registry=info, progress=progress)
                if pushed is not None:
                    pushed.append(result)

    async def registry_ready() -> None:
        try:
            info = registry if registry or not push_images else await ensure_registry(progress=progress)
            target.set_result(info if push_images else None)
        except BaseException as exc:
            target.set_exception(exc)
            raise

    tasks = [asyncio.ensure_future(c) for c in (registry_ready(), chain(KAMAL_PROXY),
                                                 chain(*DEMO.values()), chain(POSTGRES), chain(REDIS))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:  # one failure stops the rest: no builds left running unseen
        for task in tasks:
            task.cancel()
        raise
    if results is not None:
        results.extend(done)
    info = target.result()
    server = info.server if info else SERVER
    return {local: f"{server}/{repo_tag}" for local, repo_tag in PUSH_AS.items()}
