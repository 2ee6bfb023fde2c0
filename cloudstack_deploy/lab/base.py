"""The lab's base image: Debian bookworm minbase made with debootstrap, imported into Docker.

Nothing can be pulled from Docker Hub on our machines, so every lab image starts here. The
result is cached as a Docker image labelled with the recipe's hash: a second `lab up`
rebuilds nothing.

Slim as Debian's own docker images are: debootstrap's downloaded packages, apt's lists and
caches, docs (but each package's copyright), man and info pages and translations are removed
from the root filesystem before it is imported, and two files keep every later `apt-get
install` of an image built on it as small: a dpkg config (``SLIM_DPKG``: those paths are
never unpacked) and an apt config (``SLIM_APT``: downloaded packages and apt's binary caches
are deleted after each run). Each image's Dockerfile still removes /var/lib/apt/lists itself.
Every lab image is pulled by each new lab VM, so each MB here costs decompression CPU there.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import CsdeployError
from .docker import docker, image_label

BASE_IMAGE = "csdeploy-lab/debian:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
RECIPE_LABEL = "csdeploy.recipe"
RECIPE = f"debootstrap --variant=minbase {SUITE} {MIRROR} v2 slim"

SLIM_DPKG_FILE = "etc/dpkg/dpkg.cfg.d/csdeploy-lab-slim"
SLIM_DPKG = """\
# csdeploy lab images: no docs (but each package's copyright), man or info pages, or
# translations, as in Debian's own docker images. `dpkg --verify` reports them missing.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
"""
"""dpkg's path filters for every later install. PostgreSQL's initdb runs with LANG=C.UTF-8,
which glibc has built in (/usr/lib/locale/C.utf8, not under /usr/share/locale)."""
SLIM_APT_FILE = "etc/apt/apt.conf.d/csdeploy-lab-slim"
_CLEAN = "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"
SLIM_APT = f"""\
// csdeploy lab images: no downloaded packages or binary caches left in an image layer
DPkg::Post-Invoke {{ "{_CLEAN}"; }};
APT::Update::Post-Invoke {{ "{_CLEAN}"; }};
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
"""
"""apt's settings for every later `apt-get`: what Debian's images ship as docker-clean and
docker-no-languages (no translated package descriptions are downloaded)."""
CLEARED = ("var/cache/apt", "var/lib/apt/lists")
"""Their files are removed (the folders stay): debootstrap's .debs, apt's caches and lists."""


class BuildError(CsdeployError):
    """An image of the lab could not be built."""


def recipe_hash(*parts: str | bytes) -> str:
    """A short stable hash of everything an image is built from (for cache checks)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def base_recipe() -> str:
    """The base image's recipe hash (its label): the debootstrap line and the slimming files."""
    return recipe_hash(RECIPE, SLIM_DPKG, SLIM_APT)


def _dpkg_rules(text: str) -> list[tuple[bool, str]]:
    """(excluded?, glob) of each path-exclude / path-include line, in order."""
    rules = []
    for line in text.splitlines():
        word, _, pattern = line.partition(" ")
        if word in ("path-exclude", "path-include"):
            rules.append((word == "path-exclude", pattern.strip()))
    return rules


def _excluded(path: str, rules: list[tuple[bool, str]], *, folder_or_link: bool = False) -> bool:
    """What dpkg does with ``path``: the last rule that matches decides (fnmatch, so `*`
    crosses slashes, as dpkg's does). A folder or symbolic link that is excluded comes back
    when a path-include's text before its first wildcard begins it (dpkg keeps it, as it
    might lead to an included file): /usr/share/doc/*/copyright keeps every folder and
    link under /usr/share/doc."""
    verdict = False
    for exclude, pattern in rules:
        if fnmatch.fnmatchcase(path, pattern):
            verdict = exclude
    if verdict and folder_or_link:
        for exclude, pattern in rules:
            cut = next((i for i, c in enumerate(pattern) if c in "*?[\\"), len(pattern))
            if not exclude and path.startswith(pattern[:cut]):
                return False
    return verdict


def slim_rootfs(root: Path) -> int:
    """Make the root filesystem ``root`` what the slim base holds; returns the bytes removed.

    Writes SLIM_DPKG and SLIM_APT, empties CLEARED, and removes every file, link and empty
    folder the dpkg filters exclude, so the base holds what dpkg would have unpacked with
    those filters in place. Nothing outside those paths is touched.
    """
    removed = 0

    def drop(path: Path) -> None:
        nonlocal removed
        if not path.is_symlink():
            removed += path.lstat().st_size
        path.unlink()

    for rel in CLEARED:  # files only: apt expects its folders (archives/partial, ...) to be there
        for dirpath, dirnames, filenames in os.walk(root / rel):
            here = Path(dirpath)
            for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
                drop(here / name)
    rules = _dpkg_rules(SLIM_DPKG)
    tops = sorted({pattern.split("*", 1)[0].rstrip("/") for exclude, pattern in rules if exclude})
    for top in tops:
        base = root / top.lstrip("/")
        if base.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(base, topdown=False):
            here = Path(dirpath)
            for name in filenames + dirnames:
                path = here / name
                link = path.is_symlink()
                if not link and name in dirnames:
                    continue  # a folder: seen (and emptied) before its parent
                if _excluded("/" + path.relative_to(root).as_posix(), rules, folder_or_link=link):
                    drop(path)
            if here != base and not any(here.iterdir()) and \
                    _excluded("/" + here.relative_to(root).as_posix(), rules, folder_or_link=True):
                here.rmdir()
    for rel, text in ((SLIM_DPKG_FILE, SLIM_DPKG), (SLIM_APT_FILE, SLIM_APT)):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o644)
    return removed


async def ensure_base_image(*, force: bool = False) -> str:
    """Build (or reuse) the base image; returns its name."""
    want = base_recipe()
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
        await asyncio.to_thread(slim_rootfs, root)
        tar = await asyncio.create_subprocess_exec("tar", "-C", str(root), "-c", ".", stdout=asyncio.subprocess.PIPE)
        assert tar.stdout is not None
        data = await tar.stdout.read()
        await tar.wait()
        await docker("import", "--change", f"LABEL {RECIPE_LABEL}={want}", "-", BASE_IMAGE, input=data)
    return BASE_IMAGE
