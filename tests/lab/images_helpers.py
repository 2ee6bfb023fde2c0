"""Helpers for the lab image and registry tests: real Docker, and cleanup that always runs.

Every test works on containers, networks and volumes named with one random prefix, tracked
by a `Scratch` and removed in its `close()` (called from fixtures' finally blocks), so a
failed test leaves nothing running. Checks go through the docker CLI, curl and http.client
directly, never through the code under test.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import secrets
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from cloudstack_deploy.lab.registry import RegistryInfo, ensure_registry, remove_registry
from tests.support.docker import docker
from tests.support.ports import free_port

__all__ = ["docker", "free_port"]  # for the modules here

T = TypeVar("T")


def request(method: str, url_host_port: str, path: str, body: str | None = None,
         timeout: float = 5) -> tuple[int, str]:
    """One request on a fresh connection: (status, body text)."""
    host, port = url_host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body.encode() if body is not None else None)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except (OSError, http.client.HTTPException, AssertionError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Scratch:
    """Docker objects for one test (or module), all removed by `close()`."""

    def __init__(self) -> None:
        self.prefix = "csdt-" + secrets.token_hex(3)
        self.containers: list[str] = []
        self.volumes: list[str] = []
        self.images: list[str] = []
        self.net = self.prefix + "-net"
        docker("network", "create", "--label", "csdeploy.test=1", self.net)

    def volume(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        docker("volume", "create", full)
        self.volumes.append(full)
        return full

    def run(self, name: str, image: str, *cmd: str, env: dict[str, str] | None = None,
            volumes: Sequence[str] = (), publish: Sequence[str] = (), alias: str | None = None,
            check: bool = True) -> str:
        """`docker run -d` on the scratch network; returns the container's full name."""
        full = f"{self.prefix}-{name}"
        self.containers.append(full)
        args = ["run", "-d", "--name", full, "--network", self.net, "--label", "csdeploy.test=1"]
        if alias:
            args += ["--network-alias", alias]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        for v in volumes:
            args += ["--volume", v]
        for p in publish:
            args += ["--publish", p]
        docker(*args, image, *cmd, check=check)
        return full

    def ip(self, container: str) -> str:
        fmt = '{{(index .NetworkSettings.Networks "' + self.net + '").IPAddress}}'
        return docker("inspect", "--format", fmt, container).stdout.strip()

    def host_port(self, container: str, port: int) -> str:
        """``127.0.0.1:NNNN`` where a ``--publish 127.0.0.1::port`` landed."""
        out = docker("port", container, f"{port}/tcp").stdout.split()
        return next(a for a in out if a.startswith("127.0.0.1:"))

    def health(self, container: str) -> str:
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        return docker("inspect", "--format", fmt, container).stdout.strip()

    def wait_healthy(self, container: str, timeout: float = 60) -> None:
        def healthy() -> bool:
            state = self.health(container)
            if state in ("exited", "dead"):
                logs = docker("logs", "--tail", "20", container, check=False)
                raise RuntimeError(f"{container} exited:\n{logs.stdout}{logs.stderr}")
            return state == "healthy"

        wait_for(healthy, timeout, f"{container} to be healthy")

    def import_tiny_image(self, variant: str = "") -> str:
        """A one-file image made with `docker import` (nothing to pull, pushes in a second);
        each ``variant`` has content of its own."""
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as tar:
            payload = f"tiny {self.prefix}{variant}\n".encode()
            info = tarfile.TarInfo("hello.txt")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        name = f"{self.prefix}-tiny{variant}:1"
        proc = subprocess.run(["docker", "import", "-", name], input=data.getvalue(),
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        self.images.append(name)
        return name

    def close(self) -> None:
        if self.containers:
            docker("rm", "--force", "--volumes", *self.containers, check=False)
        for v in self.volumes:
            docker("volume", "rm", "--force", v, check=False)
        for image in self.images:
            docker("rmi", "--force", image, check=False)
        # Containers that outlive the test (a registry attached to the network) let go of it.
        attached = docker("network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}",
                          self.net, check=False).stdout.split()
        for container in attached:
            docker("network", "disconnect", "--force", self.net, container, check=False)
        docker("network", "rm", self.net, check=False)


@contextmanager
def scratch() -> Iterator[Scratch]:
    s = Scratch()
    try:
        yield s
    finally:
        s.close()


@contextmanager
def own_registry(state_root: Path) -> Iterator[RegistryInfo]:
    """A registry of its own (name, port, volume, CA, password) for one test module."""
    tag = secrets.token_hex(3)
    kwargs = {"name": f"csdt-registry-{tag}", "volume": f"csdt-registry-{tag}-data",
              "state_dir": state_root / "lab" / "registry"}
    try:
        yield asyncio.run(ensure_registry(host_port=free_port(), **kwargs))  # type: ignore[arg-type]
    finally:
        asyncio.run(remove_registry(purge=True, **kwargs))  # type: ignore[arg-type]


SLIM_CHECK = (
    "find /var/lib/apt/lists /var/cache/apt -type f ! -empty 2>/dev/null; "
    "find /usr/share/man /usr/share/locale /usr/share/info -type f 2>/dev/null; "
    "find /usr/share/doc -type f ! -name copyright 2>/dev/null; "
    "test -f /etc/dpkg/dpkg.cfg.d/csdeploy-lab-slim || echo no-dpkg-path-filters; "
    "test -f /etc/apt/apt.conf.d/csdeploy-lab-slim || echo no-apt-clean-up")
"""Prints what a slim lab image must not hold (cloudstack_deploy/lab/base.py): apt's lists,
downloaded packages and caches (empty lock files aside), man and info pages, translations,
docs other than copyright files (links aside: maintainer scripts' update-alternatives make
some, as in Debian's own images); and names the slimming configs when they are missing."""


def leftovers(image: str) -> list[str]:
    """What ``image`` holds that a slim lab image must not (SLIM_CHECK), read as root."""
    return docker("run", "--rm", "--user", "0", "--entrypoint", "/bin/sh", image, "-c", SLIM_CHECK).stdout.split()


def curl(*args: str, config: str | None = None) -> tuple[int, str]:
    """curl ARGS; returns (exit code, HTTP status or ''). ``config`` goes on stdin (-K -),
    so a password never appears in argv."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", *args]
    if config is not None:
        cmd += ["-K", "-"]
    proc = subprocess.run(cmd, input=config, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout.strip()


def catalog_json(info: RegistryInfo) -> dict[str, object]:
    """The registry catalog fetched with curl (verified against the lab CA)."""
    proc = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(info.ca_path),
                           f"{info.url}/v2/_catalog", "-K", "-"],
                          input=f'user = "{info.username}:{info.password()}"\n',
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
