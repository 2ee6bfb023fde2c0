"""What runs "inside" a simulated VM, as far as the network can reach it.

The public network (``network.py``) only forwards to a VM; what answers there depends on the
backend. A :class:`GuestBackend` says which private ports a VM serves and creates one
:class:`Guest` per Running VM; a guest maps a private port to a real ``(host, port)`` on this
machine. The ``memory`` backend's guest is an in-process SSH server: it has the VM's host key
and accepts only the VM's keypair, so a deploy tool can really "wait for SSH" and pin host
keys, but it runs no commands (a ``docker`` backend plugs in real hosts the same way).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email
import gzip
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import asyncssh
import yaml

from .closing import bounded
from .engine import Simulator

log = logging.getLogger("csdeploy.lab.simulator.guest")

SSH_PORT = 22
#: Exit status of a command that was found but cannot run (POSIX shells use 126 the same way).
NO_EXEC_STATUS = 126
#: cloud-init ``ssh_keys`` entries that install host keys (dsa is ignored by modern sshd).
_HOSTKEY_ENTRIES = ("ed25519_private", "ecdsa_private", "rsa_private")


class Guest(ABC):
    """One Running VM's services. Created stopped; the network starts and stops it."""

    def __init__(self, vm_id: str) -> None:
        self.vm_id = vm_id

    @abstractmethod
    def target(self, private_port: int) -> tuple[str, int] | None:
        """Where a connection to ``private_port`` of the VM goes now, or None (nothing there)."""

    @abstractmethod
    async def start(self) -> None:
        """Boot: begin serving (called when the VM becomes Running)."""

    @abstractmethod
    async def stop(self) -> None:
        """Power off: stop serving and drop live sessions (called when the VM leaves Running)."""


class GuestBackend(ABC):
    """Makes guests for VMs and says which ports they serve, whether running or not.

    Ports are declared per VM record (not per running guest) so a listener stays open while
    the VM is stopped: a connection then gets closed at once, as a stopped VM behind a
    CloudStack router would not answer, rather than refused as a closed firewall would.
    """

    #: True if a guest may serve any port (a real host): then a forwarded range of at most
    #: ``routes.MAX_RANGE_EXPOSED`` ports is exposed whole; wider ranges expose only
    #: :meth:`declared_ports`, so a 1-65535 rule does not open 65535 sockets.
    serves_all_ports: bool = False

    @abstractmethod
    def declared_ports(self, vm: dict[str, Any]) -> frozenset[int]:
        """The private ports the VM is known to serve."""

    @abstractmethod
    def create(self, vm: dict[str, Any]) -> Guest:
        """A (not yet started) guest for ``vm``."""

    async def close(self) -> None:  # noqa: B027  (optional hook, nothing to do by default)
        """Release backend-wide resources after every guest was stopped."""


# ---- cloud-init user data -------------------------------------------------------------------
def cloud_config(userdata: str | None) -> dict[str, Any] | None:
    """The ``#cloud-config`` document in CloudStack user data (base64), as cloud-init reads it.

    Accepts gzip-compressed data and MIME multipart (``text/cloud-config`` parts), as cloud-init
    does; anything else (a shell script, garbage) has no cloud-config: None.
    """
    if not userdata:
        return None
    try:
        raw = base64.b64decode(userdata, validate=False)
    except (binascii.Error, ValueError):
        return None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return None
    text = raw.decode("utf-8", errors="replace")
    docs: list[str] = []
    if text.lstrip().lower().startswith(("content-type:", "mime-version:")):
        for part in email.message_from_string(text).walk():
            if part.get_content_type() == "text/cloud-config":
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    docs.append(payload.decode("utf-8", errors="replace"))
    elif text.startswith("#cloud-config"):
        docs.append(text)
    for doc in docs:
        try:
            data = yaml.safe_load(doc)
        except yaml.YAMLError as exc:
            log.warning("VM user data: invalid #cloud-config YAML ignored: %s", exc)
            continue
        if isinstance(data, dict):
            return data
    return None


def userdata_host_keys(userdata: str | None, vm_name: str = "?") -> list[asyncssh.SSHKey]:
    """Host keys that cloud-init would install from ``ssh_keys`` (``*_private`` entries)."""
    cfg = cloud_config(userdata)
    ssh_keys = cfg.get("ssh_keys") if cfg else None
    if not isinstance(ssh_keys, dict):
        return []
    keys = []
    for entry in _HOSTKEY_ENTRIES:
        text = ssh_keys.get(entry)
        if not text:
            continue
        try:
            keys.append(asyncssh.import_private_key(str(text)))
        except (asyncssh.KeyImportError, ValueError) as exc:
            log.warning("VM %s: ssh_keys.%s in user data is not a usable private key: %s",
                        vm_name, entry, exc)
    return keys


def keypair_names(vm: dict[str, Any]) -> list[str]:
    """The VM's SSH keypair names (``keypairs`` may be a name, comma list or list)."""
    value = vm.get("keypairs") or vm.get("keypair") or []
    if isinstance(value, str):
        value = value.split(",")
    return [str(v).strip() for v in value if str(v).strip()]


