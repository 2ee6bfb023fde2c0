"""Local per-environment state: the SSH key, pinned host keys, an inventory cache, a lock.

The cloud's tags are the source of truth for what exists; this directory only holds what the
cloud cannot give back (the private SSH key) and caches of what it can (known_hosts, rebuilt
from the VMs' user data; the inventory, rebuilt from tags). Deleting it loses nothing but the
key, and ``remove()`` after a teardown makes sure no later run targets dead addresses.

Layout: ``$CSDEPLOY_HOME`` (default ``~/.csdeploy``) / ``envs`` / ``<env>`` / files, all
private to the user (0700 directory, 0600 files) because the key and host list are sensitive.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import getpass
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudstack_deploy.errors import InvalidInput, Locked
from cloudstack_deploy.inventory import Host, HostDisk, Inventory, LoadBalancer, Network, SSHAccess

if TYPE_CHECKING:  # SSH (about 0.3 s of imports) is loaded by what makes or reads keys, not by every command
    import asyncssh

ENV_NAME_MAX = 20
#: The inventory file's format: raised when a change would mislead an older reader.
INVENTORY_FORMAT = 1
_ENV_RE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")





def validate_env_name(name: str) -> str:
    """``name`` if it is a valid environment name, else :class:`InvalidInput`.

    VMs are named ``<env>-<role>-<n>`` and CloudStack (and DNS) allow 63 characters, so the
    env gets at most 20 of them; names start with a letter because host names must not be
    all digits, and the name is also a directory name here, so no '/', '.' or upper case.
    """
    if not isinstance(name, str) or len(name) > ENV_NAME_MAX or not _ENV_RE.fullmatch(name):
        raise InvalidInput(
            f"environment name {name!r} is not valid",
            hint=f"use 1-{ENV_NAME_MAX} lower-case letters, digits and '-', starting with a "
                 "letter and not ending with '-' (e.g. 'demo' or 'shop-staging')")
    return name


def state_root() -> Path:
    """Where csdeploy keeps local state: ``$CSDEPLOY_HOME`` or ``~/.csdeploy``."""
    home = os.environ.get("CSDEPLOY_HOME")
    return Path(home).expanduser() if home else Path.home() / ".csdeploy"


def _private_dir(path: Path, *, tighten: bool = True) -> None:
    """Create ``path`` as a 0700 directory; tighten an existing one that others can read.

    ``mkdir(parents=True, mode=...)`` gives the mode to the last directory only, which is how
    ``$CSDEPLOY_HOME`` and ``envs/`` used to end up 0755.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if tighten and st.st_mode & 0o077 and st.st_uid == os.getuid():
        os.chmod(path, 0o700)


def ensure_home(root: Path | None = None) -> Path:
    """``$CSDEPLOY_HOME`` (or ``root``) as a private directory, and return it.

    It holds private keys and inventories, so it is 0700. An existing directory is
    tightened only if it belongs to the user and is not a shared place (the user's home
    itself, or a sticky directory such as /tmp) that someone pointed CSDEPLOY_HOME at.
    """
    root = root if root is not None else state_root()
    existed = root.is_dir()
    shared = existed and (root.resolve() == Path.home().resolve() or root.stat().st_mode & 0o1000)
    _private_dir(root, tighten=not shared)
    return root


def write_private_file(path: Path, data: str) -> None:
    """Write a file of the state directory: atomically, readable only by the user (0600)."""
    _write_private(path, data)


def env_dir(env: str) -> Path:
    """The state directory of environment ``env`` (not created)."""
    return state_root() / "envs" / validate_env_name(env)


