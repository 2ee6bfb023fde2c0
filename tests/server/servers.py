"""`csdeploy serve` as a real process on a free loopback port, for tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.cli import cli_argv
from tests.support.ports import free_port


@dataclass
class ServeProcess:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve_process(env: dict[str, str], log: Path, *args: str, verbose: int = 0,
                  inherit: bool = True) -> Iterator[ServeProcess]:
    """A `csdeploy [-v...] serve` process (its stdout and stderr in ``log``), stopped after;
    its environment is this process's with ``env`` over it, or ``env`` alone (not ``inherit``)."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(cli_argv(*(["-" + "v" * verbose] if verbose else []), "serve", "--bind", f"127.0.0.1:{port}", *args), env={**os.environ, **env} if inherit else env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    served = ServeProcess(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(served.url + "/api/openapi.json", timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"serve did not start:\n{served.output()}") from None
                time.sleep(0.1)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
