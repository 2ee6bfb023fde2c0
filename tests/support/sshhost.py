"""A host for interactive sessions without Docker or a VM: an in-process asyncssh server whose
commands run on this machine (under `sh -c`, with a pseudo-terminal when the client asks for
one), with tests/support/fakedocker.py as its `docker`. It runs in a thread with its own event
loop, so a CLI subprocess (under `script` or tmux) can log in to it like to a real host.

`SSHHost.start(tmp_path, state)` gives the address, the pinned host key and an environment in
a CSDEPLOY_HOME (`environment()`) whose inventory points at it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import struct
import termios
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from . import fakedocker


async def _run_with_pty(process: asyncssh.SSHServerProcess[bytes], env: dict[str, str], cwd: str) -> int:
    loop = asyncio.get_running_loop()
    master, slave = pty.openpty()
    cols, rows, *_ = process.get_terminal_size()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows or 24, cols or 80, 0, 0))
    child = await asyncio.create_subprocess_exec("sh", "-c", process.command or "sh", stdin=slave, stdout=slave,
                                                 stderr=slave, env={**env, "TERM": process.get_terminal_type() or
                                                                    "xterm"}, cwd=cwd, start_new_session=True)
    os.close(slave)

    async def to_client() -> None:
        while True:
            try:
                data = await loop.run_in_executor(None, os.read, master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end is gone
                return
            if not data:
                return
            process.stdout.write(data)

    async def from_client() -> None:
        while data := await process.stdin.read(65536):
            os.write(master, data)

    feeding = asyncio.create_task(from_client())
    await to_client()
    code = await child.wait()
    feeding.cancel()
    os.close(master)
    return code


async def _run_with_pipes(process: asyncssh.SSHServerProcess[bytes], env: dict[str, str], cwd: str) -> int:
    child = await asyncio.create_subprocess_exec("sh", "-c", process.command or "sh", stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                 env=env, cwd=cwd)
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    stdin = child.stdin

    async def feed() -> None:
        while data := await process.stdin.read(65536):
            stdin.write(data)
            await stdin.drain()
        stdin.close()

    async def copy(source: asyncio.StreamReader, target: asyncssh.SSHWriter[bytes]) -> None:
        while data := await source.read(65536):
            target.write(data)

    feeding = asyncio.create_task(feed())
    await asyncio.gather(copy(child.stdout, process.stdout), copy(child.stderr, process.stderr))
    code = await child.wait()
    feeding.cancel()
    return code


@dataclass
class SSHHost:
    port: int
    host_key: str                 # the OpenSSH public line to pin
    env: dict[str, str]           # what commands run with (the fake docker first on PATH)
    state_file: Path
    home: Path
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @classmethod
    def start(cls, tmp_path: Path, state: dict[str, Any]) -> SSHHost:
        env, state_file = fakedocker.install(tmp_path, state)
        home = Path(env["HOME"])
        key = asyncssh.generate_private_key("ssh-ed25519")
        loop = asyncio.new_event_loop()
        ready: dict[str, Any] = {}

        async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
            run = _run_with_pty if process.get_terminal_type() else _run_with_pipes
            try:
                code = await run(process, env, str(home))
            except Exception as exc:  # noqa: BLE001 (shown to the client, as sshd would)
                process.stderr.write(f"test host: {exc}\n".encode())
                code = 255
            process.exit(code)

        async def serve() -> None:
            ready["server"] = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[key], encoding=None,
                                                    process_factory=handle, allow_scp=False,
                                                    server_factory=_AnyKey)

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
        server = ready["server"]
        port = server.sockets[0].getsockname()[1]
        return cls(port, key.export_public_key("openssh").decode().strip(), env, state_file, home, loop, server,
                   thread)

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def docker_state(self) -> dict[str, Any]:
        return fakedocker.load(self.state_file)

    def environment(self, csdeploy_home: Path, blueprint: Path, env: str = "demo") -> None:
        """An environment ``env`` in ``csdeploy_home`` whose one host of each role and accessory
        of ``blueprint`` is this one (so every session reaches it), its key pinned."""
        from cloudstack_deploy.blueprint import load_blueprint
        from cloudstack_deploy.envctx import remember_blueprint
        from cloudstack_deploy.inventory import Host, Inventory, Network, SSHAccess
        from cloudstack_deploy.state import EnvState

        bp = load_blueprint(str(blueprint))
        state = EnvState(env, root=csdeploy_home)
        key_path, _ = state.ensure_keypair()
        state.write_known_hosts({f"[127.0.0.1]:{self.port}": self.host_key})
        hosts = [Host(name=f"{env}-{name}-1", role=name, index=1, vm_id=name, public_ip="127.0.0.1",
                      ssh_port=self.port, private_ip="10.1.1.2", host_key=self.host_key,
                      proxy=role.proxy is not None) for name, role in bp.roles.items()]
        hosts += [Host(name=f"{env}-{name}-1", role=name, index=1, vm_id=name, public_ip="127.0.0.1",
                       ssh_port=self.port, private_ip="10.1.1.3", host_key=self.host_key, accessories=(name,))
                  for name in bp.accessories]
        state.write_inventory(Inventory(env=env, service=bp.service, network=Network(id="n", name="n"),
                                        ssh=SSHAccess(user="csdeploy", key=key_path,
                                                      known_hosts=state.known_hosts_path), hosts=tuple(hosts)))
        remember_blueprint(state, str(blueprint), ())


class _AnyKey(asyncssh.SSHServer):
    """Any user, any key: the test checks what csdeploy sends, not who it is."""

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return True