# ---- the memory backend ---------------------------------------------------------------------
class _GuestSSHServer(asyncssh.SSHServer):
    """Public-key auth against the VM's keypair, looked up at login (keypairs can change)."""

    def __init__(self, guest: MemoryGuest) -> None:
        self.guest = guest
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.guest.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.guest.connections.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return key.public_data in self.guest.authorized_keys()


class MemoryGuest(Guest):
    """An SSH server on 127.0.0.1 (ephemeral port) standing in for the VM's sshd."""

    def __init__(self, sim: Simulator, vm_id: str) -> None:
        super().__init__(vm_id)
        self.sim = sim
        self.port: int | None = None
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def vm(self) -> dict[str, Any]:
        return self.sim.get("vms", self.vm_id) or {"id": self.vm_id}

    @property
    def name(self) -> str:
        return str(self.vm.get("name") or self.vm_id)

    def target(self, private_port: int) -> tuple[str, int] | None:
        if private_port == SSH_PORT and self.port is not None:
            return ("127.0.0.1", self.port)
        return None

    def host_keys(self) -> list[asyncssh.SSHKey]:
        """cloud-init's keys from user data if given, else the VM's own (made once, kept)."""
        vm = self.vm
        keys = userdata_host_keys(vm.get("_userdata"), self.name)
        if keys:
            return keys
        stored = vm.get("_hostkeys")
        if isinstance(stored, dict):
            for text in stored.values():
                try:
                    keys.append(asyncssh.import_private_key(text))
                except (asyncssh.KeyImportError, ValueError):
                    log.warning("VM %s: stored host key unreadable; making a new one", self.name)
        if not keys:
            key = asyncssh.generate_private_key("ssh-ed25519")
            record = self.sim.get("vms", self.vm_id)
            if record is not None:
                record["_hostkeys"] = {"ssh-ed25519": key.export_private_key().decode()}
                self.sim.save()
            keys = [key]
        return keys

    def authorized_keys(self) -> set[bytes]:
        """Public key blobs of the VM's keypair(s); empty when it has none: nobody logs in."""
        names = set(keypair_names(self.vm))
        blobs = set()
        for kp in self.sim.col("keypairs").values():
            if kp.get("name") in names and kp.get("_publickey") and not kp.get("_removed"):
                try:
                    blobs.add(asyncssh.import_public_key(kp["_publickey"]).public_data)
                except (asyncssh.KeyImportError, ValueError):
                    log.warning("keypair %s: public key unreadable", kp.get("name"))
        return blobs

    def message(self) -> str:
        return (f"csdeploy lab: VM {self.name} is a memory-backend simulator VM; it answers SSH "
                "but runs no commands (use the docker backend for real hosts)\n")

    def _process(self, process: asyncssh.SSHServerProcess[str]) -> None:
        """Every session (shell, exec, subsystem): explain, then exit 126."""
        process.stderr.write(self.message())
        process.exit(NO_EXEC_STATUS)

    async def start(self) -> None:
        if self._acceptor is not None:
            return
        self._acceptor = await asyncssh.listen(
            host="127.0.0.1", port=0, server_host_keys=self.host_keys(),
            server_factory=lambda: _GuestSSHServer(self), process_factory=self._process,
            allow_scp=False, agent_forwarding=False, x11_forwarding=False,
        )
        self.port = self._acceptor.get_port()
        log.debug("VM %s: memory guest sshd on 127.0.0.1:%s", self.name, self.port)

    async def stop(self) -> None:
        """Stop listening, drop every session, then wait (bounded) for both to end.

        The sessions are dropped before waiting for the listener: since Python 3.12 the
        listener's ``wait_closed()`` waits for its connections, which ``close()`` leaves open.
        """
        acceptor, self._acceptor, self.port = self._acceptor, None, None
        if acceptor is not None:
            acceptor.close()
        conns = list(self.connections)
        self.connections.clear()
        for conn in conns:
            conn.abort()
        if conns:
            await bounded(asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True),
                          f"VM {self.vm_id}: closing {len(conns)} SSH session(s)")
        if acceptor is not None:
            await bounded(acceptor.wait_closed(), f"VM {self.vm_id}: closing its sshd")


class MemoryBackend(GuestBackend):
    """Records-only VMs: each serves SSH (port 22) and nothing else."""

    serves_all_ports = False

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def declared_ports(self, vm: dict[str, Any]) -> frozenset[int]:
        return frozenset({SSH_PORT})

    def create(self, vm: dict[str, Any]) -> Guest:
        return MemoryGuest(self.sim, vm["id"])


def ports_in(ports: Iterable[int], lo: int, hi: int) -> list[int]:
    """Sorted ``ports`` within ``lo..hi`` (a helper for backends and the network)."""
    return sorted(p for p in ports if lo <= p <= hi)
