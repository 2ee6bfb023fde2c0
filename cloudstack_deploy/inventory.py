"""The hand-off from provisioning to rollout: which hosts an environment has and how to reach them.

Provisioning builds an `Inventory` from the cloud (`provision/run.py`); `state.py` is the only
module that turns it into JSON and back (`envs/NAME/inventory.json`, a cache the cloud can
always rebuild); everything downstream (rollout, day-2 commands, the CLI) reads these typed
records and nothing else. Pure data: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The systemd unit, installed by the VM's user data, that mounts the data disks by label; the
#: rollout restarts it once when a disk is not mounted, the lab's simulator runs it on attach.
DISK_UNIT = "csdeploy-disks.service"


@dataclass(frozen=True)
class HostDisk:
    """A data volume as the guest sees it: mounted by filesystem label."""

    name: str          # CloudStack volume name
    label: str         # filesystem label
    mount: str         # mount point in the guest
    size_gb: int


@dataclass(frozen=True)
class Host:
    """One VM: where to reach it over SSH, what it runs, and its pinned host key."""

    name: str                          # the VM name, `<env>-<role>-<n>`
    role: str                          # the role (or, on an accessory's own VM, the accessory)
    index: int
    vm_id: str
    public_ip: str
    ssh_port: int
    private_ip: str
    host_key: str                      # OpenSSH public key line pinned at creation
    offering: str = ""
    accessories: tuple[str, ...] = ()  # accessories running on this host
    proxy: bool = False                # runs kamal-proxy and serves the role over HTTP
    disks: tuple[HostDisk, ...] = ()
    also: tuple[str, ...] = ()         # further app roles placed on this VM (their `run_on`: its role)

    @property
    def app_role(self) -> str | None:
        """The app role whose VM this is, or None on a VM of its own for an accessory."""
        return None if self.role in self.accessories and not self.proxy else self.role

    @property
    def app_roles(self) -> tuple[str, ...]:
        """Every app role this host runs: its own, then those placed on it (`run_on`)."""
        own = self.app_role
        return ((own,) if own else ()) + self.also

    @property
    def ssh_address(self) -> str:
        return f"{self.public_ip}:{self.ssh_port}"


@dataclass(frozen=True)
class SSHAccess:
    user: str
    key: Path            # private key csdeploy logs in with
    known_hosts: Path    # pinned host keys (OpenSSH format)


@dataclass(frozen=True)
class Network:
    id: str | None
    name: str
    cidr: str | None = None


@dataclass(frozen=True)
class LoadBalancer:
    """One public address spreading a role's traffic over its hosts (CloudStack LB rules)."""

    role: str
    public_ip: str
    ports: tuple[int, ...] = (80, 443)
    members: tuple[str, ...] = ()     # host names, as assigned in the cloud


@dataclass(frozen=True)
class Inventory:
    env: str
    service: str
    ssh: SSHAccess
    hosts: tuple[Host, ...]
    network: Network
    endpoint: str = ""
    written: str = ""                  # when this inventory was read from the cloud (UTC)
    expires: str | None = None         # the environment's csdeploy:expires, if any
    template: str = ""
    public_access: str = "static_nat"
    load_balancers: tuple[LoadBalancer, ...] = ()

    # ---- queries every reader needs, defined once ----------------------------------------
    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def role_hosts(self, role: str) -> list[Host]:
        """The hosts running app role ``role`` (on VMs of its own or another role's), in index order."""
        return [h for h in self.hosts if role in h.app_roles]

    def accessory_host(self, accessory: str) -> Host | None:
        return next((h for h in self.hosts if accessory in h.accessories), None)

    @property
    def proxy_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.proxy]

    @property
    def primary(self) -> Host:
        """Where the deploy lock and the deploy history live: the first proxy host, else the first."""
        return next(iter(self.proxy_hosts), self.hosts[0])

    @property
    def roles(self) -> dict[str, list[str]]:
        """Role (or accessory VM group) -> host names, as provisioned (a role placed on
        another's VMs: those VMs)."""
        out: dict[str, list[str]] = {}
        for h in self.hosts:
            for role in (h.role, *h.also):
                out.setdefault(role, []).append(h.name)
        return out

    @property
    def accessories(self) -> dict[str, str]:
        """Accessory -> the name of the host it runs on."""
        return {a: h.name for h in self.hosts for a in h.accessories}

    def load_balancer(self, role: str) -> LoadBalancer | None:
        """The role's load balancer: its own, or that of the role whose VMs it runs on."""
        own = next((lb for lb in self.load_balancers if lb.role == role), None)
        if own is not None:
            return own
        hosts = self.role_hosts(role)
        if hosts and hosts[0].role != role:
            return next((lb for lb in self.load_balancers if lb.role == hosts[0].role), None)
        return None

    def entrypoint(self, role: str) -> str | None:
        """Where a role's users come in: its load balancer's address, else its first host's."""
        lb = self.load_balancer(role)
        if lb is not None:
            return lb.public_ip
        hosts = self.role_hosts(role)
        return hosts[0].public_ip if hosts else None

    @property
    def app_url(self) -> str | None:
        """The first proxy role's entry point as a URL (what `create-env` prints)."""
        web = next(iter(self.proxy_hosts), None)
        return f"http://{self.entrypoint(web.role)}/" if web else None
