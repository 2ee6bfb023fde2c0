"""The lab's image registry: Debian's docker-registry with TLS from the lab CA and basic auth.

Deploys pull from ``registry.lab:5000`` exactly as they would from a real private registry:
over TLS verified against a CA the hosts are given, with a user and password from the
blueprint's secrets. This machine pushes to the same registry through ``localhost:<port>``
(published on 127.0.0.1 only), using the same repository paths.

Each lab (one per CSDEPLOY_HOME) has its own registry: container, data volume and host port
come from the lab's config (lab/config.py; the default home keeps ``csdeploy-lab-registry``
on port 5000). Called without them, the functions here use the current home's lab.

How pushes trust the CA without restarting dockerd: dockerd treats 127.0.0.0/8 (and so
``localhost:5000``) as an "insecure registry" by default, which still means HTTPS first,
only without verifying the certificate. We also write the CA to
``/etc/docker/certs.d/localhost:<port>/ca.crt`` when we may (root), which dockerd reads
per connection and uses once 127.0.0.0/8 is removed from its insecure list. Lab VMs pull
from ``registry.lab:5000`` (not loopback there) with the CA in their certs.d: verified.

Files (all under ``$CSDEPLOY_HOME/lab``): ``ca/ca.crt`` (+ ``ca.key`` 0600),
``registry/password`` (0600), ``registry/files/{server.crt,server.key,htpasswd}`` (copied into
the container), ``registry/docker-config/`` (the docker login used for pushes, so the user's
own ~/.docker/config.json is never touched).

A new lab's registry starts from this machine's seed (``SEED_VOLUME``, shared by every lab
like the images): a copy of a fresh lab registry's data taken right after the lab's images
were pushed into it. Its pushes then find every image already there: a push compresses each
layer again, about 40 s of CPU for the lab's images, where copying the seed takes seconds. A
seed is only ever taken from a registry made in the same `lab up`, before anything but the
lab's own images could be pushed to it, and it is written under a machine-wide lock with its
completion mark last, so a lab never starts from half a seed. A seed taken from a registry
that itself started from an (older) seed drops what no tag names, so it holds the current
images only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ..errors import CsdeployError
from ..progress import Event, Progress
from .base import recipe_hash
from .build import ImageSpec, build_image, image_id
from .ca import CertPair, ensure_ca, ensure_server_cert, lab_dir, write_private
from .config import HOME_LABEL, claims_dir, current_lab_config, ensure_lab_config
from .docker import docker

REGISTRY_IMAGE = "csdeploy-lab/registry:2"
REGISTRY_SPEC = ImageSpec(REGISTRY_IMAGE, "registry")
SERVER = "registry.lab:5000"
USERNAME = "csdeploy"
CONFIG_LABEL = "csdeploy.config"
#: This machine's copy of a lab registry holding the lab's images (see the module's docstring).
SEED_VOLUME = "csdeploy-lab-registry-seed"
SEED_LABEL = "csdeploy.lab.seed=1"
SEED_COMPLETE = ".csdeploy-seed-complete"  # written last: a seed without it is never used
CERT_NAMES = ["registry.lab", "localhost"]
CERT_IPS = ["127.0.0.1"]
CERTS_D = Path("/etc/docker/certs.d")
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


class RegistryError(CsdeployError):
    """The lab registry could not be started, reached or pushed to."""


@dataclass(frozen=True)
class RegistryInfo:
    """How to reach the lab registry, from this machine and from the lab's hosts."""

    name: str
    """The container's name."""
    host_port: int
    """Published on 127.0.0.1: pushes go to ``localhost:<host_port>``."""
    password_path: Path
    ca_path: Path
    server: str = SERVER
    """What deploys pull from (the blueprint's ``registry.server``)."""
    username: str = USERNAME
    volume: str = ""
    state_dir: Path = field(default_factory=lambda: lab_dir() / "registry")
    # What one `ensure_registry` call did, not which registry this is (not compared):
    fresh: bool = field(default=False, compare=False)
    """Its data volume was made by this `ensure_registry` (nothing but the lab's images yet)."""
    seeded: bool = field(default=False, compare=False)
    """That volume started as a copy of this machine's seed."""

    @property
    def local_server(self) -> str:
        return f"localhost:{self.host_port}"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.host_port}"

    @property
    def docker_config(self) -> Path:
        return self.state_dir / "docker-config"

    def password(self) -> str:
        return self.password_path.read_text().strip()


