"""One lab per CSDEPLOY_HOME: what identifies it on this machine, in ``$CSDEPLOY_HOME/lab/lab.json``.

Several labs may run on one machine (a developer's, a test suite's, a second checkout's);
they share the Docker engine, the loopback network and the cached images, and nothing else.
Everything that could collide is this lab's own and written down at its first start:

- ``id``: derived from the home's path; every docker object of the lab carries it as the
  label ``csdeploy.lab.home``, which is how ``lab down`` and the cleanups find their own.
- ``api_port`` / ``registry_port``: the simulator's API and the registry's port on
  127.0.0.1. The default home (``~/.csdeploy``) keeps 8080 and 5000; another home gets
  ``8080+slot`` / ``5000+slot``; ``lab up`` replaces a port something else has taken by a
  free one (and records it), or takes the one given by ``--port`` / ``--registry-port``.
- ``registry_container`` / ``registry_volume``: the registry's names (the default home keeps
  ``csdeploy-lab-registry``). Inside the VMs the registry is always ``registry.lab:5000``.
- ``slot``: 0 for the default home, 1.. for others, claimed machine-wide (see below). It
  picks the lab's public addresses (``127.<200+slot>.0.0/16``) and the guest /24s its networks
  use (``guest_subnets``), so two labs' listeners and docker networks never overlap.

Slots are claimed in a machine-wide directory (``/var/tmp/csdeploy-labs``, or
``$CSDEPLOY_LAB_CLAIMS``): one file per slot naming the home that holds it, created under a
lock. A claim whose home no longer has a matching ``lab.json`` is free again;
``lab down --purge`` releases it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..errors import CsdeployError
from ..state import state_root

DEFAULT_API_PORT = 8080
DEFAULT_REGISTRY_PORT = 5000
MAX_SLOT = 30
DEFAULT_GUEST_SUBNETS = (1, 100)
"""The default home's guest networks: 10.1.1.0/24 .. 10.1.100.0/24."""
GUEST_BLOCK = 5
"""How many guest /24s another home's lab gets (above the default home's)."""
LEGACY_REGISTRY = "csdeploy-lab-registry"
LEGACY_VOLUME = "csdeploy-lab-registry-data"
HOME_LABEL = "csdeploy.lab.home"
"""On every docker object of a lab: the lab's id."""
CONFIG_FILE = "lab.json"
CLAIMS_DIR = "/var/tmp/csdeploy-labs"


class LabConfigError(CsdeployError):
    """The lab's configuration cannot be made (no slot or port left, a port taken)."""


@dataclass(frozen=True)
class LabConfig:
    id: str
    home: str
    slot: int
    api_port: int
    registry_port: int
    registry_container: str
    registry_volume: str
    public_range: str
    guest_subnets: tuple[int, int]
    """N of the guest networks 10.1.N.0/24 this lab's simulator hands out (first, last)."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/client/api"

    def guest_cidrs(self) -> set[str]:
        first, last = self.guest_subnets
        return {f"10.1.{n}.0/24" for n in range(first, last + 1)}

    def to_json(self) -> str:
        data = asdict(self)
        data["guest_subnets"] = list(self.guest_subnets)
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LabConfig:
        data = json.loads(text)
        data["guest_subnets"] = tuple(data["guest_subnets"])
        return cls(**data)


def config_path(root: Path | None = None) -> Path:
    return (root or state_root()) / "lab" / CONFIG_FILE


def claims_dir() -> Path:
    return Path(os.environ.get("CSDEPLOY_LAB_CLAIMS") or CLAIMS_DIR)


def _resolved(root: Path) -> Path:
    return root.expanduser().resolve()


def is_default_home(root: Path | None = None) -> bool:
    """Whether ``root`` (default: the current CSDEPLOY_HOME) is ``~/.csdeploy``."""
    return _resolved(root or state_root()) == _resolved(Path.home() / ".csdeploy")


def lab_id(root: Path | None = None) -> str:
    """The lab's id: a hash of its home's absolute path (stable, 10 hex digits)."""
    return hashlib.sha256(str(_resolved(root or state_root())).encode()).hexdigest()[:10]


def derived(root: Path | None = None, slot: int | None = None) -> LabConfig:
    """The configuration a home's lab has before any port was found taken.

    Without a slot (not claimed yet) the default home's is 0 and another home's is unknown
    (-1): its names and id are right, its ports and ranges are placeholders.
    """
    root = root or state_root()
    default = is_default_home(root)
    ident = lab_id(root)
    if slot is None:
        slot = 0 if default else -1
    known = max(slot, 0)
    if slot == 0:
        guest = DEFAULT_GUEST_SUBNETS
    else:
        first = DEFAULT_GUEST_SUBNETS[1] + GUEST_BLOCK * (known - 1) + 1
        guest = (first, first + GUEST_BLOCK - 1)
    return LabConfig(
        id=ident, home=str(_resolved(root)), slot=slot,
        api_port=DEFAULT_API_PORT + known, registry_port=DEFAULT_REGISTRY_PORT + known,
        registry_container=LEGACY_REGISTRY if default else f"csdeploy-lab-{ident}-registry",
        registry_volume=LEGACY_VOLUME if default else f"csdeploy-lab-{ident}-registry-data",
        public_range=f"127.{200 + known}.0.0/16", guest_subnets=guest,
    )


def load_lab_config(root: Path | None = None) -> LabConfig | None:
    """This home's lab.json, or None when no lab was set up here (or it is unreadable)."""
    try:
        return LabConfig.from_json(config_path(root).read_text())
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None


def current_lab_config(root: Path | None = None) -> LabConfig:
    """lab.json if there is one, else what this home's lab would be named (nothing written)."""
    return load_lab_config(root) or derived(root)


