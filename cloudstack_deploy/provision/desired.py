"""What an environment should look like in the cloud, derived from a blueprint (pure).

Names are deterministic (`<env>-<role>-<n>`, `<vm>-<disk>`, `csdeploy-<env>`) so a run that
was killed half-way can find and adopt what it created before it could tag it; tags are
the primary index, names the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .userdata import disk_label

if TYPE_CHECKING:  # annotations only: `envs` reads tags without loading the blueprint's rules
    from ..blueprint import Blueprint
    from ..blueprint_schema import SnapshotSchedule

TAG_ENV = "csdeploy:env"
TAG_ROLE = "csdeploy:role"
TAG_SERVICE = "csdeploy:service"
TAG_EXPIRES = "csdeploy:expires"
TAG_CREATED = "csdeploy:created"
TAG_VM = "csdeploy:vm"
TAG_KIND = "csdeploy:kind"
TAG_DISK = "csdeploy:disk"     # a volume's or snapshot's disk label (the owner's data disk)
TAG_BY = "csdeploy:by"         # who took a manual snapshot
TAG_LOCK = "csdeploy:lock"
KIND_LB_IP = "lb-ip"       # csdeploy:kind of a role's load-balancer address
KIND_LB_RULE = "lb-rule"

HTTP_PORTS = (80, 443)
SSH_PF_BASE = 2201  # port_forwarding mode: VM n's SSH is published on a port from here up
ANYWHERE = ("0.0.0.0/0",)


def network_name(env: str) -> str:
    return f"csdeploy-{env}"


def keypair_name(env: str) -> str:
    return f"csdeploy-{env}"


def vm_name(env: str, group: str, index: int) -> str:
    return f"{env}-{group}-{index}"


def affinity_group_name(env: str, role: str) -> str:
    """A role's host anti-affinity group: groups take no tags, so it is found by this name
    (and its description, which names the environment)."""
    return f"{env}-{role}"


def affinity_description(env: str) -> str:
    return f"{TAG_ENV}={env}"


ANTI_AFFINITY = "host anti-affinity"


def lb_rule_name(env: str, role: str, port: int) -> str:
    """A load-balancer rule's name: found by it after a run killed before its tags landed."""
    return f"{env}-{role}-{port}"


def format_time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class DiskSpec:
    name: str        # CloudStack volume name, `<vm>-<owner>`
    owner: str       # the role or accessory the disk is for
    size_gb: int
    offering: str
    label: str       # filesystem label the guest mounts by
    mount: str
    #: Recurring snapshots (CloudStack snapshot policies on the volume), at most one per interval.
    snapshots: tuple[SnapshotSchedule, ...] = ()
    #: `recover`: a new volume is made from this snapshot (its id) instead of blank.
    from_snapshot: str | None = None


@dataclass(frozen=True)
class VMSpec:
    name: str
    group: str               # role name, or accessory name for accessories on their own VM
    index: int
    offering: str
    proxy: bool              # serves HTTP through kamal-proxy: 80/443 open
    disks: tuple[DiskSpec, ...] = ()
    accessories: tuple[str, ...] = ()
    balanced: bool = False   # behind its role's load balancer: its own address opens SSH only
    root_disk_gb: int | None = None   # deployVirtualMachine rootdisksize (None: the template's)
    affinity_group: str | None = None  # its role's host anti-affinity group (placement: spread)
    also: tuple[str, ...] = ()  # further roles that run on it (their `run_on` names its role)


@dataclass(frozen=True)
class LBSpec:
    """A role's load balancer: one public address, a rule per port, the role's VMs as members."""

    role: str
    algorithm: str
    members: tuple[str, ...]            # VM names
    ports: tuple[int, ...] = HTTP_PORTS