@dataclass(frozen=True)
class PushResult:
    ref: str
    digest: str
    pushed: bool
    """False when the registry already had this exact manifest."""


@dataclass(frozen=True)
class RegistryStatus:
    name: str
    state: str
    """running, exited, created, ... or missing."""
    host_port: int | None = None
    reachable: bool = False
    repositories: dict[str, list[str]] = field(default_factory=dict)
    detail: str = ""


def _paths(state_dir: Path, ca_dir: Path | None) -> tuple[CertPair, Path, Path]:
    ca = ensure_ca(ca_dir or state_dir.parent / "ca")
    files = state_dir / "files"
    ensure_server_cert(ca, files, CERT_NAMES, CERT_IPS)
    return ca, files, state_dir / "password"


def _password_needing_htpasswd(files: Path, password_path: Path) -> str | None:
    """Make the password once; return it when its htpasswd line is still to be made."""
    if password_path.exists() and (files / "htpasswd").exists():
        return None
    if not password_path.exists():
        write_private(password_path, (secrets.token_urlsafe(24) + "\n").encode())
    return password_path.read_text().strip()


async def _ensure_htpasswd(files: Path, password_path: Path) -> None:
    """The registry's htpasswd for our user, made with the image's own htpasswd (bcrypt)."""
    password = _password_needing_htpasswd(files, password_path)
    if password is None:
        return
    # -i: the password comes on stdin, never in argv; -B: bcrypt, as the registry requires.
    _, out, _ = await docker("run", "--rm", "-i", "--network", "none", "--entrypoint", "htpasswd",
                             REGISTRY_IMAGE, "-niB", USERNAME, input=password.encode() + b"\n")
    line = next((x for x in out.splitlines() if x.startswith(f"{USERNAME}:")), "")
    if not line:
        raise RegistryError("htpasswd did not return a bcrypt line for the registry user")
    write_private(files / "htpasswd", (line + "\n").encode())


async def ensure_registry(*, name: str | None = None, host_port: int | None = None,
                          volume: str | None = None, state_dir: Path | None = None,
                          ca_dir: Path | None = None, labels: Sequence[str] = (),
                          progress: Progress | None = None) -> RegistryInfo:
    """Start the lab registry, or reuse it when it already runs with this exact configuration.

    Without ``name`` it is the current home's lab registry (name, port, volume and labels from
    the lab's config, made on first use). The container carries a hash of everything it was
    made from (image, certificate, key, htpasswd, port, volume, labels); a change to any of
    them recreates it. The data volume is kept; the current home's lab registry whose volume
    is new starts from this machine's seed (see the module's docstring).
    """
    own_lab = name is None  # only a lab's own registry starts from (and gives) the seed
    if name is None:
        lab = ensure_lab_config()
        name, host_port, volume = lab.registry_container, host_port or lab.registry_port, volume or lab.registry_volume
        labels = [*labels, f"{HOME_LABEL}={lab.id}", "csdeploy.lab.role=registry"]
    if host_port is None or volume is None:
        raise ValueError("a registry with its own name needs its host_port and volume too")
    state_dir = state_dir or lab_dir() / "registry"
    await build_image(REGISTRY_SPEC, progress=progress)
    ca, files, password_path = _paths(state_dir, ca_dir)
    await _ensure_htpasswd(files, password_path)
    info = RegistryInfo(name=name, host_port=host_port, password_path=password_path,
                        ca_path=ca.cert, volume=volume, state_dir=state_dir)
    want = recipe_hash(await image_id(REGISTRY_IMAGE) or "", str(host_port), volume, *labels,
                       *(p.read_bytes() for p in sorted(files.iterdir())))
    resource = f"registry {name}"
    state, have = await _container_state(name)
    networks: dict[str, list[str]] = {}
    if state != "missing" and have != want:
        networks = await _lab_networks(name)
        await docker("rm", "--force", name)
        state = "missing"
    fresh = seeded = False
    if state == "missing":
        if progress:
            progress.emit(Event(resource, "create", "running", f"127.0.0.1:{host_port}"))
        if (await docker("volume", "inspect", volume, check=False))[0] != 0:
            await docker("volume", "create", volume)
            fresh = own_lab
            seeded = own_lab and await seed_into(volume)
            if seeded and progress:
                progress.note(f"lab: registry {name} starts from this machine's seed ({SEED_VOLUME}): "
                              "the lab's images are there already")
        await docker("create", "--name", name, "--restart", "unless-stopped",
                     "--label", "csdeploy.lab=1", "--label", f"{CONFIG_LABEL}={want}",
                     *(arg for label in labels for arg in ("--label", label)),
                     "--publish", f"127.0.0.1:{host_port}:5000",
                     "--volume", f"{volume}:/var/lib/registry",
                     "--log-opt", "max-size=10m", REGISTRY_IMAGE)
        await docker("cp", f"{files}/.", f"{name}:/etc/docker/registry/lab")
        for network, aliases in networks.items():  # the lab networks VMs reach it on
            alias_args = [a for alias in aliases for a in ("--alias", alias)]
            await docker("network", "connect", *alias_args, network, name, check=False)
    if state != "running":
        code, _, err = await docker("start", name, check=False)
        if code != 0:
            raise RegistryError(f"the registry container {name} did not start: {err.strip()}",
                                hint=f"is port {host_port} on 127.0.0.1 free? (ss -ltnp "
                                     f"'sport = :{host_port}')")
    await _wait_ready(info)
    _trust_on_host(info)
    if fresh:
        info = dataclasses.replace(info, fresh=True, seeded=seeded)
    if progress:
        progress.emit(Event(resource, "create" if state == "missing" else "start",
                            "done" if state != "running" else "skipped", info.local_server))
    return info