def port_free(port: int) -> bool:
    """Whether nothing listens on (or holds) 127.0.0.1:``port``. Connections of a listener that
    just stopped (TIME_WAIT) do not count: a server binding there (docker-proxy, the
    simulator) sets SO_REUSEADDR too, and a lab restarted right after `lab down` keeps its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _claims_lock() -> Iterator[Path]:
    folder = claims_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o1777)  # every user's labs claim slots here
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _claim_path(folder: Path, slot: int) -> Path:
    return folder / f"slot-{slot}.json"


def _holder(folder: Path, slot: int) -> LabConfig | None:
    """The lab that validly holds ``slot``: its claim names a home whose lab.json agrees."""
    try:
        claim = json.loads(_claim_path(folder, slot).read_text())
    except (FileNotFoundError, ValueError):
        return None
    cfg = load_lab_config(Path(str(claim.get("home", ""))))
    if cfg is None or cfg.id != claim.get("id") or cfg.slot != slot:
        return None
    return cfg


def other_labs() -> list[LabConfig]:
    """The other labs set up on this machine (claimed, with their home's lab.json)."""
    me = lab_id()
    folder = claims_dir()
    if not folder.is_dir():
        return []
    found = []
    for slot in range(0, MAX_SLOT + 1):
        cfg = _holder(folder, slot)
        if cfg is not None and cfg.id != me:
            found.append(cfg)
    return found


def _pick_port(preferred: int, spare: range, avoid: set[int]) -> int:
    """``preferred`` unless another lab records it, else the first free spare port.

    ``preferred`` is not probed: it may be held by this very lab (its registry, its
    simulator); `lab up` replaces it if something else holds it (manage.py).
    """
    if preferred not in avoid:
        return preferred
    for port in spare:
        if port not in avoid and port_free(port):
            return port
    raise LabConfigError(f"no free port near {preferred} on 127.0.0.1",
                         hint="free one, or give one with `csdeploy lab up --port/--registry-port`")


def _spare(default: int) -> range:
    return range(default + MAX_SLOT + 1, default + 1000)


def _write(cfg: LabConfig) -> None:
    path = config_path(Path(cfg.home))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(cfg.to_json())
    os.replace(tmp, path)


def ensure_lab_config() -> LabConfig:
    """This home's lab configuration, made (slot claimed, ports picked) on first use."""
    with _claims_lock() as folder:
        have = load_lab_config()
        if have is not None and have.id == lab_id():
            holder = _holder(folder, have.slot)
            if holder is None:  # e.g. the claims directory was cleared (a reboot of /var/tmp)
                _claim_path(folder, have.slot).write_text(json.dumps({"id": have.id, "home": have.home}))
            if holder is None or holder.id == have.id:
                return have
            raise LabConfigError(
                f"this lab's slot {have.slot} ({have.public_range}) is held by the lab in {holder.home}",
                hint="`csdeploy lab down --purge` one of the two labs, then `csdeploy lab up` again")
        others = [cfg for s in range(MAX_SLOT + 1) if (cfg := _holder(folder, s)) is not None]
        taken = {cfg.slot for cfg in others}
        if is_default_home():
            if 0 in taken:
                holder = next(c for c in others if c.slot == 0)
                raise LabConfigError(f"the machine's default lab (slot 0) is the one in {holder.home}",
                                     hint="set CSDEPLOY_HOME to another directory for a lab of your own")
            slot = 0
        else:
            free = [s for s in range(1, MAX_SLOT + 1) if s not in taken]
            if not free:
                raise LabConfigError(f"all {MAX_SLOT} lab slots of this machine are taken",
                                     hint="`csdeploy lab down --purge` labs you no longer need")
            slot = free[0]
        base = derived(slot=slot)
        avoid_api = {c.api_port for c in others} | {DEFAULT_API_PORT}
        avoid_reg = {c.registry_port for c in others} | {DEFAULT_REGISTRY_PORT}
        if slot == 0:
            avoid_api.discard(DEFAULT_API_PORT)
            avoid_reg.discard(DEFAULT_REGISTRY_PORT)
        cfg = replace(base, api_port=_pick_port(base.api_port, _spare(DEFAULT_API_PORT), avoid_api),
                      registry_port=_pick_port(base.registry_port, _spare(DEFAULT_REGISTRY_PORT), avoid_reg))
        _write(cfg)
        _claim_path(folder, slot).write_text(json.dumps({"id": cfg.id, "home": cfg.home}))
        return cfg


def pick_port(kind: str) -> int:
    """A free port for this lab's ``api`` or ``registry``, avoiding other labs' recorded ones."""
    default = DEFAULT_API_PORT if kind == "api" else DEFAULT_REGISTRY_PORT
    others = other_labs()
    avoid = {c.api_port if kind == "api" else c.registry_port for c in others} | {default}
    return _pick_port(default, _spare(default), avoid)


def update_lab_config(*, api_port: int | None = None, registry_port: int | None = None) -> LabConfig:
    """Record new ports in this home's lab.json (made first if needed)."""
    cfg = ensure_lab_config()
    with _claims_lock():
        cfg = replace(cfg, api_port=api_port or cfg.api_port,
                      registry_port=registry_port or cfg.registry_port)
        _write(cfg)
        return cfg


def release_lab_config() -> None:
    """Forget this home's lab: remove lab.json and give its slot back (``lab down --purge``)."""
    with _claims_lock() as folder:
        cfg = load_lab_config()
        if cfg is None:
            return
        claim = _claim_path(folder, cfg.slot)
        try:
            mine = json.loads(claim.read_text()).get("id") == cfg.id
        except (FileNotFoundError, ValueError):
            mine = False
        if mine:
            claim.unlink(missing_ok=True)
        config_path().unlink(missing_ok=True)