def _write_private(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename), readable only by the user.

    Atomic so that a crash or a concurrent reader never sees half a known_hosts file (which
    would make SSH refuse every host) or half an inventory.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class EnvState:
    """The local state directory of one environment."""

    def __init__(self, env: str, root: Path | None = None) -> None:
        self.env = validate_env_name(env)
        self.root = root if root is not None else state_root()
        self.dir = self.root / "envs" / env
        self.key_path = self.dir / "id_ed25519"
        self.known_hosts_path = self.dir / "known_hosts"
        self.inventory_path = self.dir / "inventory.json"
        self.lock_path = self.dir / "lock"

    def __repr__(self) -> str:
        return f"EnvState({self.env!r}, dir={str(self.dir)!r})"

    def ensure_dir(self) -> Path:
        """Create the directory (0700) if needed, with ``$CSDEPLOY_HOME`` and ``envs/`` private
        too; tighten any of them that is group/world readable."""
        ensure_home(self.root)
        _private_dir(self.root / "envs")
        _private_dir(self.dir)
        return self.dir

    # ---- the environment's SSH key ----------------------------------------------------------
    def ensure_keypair(self, given_key: Path | None = None) -> tuple[Path, str]:
        """The private key path and OpenSSH public key line csdeploy logs in with.

        With ``given_key`` (the blueprint's or the user's own key) that key is used as is;
        otherwise the env's own ed25519 key is made once in the state dir and reused.
        """
        if given_key is not None:
            path = Path(given_key).expanduser()
            return path, _public_line_of(path)
        if not self.key_path.exists():
            self.ensure_dir()
            # the same maker as the VMs' host keys: cryptography's, not asyncssh's 0.2 s of
            # imports before the first API call of a new environment's create-env
            from .provision.hostkeys import generate_host_key

            key = generate_host_key(comment=f"csdeploy-{self.env}")
            # Write a complete file under a temporary name, then hard-link it into place:
            # link() fails if the key exists, so two racing processes never overwrite each
            # other, and a reader never sees a half-written key.
            public = key.public_line
            _write_private(self.key_path.with_name(self.key_path.name + ".pub.new"), public + "\n")
            tmp = self.key_path.with_name(f".{self.key_path.name}.{os.getpid()}")
            _write_private(tmp, key.private_openssh)
            try:
                os.link(tmp, self.key_path)
            except FileExistsError:
                return self.key_path, _public_line_of(self.key_path)
            finally:
                os.unlink(tmp)
            os.replace(self.key_path.with_name(self.key_path.name + ".pub.new"),
                       self.key_path.with_name(self.key_path.name + ".pub"))
            return self.key_path, public
        return self.key_path, _public_line_of(self.key_path)

    def public_key(self) -> str:
        """The public key line of the env's own key; :class:`InvalidInput` if there is none."""
        if not self.key_path.exists():
            raise InvalidInput(f"environment {self.env!r} has no SSH key in {self.dir}",
                             hint=f"run 'csdeploy create-env BLUEPRINT --env {self.env}' to create the "
                                  "environment and its key")
        return _public_line_of(self.key_path)

    # ---- pinned host keys -------------------------------------------------------------------
    def write_known_hosts(self, entries: dict[str, str]) -> None:
        """Replace known_hosts with ``pattern -> public key line`` entries.

        Patterns are what OpenSSH expects: ``127.200.0.5`` for port 22, ``[host]:2201``
        otherwise, so ``ssh -o UserKnownHostsFile=...`` works with the same file.
        """
        lines = []
        for pattern, key in sorted(entries.items()):
            key = key.strip()
            if not pattern or any(c.isspace() for c in pattern) or "\n" in key:
                raise InvalidInput(f"bad known_hosts entry {pattern!r}")
            lines.append(f"{pattern} {key}\n")
        self.ensure_dir()
        _write_private(self.known_hosts_path, "".join(lines))

    def known_hosts(self) -> asyncssh.SSHKnownHosts | None:
        """The pinned host keys as asyncssh wants them, or None if there are none yet."""
        try:
            text = self.known_hosts_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        import asyncssh

        return asyncssh.import_known_hosts(text)

    # ---- inventory cache --------------------------------------------------------------------
    def write_inventory(self, inventory: Inventory) -> None:
        """Cache the inventory (the hand-off to rollout) as JSON, atomically, 0600."""
        self.ensure_dir()
        _write_private(self.inventory_path, json.dumps(inventory_to_dict(inventory), indent=2, sort_keys=True) + "\n")

    def read_inventory(self) -> Inventory | None:
        """The cached inventory, or None if absent or unreadable (it can be rebuilt)."""
        try:
            data = json.loads(self.inventory_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        try:
            return inventory_from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # an older or damaged cache: the caller rebuilds it from the cloud

    def remove(self) -> None:
        """Delete the whole directory (after a teardown: nothing in it is valid any more)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- mutual exclusion -------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, owner: str | None = None) -> Iterator[None]:
        """Hold the environment exclusively, or raise :class:`Locked` at once.

        Two csdeploy runs changing one environment would race to create the same VMs and
        rules; flock is released by the kernel when a process dies, so a crash never leaves
        a stale lock behind. ``owner`` (default: the command line) is recorded for the
        message another process shows.
        """
        self.ensure_dir()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise Locked(
                    f"environment {self.env!r} is being changed by another csdeploy: "
                    f"{_describe_holder(fd)}; wait for it to finish",
                    hint="if no csdeploy is running, the lock is already free: retry") from None
            info = {
                "pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "command": owner if owner is not None else " ".join(sys.argv),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def inventory_to_dict(inv: Inventory) -> dict[str, Any]:
    """The inventory as plain JSON data (the file format, and `create-env --json`'s).

    ``roles`` and ``accessories`` are derived maps written for readers outside csdeploy
    (scripts, CI); reading ignores them.
    """
    return {
        "format": INVENTORY_FORMAT,
        "env": inv.env, "service": inv.service, "endpoint": inv.endpoint, "written": inv.written,
        "expires": inv.expires, "template": inv.template, "public_access": inv.public_access,
        "network": {"id": inv.network.id, "name": inv.network.name, "cidr": inv.network.cidr},
        "ssh": {"user": inv.ssh.user, "key": str(inv.ssh.key), "known_hosts": str(inv.ssh.known_hosts)},
        "hosts": [{
            "name": h.name, "role": h.role, "index": h.index, "vm_id": h.vm_id, "public_ip": h.public_ip,
            "ssh_port": h.ssh_port, "private_ip": h.private_ip, "offering": h.offering,
            "accessories": list(h.accessories), "proxy": h.proxy, "also": list(h.also), "host_key": h.host_key,
            "disks": [{"name": d.name, "label": d.label, "mount": d.mount, "size_gb": d.size_gb} for d in h.disks],
        } for h in inv.hosts],
        "load_balancers": [{"role": lb.role, "public_ip": lb.public_ip, "ports": list(lb.ports),
                            "members": list(lb.members)} for lb in inv.load_balancers],
        "roles": inv.roles, "accessories": inv.accessories,
    }


def inventory_from_dict(data: dict[str, Any]) -> Inventory:
    """The inverse of :func:`inventory_to_dict`; KeyError/TypeError/ValueError when malformed,
    or written by a newer csdeploy (a format this one does not know: rebuilt from the cloud).
    Files without ``format`` were written before it existed (format 1, read as is)."""
    if int(data.get("format", 1)) > INVENTORY_FORMAT:
        raise ValueError(f"inventory format {data['format']} is newer than this csdeploy's ({INVENTORY_FORMAT})")
    net, ssh = data["network"], data["ssh"]
    return Inventory(
        env=str(data["env"]), service=str(data["service"]), endpoint=str(data.get("endpoint") or ""),
        written=str(data.get("written") or ""), expires=data.get("expires"),
        template=str(data.get("template") or ""), public_access=str(data.get("public_access") or "static_nat"),
        network=Network(id=net.get("id"), name=str(net["name"]), cidr=net.get("cidr")),
        ssh=SSHAccess(user=str(ssh["user"]), key=Path(ssh["key"]), known_hosts=Path(ssh["known_hosts"])),
        hosts=tuple(Host(
            name=str(h["name"]), role=str(h["role"]), index=int(h["index"]), vm_id=str(h["vm_id"]),
            public_ip=str(h["public_ip"]), ssh_port=int(h["ssh_port"]), private_ip=str(h["private_ip"]),
            host_key=str(h["host_key"]), offering=str(h.get("offering") or ""),
            accessories=tuple(str(a) for a in h.get("accessories", ())), proxy=bool(h.get("proxy")),
            also=tuple(str(r) for r in h.get("also", ())),
            disks=tuple(HostDisk(name=str(d["name"]), label=str(d["label"]), mount=str(d["mount"]),
                                 size_gb=int(d["size_gb"])) for d in h.get("disks", ())),
        ) for h in data["hosts"]),
        load_balancers=tuple(LoadBalancer(role=str(lb["role"]), public_ip=str(lb["public_ip"]),
                                          ports=tuple(int(x) for x in lb.get("ports", (80, 443))),
                                          members=tuple(str(m) for m in lb.get("members", ())))
                             for lb in data.get("load_balancers", ())),
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _describe_holder(fd: int) -> str:
    """'pid 1234 on host x since ... (csdeploy create-env ...)' from the lock file, as best it can."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "holder unknown"
    text = f"pid {info.get('pid')} on host {info.get('host', '?')}"
    if info.get("user"):
        text += f" (user {info['user']})"
    text += f" since {info.get('since', '?')}"
    if info.get("command"):
        text += f", running '{info['command']}'"
    return text


def _public_line_of(path: Path) -> str:
    """The public key line for private key ``path``: derived from it, else from ``.pub``.

    Deriving is preferred because a stale ``.pub`` beside a replaced key would register the
    wrong key with CloudStack; a ``.pub`` holding the same key gives the line (its comment
    kept), and an encrypted key falls back to its ``.pub`` file.
    """
    pub_path = path.with_name(path.name + ".pub")
    try:
        from .provision.hostkeys import public_line_of_private

        derived = public_line_of_private(path.read_bytes())
    except FileNotFoundError:
        raise InvalidInput(f"SSH key {path} does not exist",
                         hint="give the path of an existing private key") from None
    except (ValueError, OSError) as exc:
        derived, error = None, exc
    try:  # a .pub that cannot be read is no .pub: the private key decides
        lines = pub_path.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    pub = lines[0].strip() if lines else ""
    if derived is None:
        if pub:
            return pub
        raise InvalidInput(f"SSH key {path} cannot be read: {error}",
                         hint="csdeploy needs an unencrypted OpenSSH or PEM private key "
                              "(or a .pub file beside it)") from None
    return pub if pub.split()[:2] == derived.split()[:2] else derived