@contextlib.asynccontextmanager
async def _seed_lock() -> AsyncIterator[None]:
    """The machine-wide lock around taking or copying the seed (labs of every home share it)."""
    folder = claims_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry-seed.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666)  # every user's labs take it
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def _copy_volume(source: str, target: str, script: str) -> int:
    """Run ``script`` (sh) with ``source`` read-only at /from and ``target`` at /to."""
    code, _, _ = await docker("run", "--rm", "--network", "none", "--volume", f"{source}:/from:ro",
                              "--volume", f"{target}:/to", "--entrypoint", "sh", REGISTRY_IMAGE,
                              "-c", script, check=False, timeout=900)
    return code


async def seed_into(volume: str) -> bool:
    """Copy this machine's seed into the new, empty ``volume``; False when there is none."""
    async with _seed_lock():
        if (await docker("volume", "inspect", SEED_VOLUME, check=False))[0] != 0:
            return False
        code = await _copy_volume(SEED_VOLUME, volume, f"[ -f /from/{SEED_COMPLETE} ] || exit 3; "
                                                       f"cp -a /from/. /to/ && rm -f /to/{SEED_COMPLETE}")
        if code != 0:  # an unfinished seed, or a failed copy: start empty, the pushes fill it
            await _copy_volume(SEED_VOLUME, volume, "rm -rf /to/..?* /to/.[!.]* /to/*")
            return False
        return True


async def save_seed(info: RegistryInfo, progress: Progress | None = None) -> None:
    """Make ``info``'s registry data this machine's seed. Only for a registry made by this
    `lab up` (`RegistryInfo.fresh`) once the lab's images were pushed into it: it then holds
    those and nothing else."""
    if not info.fresh or not info.volume:
        return
    # A registry that started from an older seed still holds that seed's images wherever the
    # lab's images have changed since (a new base image): the copy drops what no tag names, so
    # the seed holds the lab's current images only and does not grow with every rebuild.
    collect = ("printf 'version: 0.1\\nstorage:\\n  filesystem:\\n    rootdirectory: /to\\n' >/tmp/gc.yml && "
               "docker-registry garbage-collect --delete-untagged /tmp/gc.yml >/dev/null 2>&1; "
               if info.seeded else "")
    async with _seed_lock():
        await docker("volume", "rm", "--force", SEED_VOLUME, check=False)
        await docker("volume", "create", "--label", SEED_LABEL, SEED_VOLUME)
        code = await _copy_volume(info.volume, SEED_VOLUME, f"cp -a /from/. /to/ && {collect}touch /to/{SEED_COMPLETE}")
    if progress:
        progress.note(f"lab: this machine's registry seed ({SEED_VOLUME}) " +
                      ("now holds the lab's images: the next new lab copies them instead of pushing"
                       if code == 0 else "could not be written; the next new lab pushes its images"))