@dataclass(frozen=True)
class Desired:
    env: str
    service: str
    zone: str
    template: str
    network_offering: str
    public_access: str
    ssh_user: str
    ssh_port: int
    ssh_cidrs: tuple[str, ...]
    vms: tuple[VMSpec, ...]
    expires: datetime | None = None
    load_balancers: tuple[LBSpec, ...] = ()
    #: Host anti-affinity groups, one per role of 2+ VMs spread over hosts (by name).
    affinity_groups: tuple[str, ...] = ()
    network: str = field(init=False)
    keypair: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "network", network_name(self.env))
        object.__setattr__(self, "keypair", keypair_name(self.env))

    def vm(self, name: str) -> VMSpec | None:
        return next((v for v in self.vms if v.name == name), None)

    def lb(self, role: str) -> LBSpec | None:
        return next((lb for lb in self.load_balancers if lb.role == role), None)

    def base_tags(self) -> dict[str, str]:
        tags = {TAG_ENV: self.env, TAG_SERVICE: self.service}
        if self.expires is not None:
            tags[TAG_EXPIRES] = format_time(self.expires)
        return tags


def desired_state(bp: Blueprint, env: str, *, ttl: timedelta | None = None,
                  now: datetime | None = None) -> Desired:
    """The environment a blueprint asks for; ``ttl`` (flag) wins over the blueprint's ``ttl``."""
    now = now or datetime.now(UTC)
    life = ttl if ttl is not None else bp.ttl
    vms: list[VMSpec] = []
    balancers: list[LBSpec] = []
    groups: list[str] = []
    for role in bp.roles.values():
        if role.run_on is not None:  # no VMs of its own: its host role's VMs list it (`also`)
            continue
        also = tuple(r.name for r in bp.roles.values() if r.run_on == role.name)
        group = affinity_group_name(env, role.name) if role.count > 1 and role.placement == "spread" else None
        if group is not None:
            groups.append(group)
        hosted = [a.name for a in bp.accessories.values() if a.role == role.name]
        if role.load_balanced and role.proxy is not None:
            balancers.append(LBSpec(role.name, role.proxy.lb_algorithm,
                                    tuple(vm_name(env, role.name, i) for i in range(1, role.count + 1))))
        for i in range(1, role.count + 1):
            name = vm_name(env, role.name, i)
            disks: list[DiskSpec] = []
            if role.disk is not None:
                disks.append(DiskSpec(f"{name}-{role.name}", role.name, role.disk.size, role.disk.disk_offering,
                                      disk_label(role.name), role.disk.mount, role.disk.snapshots))
            # Accessories placed on a role run on its first VM, with their disks.
            if i == 1:
                for acc_name in hosted:
                    acc = bp.accessories[acc_name]
                    if acc.disk is not None:
                        disks.append(DiskSpec(f"{name}-{acc.name}", acc.name, acc.disk.size,
                                              acc.disk.disk_offering, disk_label(acc.name), acc.disk.mount,
                                              acc.disk.snapshots))
            vms.append(VMSpec(name, role.name, i, role.service_offering, role.proxy is not None,
                              tuple(disks), tuple(hosted) if i == 1 else (), balanced=role.load_balanced,
                              root_disk_gb=role.root_disk_gb, affinity_group=group, also=also))
    for acc in bp.accessories.values():
        if acc.vm is None:
            continue
        name = vm_name(env, acc.name, 1)
        disks = []
        if acc.disk is not None:
            disks.append(DiskSpec(f"{name}-{acc.name}", acc.name, acc.disk.size, acc.disk.disk_offering,
                                  disk_label(acc.name), acc.disk.mount, acc.disk.snapshots))
        vms.append(VMSpec(name, acc.name, 1, acc.vm.service_offering, False, tuple(disks), (acc.name,)))
    return Desired(
        env=env, service=bp.service, zone=bp.cloud.zone, template=bp.cloud.template,
        network_offering=bp.cloud.network_offering, public_access=bp.cloud.public_access,
        ssh_user=bp.cloud.ssh.user, ssh_port=bp.cloud.ssh.port, ssh_cidrs=tuple(bp.cloud.ssh.allow_from),
        vms=tuple(vms), expires=(now + life) if life else None, load_balancers=tuple(balancers),
        affinity_groups=tuple(groups),
    )
