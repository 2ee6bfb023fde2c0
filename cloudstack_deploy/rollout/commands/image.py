"""Commands run on THIS machine to make the app image: git (the version), docker build with
BuildKit, tag, login and push. Argv lists only; `image_build.py` decides when to run them.

The docker client is a parameter (``docker``): `csdeploy build` picks the first client that
can drive BuildKit (a buildx plugin, or a client with BuildKit built in), which is not always
the first `docker` on PATH.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .script import Argv

#: Only the version string of the client, so a missing engine does not fail the probe.
CLIENT_VERSION_FORMAT = "{{.Client.Version}}"
#: What makes a client without buildx use the engine's built-in BuildKit (clients < 23).
BUILDKIT_ENV = {"DOCKER_BUILDKIT": "1"}


def git_head(repo_dir: str) -> Argv:
    return ["git", "-C", repo_dir, "rev-parse", "--short", "HEAD"]


def git_changes(repo_dir: str, paths: Sequence[str]) -> Argv:
    """Uncommitted changes (untracked files included) under ``paths``: non-empty output = dirty."""
    return ["git", "-C", repo_dir, "status", "--porcelain", "--untracked-files=normal", "--", *paths]


def client_version(docker: str) -> Argv:
    return [docker, "version", "--format", CLIENT_VERSION_FORMAT]


def buildx_version(docker: str) -> Argv:
    return [docker, "buildx", "version"]


def build(docker: str, *, buildx: bool, context: str, dockerfile: str, tag: str,
          labels: Mapping[str, str], args: Mapping[str, str], secrets: Sequence[str],
          target: str | None = None, platform: str | None = None) -> Argv:
    """``docker [buildx] build``: each secret as ``--secret id=NAME,env=NAME``, so its value is
    read from the client's environment (never argv, never a file, never the image history)."""
    argv = [docker, "buildx", "build", "--load"] if buildx else [docker, "build"]
    argv += ["--progress", "plain", "--file", dockerfile, "--tag", tag]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    for name in secrets:
        argv += ["--secret", f"id={name},env={name}"]
    if target:
        argv += ["--target", target]
    if platform:
        argv += ["--platform", platform]
    return [*argv, context]


def tag(docker: str, source: str, target: str) -> Argv:
    return [docker, "image", "tag", source, target]


def untag(docker: str, ref: str) -> Argv:
    """Remove one name of an image (the image stays while another name points at it)."""
    return [docker, "image", "rm", ref]


def login(docker: str, server: str, username: str) -> Argv:
    """The password comes on stdin, never in argv."""
    return [docker, "login", server, "--username", username, "--password-stdin"]


def push(docker: str, ref: str) -> Argv:
    return [docker, "image", "push", ref]
