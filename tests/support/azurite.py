"""Azurite, Microsoft's Azure Storage emulator, as a blob server on loopback for one test module.

Installed outside the repository by ``scripts/lab-prereqs --test`` (``npm install azurite``
into ~/.cache/csdeploy/azurite; node >= 18). It is started on a free port chosen by the
kernel, keeps its blobs in memory, sends no telemetry (``--disableTelemetry``: by default it
reports to Application Insights) and is stopped when the module's tests are done.

A test module makes its fixtures from `serve` and `destination`::

    @pytest.fixture(scope="module")
    def azurite(tmp_path_factory): yield from serve(tmp_path_factory)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Azurite's well-known development account and its published key (not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CACHE = Path.home() / ".cache" / "csdeploy" / "azurite"
INSTALL = f"npm install --prefix {CACHE} azurite@3.35.0"
LISTENING = re.compile(rb"listens on http://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Azurite:
    endpoint: str  # http://127.0.0.1:PORT

    def driver(self, account: str = ACCOUNT, key: str = KEY) -> object:
        """libcloud's Azure driver on this server, as csdeploy makes it for ``?endpoint=``."""
        from libcloud.storage.providers import get_driver
        from libcloud.storage.types import Provider

        port = int(self.endpoint.rsplit(":", 1)[1])
        return get_driver(Provider.AZURE_BLOBS)(account, key, host="127.0.0.1", port=port, secure=False)

    def container(self) -> str:
        """A new empty container's name (csdeploy never creates one)."""
        name = f"c{os.urandom(5).hex()}"
        self.driver().create_container(name)  # type: ignore[attr-defined]
        return name


def azurite_blob() -> str | None:
    """The ``azurite-blob`` program: $CSDEPLOY_AZURITE, the cache's, or one on PATH."""
    for candidate in (os.environ.get("CSDEPLOY_AZURITE"), str(CACHE / "node_modules" / ".bin" / "azurite-blob"),
                      shutil.which("azurite-blob")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Run Azurite while the (module-scoped) fixture lasts; skip (fail under CI) without it."""
    pytest.importorskip("libcloud")
    program = azurite_blob()
    if program is None or shutil.which("node") is None:
        reason = f"Azurite is not installed ({INSTALL}; needs node)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: scripts/lab-prereqs --test installs it")
        pytest.skip(reason)
    where = tmp_path_factory.mktemp("azurite")  # its working directory (in memory: nothing kept)
    proc = subprocess.Popen([program, "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
                             "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=where)
    assert proc.stdout is not None
    port: list[int] = []
    said: list[bytes] = []
    listening = threading.Event()

    def read() -> None:  # until it exits: a full pipe would stall it
        for line in proc.stdout:  # type: ignore[union-attr]
            said.append(line)
            if not port and (m := LISTENING.search(line)):
                port.append(int(m.group(1)))
                listening.set()
        listening.set()

    reader = threading.Thread(target=read, name="azurite-output", daemon=True)
    reader.start()
    try:
        if not listening.wait(60) or not port:
            pytest.fail("Azurite did not start: " + b"".join(said[-5:]).decode(errors="replace").strip())
        yield Azurite(f"http://127.0.0.1:{port[0]}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)


def destination(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``azure://`` destination in a new container of the module's Azurite, with the dev
    account's credentials in the environment as a user would export them."""
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_KEY", KEY)
    return f"azure://{azurite.container()}/team/backups?endpoint={azurite.endpoint}"
