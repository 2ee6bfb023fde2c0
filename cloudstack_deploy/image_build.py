"""`csdeploy build`: the app image, made with the local Docker engine from the blueprint's
`build` section, tagged with the version, labelled `service=<service>`, pushed to the
blueprint's registry.

- BuildKit, because build secrets need it: `docker buildx build` when the client has the
  buildx plugin, else a client with BuildKit built in (Docker < 23, such as Debian 12's
  docker.io) with DOCKER_BUILDKIT=1. A client >= 23 without buildx refuses BuildKit, so the
  first usable `docker` on PATH is taken (or `$CSDEPLOY_DOCKER`), and which one is reported.
- Secrets reach BuildKit as `--secret id=NAME,env=NAME`: the value is only in the docker
  client's environment.
- The version is the context's git commit (short); uncommitted changes under the context or
  the Dockerfile make it `<sha>-dirty`, with a warning, so a dirty build never wears a clean
  commit's name.
- Login (password on stdin) and push run with a private, temporary DOCKER_CONFIG: the
  user's ~/.docker is never read or written for them, and the credential is deleted after.
- Where to push: the registry in the image name, unless the cloud profile (or
  $CSDEPLOY_REGISTRY_PUSH) maps it to another address this machine reaches it by (the lab's
  hosts pull from registry.lab:5000; this machine pushes to localhost:5000).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .blueprint_schema import Blueprint, Build
from .errors import InvalidInput, OperationFailed
from .localcmd import run_local
from .log import get_logger, redact
from .progress import Event, Progress
from .rollout.commands import image as cmd
from .rollout.contract import check_version

DOCKER_ENV = "CSDEPLOY_DOCKER"
BUILD_TIMEOUT = 1800.0
PUSH_TIMEOUT = 900.0
PROBE_TIMEOUT = 30.0
VERSION_BUILD_ARG = "CSDEPLOY_VERSION"
"""Every build gets the version as this build argument (the rollout sets the same name in the
container's environment); a Dockerfile that does not declare it is unaffected."""

log = get_logger(__name__)


@dataclass(frozen=True)
class DockerClient:
    path: str
    buildx: bool
    version: str

    def describe(self) -> str:
        how = "buildx" if self.buildx else "built-in BuildKit"
        return f"{self.path} {self.version} ({how})"


@dataclass
class BuildResult:
    image: str
    """What was built, ``<image>:<version>`` (the name hosts pull)."""
    version: str
    dirty: bool
    client: str
    build_seconds: float
    pushed_to: str | None = None
    """The reference pushed (another registry address when the profile maps one), or None."""
    push_seconds: float = 0.0
    also: list[BuildResult] = field(default_factory=list)
    """The roles' own images (`roles.X.build`), built with the same version."""


async def _run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: bytes | None = None,
               timeout: float) -> tuple[int, str]:
    """(exit code, stdout+stderr) of a local command; a timeout kills it."""
    try:
        code, out, _ = await run_local(argv, env=env, stdin=stdin, timeout=timeout, merge_stderr=True)
    except TimeoutError:
        raise OperationFailed(f"{' '.join(argv[:3])} did not finish within {timeout:.0f}s") from None
    return code, out


def _tail(text: str, lines: int = 20) -> str:
    return redact("\n".join(text.strip().splitlines()[-lines:]))


# ---- the version --------------------------------------------------------------------------

