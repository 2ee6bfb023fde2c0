"""VM templates of the lab's docker backend: Debian 12 hosts as systemd containers.

A docker-backend VM is a container that boots like a cloud VM: systemd as PID 1, cloud-init
reading a NoCloud seed the simulator writes before the first boot, sshd. Two templates, as a
cloud would offer them: ``debian-12`` (bare, the rollout installs Docker for real) and
``debian-12-docker`` (docker.io preinstalled, built on top of the bare one). Both are built
locally from the debootstrap base (nothing can be pulled here) and cached by a recipe hash
label, so a second start rebuilds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import BASE_IMAGE, RECIPE_LABEL, BuildError, base_recipe, ensure_base_image, recipe_hash
from .docker import docker, image_label

ASSETS = Path(__file__).parent / "assets" / "templates"
REPO = "csdeploy-lab/template"
#: Template key -> (Dockerfile, the key of the template it is built on, or None for the base).
RECIPES: dict[str, tuple[str, str | None]] = {
    "debian-12": ("debian-12.Dockerfile", None),
    "debian-12-docker": ("debian-12-docker.Dockerfile", "debian-12"),
}

Progress = Callable[[str], None]


def image_name(key: str) -> str:
    """The Docker image of template ``key`` (``csdeploy-lab/template:debian-12``)."""
    return f"{REPO}:{key}"


def _context_files() -> list[Path]:
    return sorted(p for p in ASSETS.rglob("*") if p.is_file())


def template_recipe(key: str, base_recipe: str) -> str:
    """The recipe hash of ``key``: its Dockerfile, the shared rootfs files and its parent's hash.

    Any change to a file that goes into the image, or to the image below it, changes the
    hash and so triggers a rebuild; nothing else does.
    """
    dockerfile, parent = RECIPES[key]
    parts: list[str | bytes] = ["template v1", key, base_recipe]
    for path in _context_files():
        rel = path.relative_to(ASSETS).as_posix()
        if rel.endswith(".Dockerfile") and rel != dockerfile:
            continue
        parts += [rel, oct(path.stat().st_mode & 0o777), path.read_bytes()]
    if parent is not None:
        parts.append(template_recipe(parent, base_recipe))
    return recipe_hash(*parts)


async def _build(key: str, want: str, parent_image: str, progress: Progress | None,
                 no_cache: bool = False) -> None:
    dockerfile, _ = RECIPES[key]
    if progress:
        progress(f"building VM template {image_name(key)} (first use; about a minute)")
    _, old_id, _ = await docker("image", "inspect", "--format", "{{.Id}}", image_name(key), check=False)
    code, out, err = await docker(
        "build", *(["--no-cache"] if no_cache else []), "-f", str(ASSETS / dockerfile), "--build-arg", f"BASE={parent_image}",
        "--label", f"{RECIPE_LABEL}={want}", "--label", "csdeploy.lab=1",
        "-t", image_name(key), str(ASSETS), check=False, timeout=1800)
    if code != 0:
        tail = "\n".join((out + err).strip().splitlines()[-8:])
        raise BuildError(f"building VM template {image_name(key)} failed:\n{tail}",
                         hint="check that deb.debian.org is reachable from docker build containers")
    if old_id.strip():  # the replaced build would linger as a dangling image (unless a VM uses it)
        await docker("rmi", old_id.strip(), check=False)
    if progress:
        progress(f"built VM template {image_name(key)}")


async def ensure_templates(force: bool = False, progress: Progress | None = None) -> dict[str, str]:
    """Build (or reuse) every VM template; returns ``{key: image}``.

    ``force`` rebuilds the templates (not the debootstrap base). ``progress`` receives a
    line before and after each build, so a first ``lab simulator --backend docker`` does not
    look hung while it installs packages.
    """
    if progress and await image_label(BASE_IMAGE, RECIPE_LABEL) != base_recipe():  # missing or older
        progress(f"building the lab's base image {BASE_IMAGE} (debootstrap, about a minute)")
    base = await ensure_base_image()
    base_label = await image_label(base, RECIPE_LABEL) or ""
    images: dict[str, str] = {}
    for key, (_, parent) in RECIPES.items():  # parents come first in RECIPES
        want = template_recipe(key, base_label)
        if force or await image_label(image_name(key), RECIPE_LABEL) != want:
            await _build(key, want, image_name(parent) if parent else base, progress, no_cache=force)
        images[key] = image_name(key)
    return images