async def remove_seed() -> None:
    async with _seed_lock():
        await docker("volume", "rm", "--force", SEED_VOLUME, check=False)


async def _container_state(name: str) -> tuple[str, str | None]:
    """(state, config label) of a container, or ("missing", None)."""
    fmt = '{{.State.Status}} {{index .Config.Labels "' + CONFIG_LABEL + '"}}'
    code, out, _ = await docker("container", "inspect", "--format", fmt, name, check=False)
    if code != 0:
        return "missing", None
    state, _, label = out.strip().partition(" ")
    return state, label or None


async def _lab_networks(name: str) -> dict[str, list[str]]:
    """The user-defined networks a container is on, with its aliases (kept on a recreate)."""
    _, out, _ = await docker("container", "inspect", "--format",
                             "{{.Id}} {{json .NetworkSettings.Networks}}", name)
    ident, _, nets = out.strip().partition(" ")
    return {net: [a for a in (cfg.get("Aliases") or []) if a not in (ident[:12], name)]
            for net, cfg in (json.loads(nets or "{}") or {}).items()
            if net not in ("bridge", "host", "none")}


def _ssl(info: RegistryInfo) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(info.ca_path))


async def _get(info: RegistryInfo, path: str, *, method: str = "GET", auth: bool = True,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = dict(headers or {})
    if auth:
        token = base64.b64encode(f"{info.username}:{info.password()}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
            method, info.url + path, ssl=_ssl(info), headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def _wait_ready(info: RegistryInfo, timeout: float = 30.0) -> None:
    """Wait until /v2/ answers 401 without credentials (TLS and auth both up)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, _, _ = await _get(info, "/v2/", auth=False)
            if status == 401:
                return
            last = f"HTTP {status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.3)
    _, logs, _ = await docker("logs", "--tail", "15", info.name, check=False)
    raise RegistryError(f"the registry on {info.url} did not become ready ({last}); its log:\n{logs}")


def _trust_on_host(info: RegistryInfo) -> None:
    """Put the CA where this machine's dockerd looks for it; skip quietly without root."""
    for host in (info.local_server, f"127.0.0.1:{info.host_port}"):
        target = CERTS_D / host / "ca.crt"
        try:
            if not target.exists() or target.read_bytes() != info.ca_path.read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(info.ca_path.read_bytes())
        except OSError:
            return


def _untrust_on_host(ca_path: Path) -> None:
    """Remove every certs.d entry holding this CA (whatever port the registry had)."""
    try:
        ca = ca_path.read_bytes()
        entries = [p for p in CERTS_D.glob("*/ca.crt") if p.read_bytes() == ca]
        for entry in entries:
            entry.unlink()
            if not any(entry.parent.iterdir()):
                entry.parent.rmdir()
    except OSError:
        pass


async def manifest(info: RegistryInfo, repo: str, tag: str) -> tuple[str, str] | None:
    """(manifest digest, image config digest) the registry holds for ``repo:tag``, or None.

    The config digest of a pushed image is its local image id, which is how `push` knows a
    push would change nothing without keeping any extra tag around on this machine.
    """
    status, headers, body = await _get(info, f"/v2/{repo}/manifests/{tag}",
                                       headers={"Accept": MANIFEST_TYPES})
    if status == 404:
        return None
    if status != 200:
        raise RegistryError(f"the registry answered HTTP {status} for {repo}:{tag}")
    config = (json.loads(body).get("config") or {}).get("digest", "")
    return headers.get("Docker-Content-Digest", ""), config


async def catalog(info: RegistryInfo) -> dict[str, list[str]]:
    """Every repository in the registry with its tags."""
    status, _, body = await _get(info, "/v2/_catalog?n=1000")
    if status != 200:
        raise RegistryError(f"the registry's catalog answered HTTP {status}")
    repos: dict[str, list[str]] = {}
    for repo in json.loads(body).get("repositories") or []:
        code, _, tags = await _get(info, f"/v2/{repo}/tags/list")
        repos[repo] = sorted(json.loads(tags).get("tags") or []) if code == 200 else []
    return repos


_logged_in: set[tuple[str, str]] = set()


async def login(info: RegistryInfo) -> None:
    """docker login for pushes, into the lab's own docker config directory (0700)."""
    key = (str(info.docker_config), info.password())
    if key in _logged_in:
        return
    info.docker_config.mkdir(parents=True, exist_ok=True, mode=0o700)
    await docker("--config", str(info.docker_config), "login", info.local_server,
                 "--username", info.username, "--password-stdin", input=info.password().encode())
    _logged_in.add(key)


async def push(local_image: str, repo_tag: str, *, registry: RegistryInfo | None = None,
               progress: Progress | None = None) -> PushResult:
    """Push ``local_image`` as ``repo_tag`` (``demo-app:v1``; a ``registry.lab:5000/``
    prefix is accepted), unless the registry already has that very manifest."""
    info = registry or await ensure_registry()
    for prefix in (f"{info.server}/", f"{info.local_server}/"):
        repo_tag = repo_tag.removeprefix(prefix)
    repo, _, tag = repo_tag.rpartition(":")
    if not repo or "/" in tag:
        raise RegistryError(f"{repo_tag!r} is not repository:tag")
    target = f"{info.local_server}/{repo_tag}"
    resource = f"image {info.server}/{repo_tag}"
    local_id = await image_id(local_image)
    if local_id is None:
        raise RegistryError(f"there is no local image {local_image} to push")
    remote = await manifest(info, repo, tag)
    if remote is not None and remote[1] == local_id:
        if progress:
            progress.emit(Event(resource, "push", "skipped", "already in the registry"))
        return PushResult(f"{info.server}/{repo_tag}", remote[0], False)
    if progress:
        progress.emit(Event(resource, "push", "running"))
    await login(info)
    await docker("tag", local_image, target)
    try:
        _, out, _ = await docker("--config", str(info.docker_config), "push", target, timeout=1800)
    finally:
        await docker("rmi", target, check=False)  # only the extra tag; the image stays
    digest = next((w for line in out.splitlines() if "digest:" in line
                   for w in line.split() if w.startswith("sha256:")), "")
    if progress:
        progress.emit(Event(resource, "push", "done", digest[:19]))
    return PushResult(f"{info.server}/{repo_tag}", digest, True)


async def connect_network(network: str, *, name: str | None = None, alias: str = "registry.lab") -> None:
    """Make the registry (default: this lab's) reachable as ``registry.lab:5000`` on a lab
    docker network."""
    name = name or current_lab_config().registry_container
    code, _, err = await docker("network", "connect", "--alias", alias, network, name, check=False)
    if code != 0 and "already exists" not in err:
        raise RegistryError(f"could not attach {name} to network {network}: {err.strip()}")


async def registry_status(*, name: str | None = None, state_dir: Path | None = None) -> RegistryStatus:
    """What `csdeploy lab status` shows: the container's state and, if up, what it holds."""
    name = name or current_lab_config().registry_container
    state, _ = await _container_state(name)
    if state == "missing":
        return RegistryStatus(name, "missing", detail="not created (csdeploy lab up makes it)")
    _, out, _ = await docker("container", "inspect", "--format",
                             '{{with index .HostConfig.PortBindings "5000/tcp"}}{{(index . 0).HostPort}}{{end}}',
                             name)
    port = int(out.strip()) if out.strip().isdigit() else None
    if state != "running" or port is None:
        return RegistryStatus(name, state, port)
    state_dir = state_dir or lab_dir() / "registry"
    info = RegistryInfo(name=name, host_port=port, password_path=state_dir / "password",
                        ca_path=state_dir.parent / "ca" / "ca.crt", state_dir=state_dir)
    try:
        return RegistryStatus(name, state, port, True, await catalog(info))
    except (aiohttp.ClientError, OSError, TimeoutError, RegistryError) as exc:
        return RegistryStatus(name, state, port, False, detail=f"{type(exc).__name__}: {exc}")


async def remove_registry(*, name: str | None = None, volume: str | None = None, purge: bool = False,
                          state_dir: Path | None = None) -> None:
    """Remove the container (``lab down``); with ``purge`` also its images' volume and
    the CA entry written for this machine's dockerd. Default: this lab's registry."""
    if name is None:
        lab = current_lab_config()
        name, volume = lab.registry_container, volume or lab.registry_volume
    await docker("rm", "--force", name, check=False)
    if purge and volume:
        await docker("volume", "rm", "--force", volume, check=False)
        _untrust_on_host((state_dir or lab_dir() / "registry").parent / "ca" / "ca.crt")