def source_version(context: Path, paths: Sequence[Path]) -> tuple[str, bool]:
    """(short commit of the repository holding ``context``, whether ``paths`` have uncommitted
    changes). Raises InvalidInput outside a git repository."""
    def git(argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InvalidInput(f"cannot run git for the version: {exc}",
                               hint="pass --version V") from None

    head = git(cmd.git_head(str(context)))
    if head.returncode != 0 or not head.stdout.strip():
        raise InvalidInput(f"no --version given and {context} is not in a git repository with a commit",
                           hint="pass --version V (an image tag)")
    changes = git(cmd.git_changes(str(context), [str(p) for p in paths]))
    return head.stdout.strip(), bool(changes.returncode != 0 or changes.stdout.strip())


# ---- the docker client --------------------------------------------------------------------

def _candidates() -> list[str]:
    chosen = os.environ.get(DOCKER_ENV)
    if chosen:
        return [chosen]
    found: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which("docker", path=folder or ".")
        if path and os.path.realpath(path) not in {os.path.realpath(p) for p in found}:
            found.append(path)
    return found


async def find_client() -> DockerClient:
    """The first docker client that can build with BuildKit (see the module's docstring)."""
    tried: list[str] = []
    for path in _candidates():
        # The client prints its version even when its daemon cannot be reached (and exits 1):
        # that is the build's error to report, with Docker's own words, not this probe's.
        _, out = await _run(cmd.client_version(path), timeout=PROBE_TIMEOUT)
        version = next((line for line in out.strip().splitlines() if re.fullmatch(r"\d+\.\d+\S*", line)), "")
        if not version:
            tried.append(f"{path} (does not run)")
            continue
        code, _ = await _run(cmd.buildx_version(path), timeout=PROBE_TIMEOUT)
        if code == 0:
            return DockerClient(path, True, version)
        major = re.match(r"(\d+)", version)
        if major and int(major[1]) < 23:
            return DockerClient(path, False, version)
        tried.append(f"{path} {version} (no buildx plugin)")
    raise InvalidInput(
        "no docker client here can build with BuildKit (build secrets need it): "
        + ("; ".join(tried) if tried else "no docker command on PATH"),
        hint="install the buildx plugin (Debian: docker-buildx, Docker's packages: docker-buildx-plugin), "
             f"or point {DOCKER_ENV} at a client with BuildKit built in (Docker < 23, e.g. Debian 12's "
             "/usr/bin/docker from docker.io)")


# ---- build and push -----------------------------------------------------------------------

def targets(bp: Blueprint) -> list[tuple[str, Build, str]]:
    """What `csdeploy build` makes: (image, how, where in the blueprint): the app's image from
    `build`, then each role's own image from its `build` (an image built once)."""
    out = [(bp.image, bp.build, "build")] if bp.build is not None else []
    for role in bp.roles.values():
        if role.build is not None and role.image not in [image for image, _, _ in out]:
            out.append((role.image, role.build, f"roles.{role.name}.build"))
    return out


def needed_secrets(bp: Blueprint, push: bool) -> tuple[str, ...]:
    """The secret names a build needs: its build secrets, and the registry password to push."""
    names = list(dict.fromkeys(name for _, build, _ in targets(bp) for name in build.secrets))
    if push and bp.registry is not None and bp.registry.password not in names:
        names.append(bp.registry.password)
    return tuple(names)


def only_secrets(bp: Blueprint, names: Sequence[str]) -> Blueprint:
    """``bp`` declaring only ``names``: what `load_secrets` then requires (a build does not need
    the database's password)."""
    return replace(bp, secrets=tuple(names))


def push_target(image: str, version: str, push_map: Mapping[str, str]) -> str:
    """``image:version`` with its registry part replaced by the address this machine pushes to."""
    first, sep, rest = image.partition("/")
    if sep and first in push_map:
        return f"{push_map[first]}/{rest}:{version}"
    return f"{image}:{version}"


def _check_paths(bp: Blueprint, build: Build, where: str) -> tuple[Path, Path]:
    where = f"{bp.source}: {where}.context" if bp.source else f"{where}.context"
    context = bp.resolve_path(build.context)
    if not context.is_dir():
        raise InvalidInput(f"{where}: {context} is not a directory")
    context = context.resolve()
    dockerfile = (context / build.dockerfile).resolve()
    if not dockerfile.is_file():
        raise InvalidInput(f"{where}: no Dockerfile at {dockerfile} (build.dockerfile is relative to the context)")
    return context, dockerfile


def _emit(progress: Progress | None, resource: str, action: str, status: str, detail: str = "") -> None:
    if progress is not None:
        progress.emit(Event(resource=resource, action=action, status=status, detail=detail))


async def build_image(bp: Blueprint, *, version: str | None, push: bool, secrets: Mapping[str, str],
                      push_map: Mapping[str, str] | None = None,
                      progress: Progress | None = None) -> BuildResult:
    """Build ``bp``'s app image as ``<image>:<version>`` (and each role's own image with a
    `build` of its own, with the same version: a deploy runs them together) and, with ``push``,
    push them.

    ``version`` None: the first context's git commit (``-dirty`` on uncommitted changes, with a
    warning on ``progress``). ``secrets`` holds at least `needed_secrets(bp, push)`.
    """
    made = targets(bp)
    if not made:
        raise InvalidInput(f"{bp.source or 'the blueprint'} has no `build` section, so csdeploy does not "
                           "know how to build the app image",
                           hint="add e.g. `build: {context: ., dockerfile: Dockerfile}` (paths relative "
                                "to the blueprint), or deploy an image built elsewhere with --version")
    paths = [_check_paths(bp, build, where) for _, build, where in made]  # every path before any build
    if push and bp.registry is None:
        raise InvalidInput("nothing to push to: the blueprint has no `registry` section",
                           hint="add registry: {server, username, password}, or build with --no-push")
    dirty = False
    if version is None:
        context, dockerfile = paths[0]
        sha, dirty = source_version(context, [context, dockerfile])
        version = f"{sha}-dirty" if dirty else sha
        if dirty and progress is not None:
            progress.note(f"uncommitted changes in {context}: the image is tagged {version}, "
                          "not as a commit", level="warning")
    check_version(version)
    client = await find_client()
    results = [await _build_one(bp, client, image, build, context, dockerfile, version, dirty, push=push,
                                secrets=secrets, push_map=push_map or {}, progress=progress)
               for (image, build, _), (context, dockerfile) in zip(made, paths, strict=True)]
    results[0].also = results[1:]
    return results[0]


async def _build_one(bp: Blueprint, client: DockerClient, image: str, build: Build, context: Path,
                     dockerfile: Path, version: str, dirty: bool, *, push: bool, secrets: Mapping[str, str],
                     push_map: Mapping[str, str], progress: Progress | None) -> BuildResult:
    ref = f"{image}:{version}"
    resource = f"image {ref}"
    args = {**{VERSION_BUILD_ARG: version}, **build.args}
    argv = cmd.build(client.path, buildx=client.buildx, context=str(context), dockerfile=str(dockerfile),
                     tag=ref, labels={"service": bp.service}, args=args, secrets=build.secrets,
                     target=build.target, platform=build.platform)
    env = {**({} if client.buildx else cmd.BUILDKIT_ENV), **{n: secrets[n] for n in build.secrets}}
    log.info("build", image=ref, client=client.describe(), context=str(context))
    _emit(progress, resource, "build", "running", client.describe())
    started = time.monotonic()
    code, out = await _run(argv, env=env, timeout=BUILD_TIMEOUT)
    build_seconds = time.monotonic() - started
    if code != 0:
        _emit(progress, resource, "build", "failed", f"exit {code}")
        raise OperationFailed(f"building {ref} failed (exit {code}):\n{_tail(out)}",
                              hint=f"the build ran `{client.path} {'buildx build' if client.buildx else 'build'}` "
                                   f"in {context}; run it there to see the whole log")
    _emit(progress, resource, "build", "done", f"{build_seconds:.1f}s")
    result = BuildResult(image=ref, version=version, dirty=dirty, client=client.describe(),
                         build_seconds=build_seconds)
    if push:
        assert bp.registry is not None
        result.pushed_to, result.push_seconds = await _push(
            client, ref, push_target(image, version, push_map), bp.registry.server,
            bp.registry.username, secrets[bp.registry.password], push_map, progress)
    return result


async def _push(client: DockerClient, ref: str, target: str, server: str, username: str, password: str,
                push_map: Mapping[str, str], progress: Progress | None) -> tuple[str, float]:
    """Log in (private DOCKER_CONFIG, password on stdin) and push ``ref`` as ``target``."""
    resource = f"image {ref}"
    address = push_map.get(server, server)
    started = time.monotonic()
    _emit(progress, resource, "push", "running", target)
    config = tempfile.mkdtemp(prefix="csdeploy-docker-")  # 0700; holds the login, removed below
    env = {"DOCKER_CONFIG": config}
    try:
        code, out = await _run(cmd.login(client.path, address, username), env=env,
                               stdin=password.encode() + b"\n", timeout=PROBE_TIMEOUT * 4)
        if code != 0:
            _emit(progress, resource, "push", "failed", "login refused")
            raise OperationFailed(f"docker login {address} as {username} failed:\n{_tail(out, 5)}",
                                  hint=f"check the registry's password secret and that {address} answers"
                                       + ("" if address != server else
                                          f"; if this machine reaches {server} by another address, set "
                                          "registry_push in the cloud profile or CSDEPLOY_REGISTRY_PUSH"))
        if target != ref:
            code, out = await _run(cmd.tag(client.path, ref, target), timeout=PROBE_TIMEOUT)
            if code != 0:
                raise OperationFailed(f"docker tag {ref} {target} failed:\n{_tail(out, 5)}")
        try:
            code, out = await _run(cmd.push(client.path, target), env=env, timeout=PUSH_TIMEOUT)
        finally:
            if target != ref:
                await _run(cmd.untag(client.path, target), timeout=PROBE_TIMEOUT)
        if code != 0:
            _emit(progress, resource, "push", "failed", f"exit {code}")
            raise OperationFailed(f"pushing {target} failed:\n{_tail(out, 10)}")
    finally:
        shutil.rmtree(config, ignore_errors=True)
    seconds = time.monotonic() - started
    _emit(progress, resource, "push", "done", f"{target} in {seconds:.1f}s")
    return target, seconds
