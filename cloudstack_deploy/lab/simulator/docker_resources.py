"""Names and labels of what the docker backend creates, and the cleanup that finds them.

Everything carries ``csdeploy.lab=1``, a role (``vm``, ``network``, ``vm-docker``), the
lab's id (``csdeploy.lab.home``: one lab per CSDEPLOY_HOME, see lab/config.py) and the
simulator's identity (``csdeploy.lab.sim``), so one simulator's cleanup never touches
another's resources, and ``lab down`` finds all of its own lab's from labels alone (no state
file needed), never another lab's. The lab registry belongs to lab/registry.py: it is only
ever disconnected here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
from pathlib import Path

from ...state import state_root
from ..config import HOME_LABEL, LabConfigError, current_lab_config
from ..docker import docker
from .docker_disks import LOOP_MAJOR, detach_loop, lab_loops, owned_files

LAB_LABEL = "csdeploy.lab"
SIM_LABEL = "csdeploy.lab.sim"
ROLE_LABEL = "csdeploy.lab.role"
REGISTRY_ALIAS = "registry.lab"
STOP_TIMEOUT = 30
#: What makes a container boot systemd here without --privileged (see DESIGN.md, "The lab");
#: the device rule lets the backend create loop-device nodes in it later (data volumes).
VM_FLAGS = ("--cap-add=ALL", "--security-opt", "seccomp=unconfined", "--security-opt",
            "apparmor=unconfined", "--security-opt", "systempaths=unconfined", "--cgroupns=host",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "--device-cgroup-rule", f"b {LOOP_MAJOR}:* rmw")


def container_name(vm_id: str) -> str:
    return f"csdeploy-lab-vm-{vm_id}"


def docker_volume_name(vm_id: str) -> str:
    return f"csdeploy-lab-vm-{vm_id}-docker"


VM_DOCKER_ENV = "CSDEPLOY_LAB_VM_DOCKER"
"""``volume`` (the default) or ``tmpfs``: where a VM without a root disk keeps /var/lib/docker."""
TMPFS_ROOT = Path("/dev/shm/csdeploy-lab")
"""``tmpfs``: each such VM's /var/lib/docker is ``TMPFS_ROOT/<vm id>``, in this machine's memory."""


def vm_docker_on_tmpfs() -> bool:
    """Whether new VMs get /var/lib/docker in memory (CSDEPLOY_LAB_VM_DOCKER=tmpfs).

    On a docker volume (the default) every image a VM pulls is unpacked onto this machine's
    disk, through its filesystem's journal, and deleted again when the VM goes: measured here,
    loading the demo's three images into a VM took 10-12 s of CPU on an ext4 volume and 4.2 s
    in memory. ``tmpfs`` costs memory instead (a few hundred MB per VM that pulls images), so it
    is a choice, made by ``scripts/test`` for the lab tier; it needs root, as the files the VM's
    dockerd writes there are root's and only root can remove them when the VM is expunged.
    """
    value = os.environ.get(VM_DOCKER_ENV, "").strip() or "volume"
    if value == "volume":
        return False
    if value != "tmpfs":
        raise LabConfigError(f"{VM_DOCKER_ENV}={value!r}: expected 'volume' or 'tmpfs'")
    if os.geteuid() != 0:
        raise LabConfigError(f"{VM_DOCKER_ENV}=tmpfs needs root: the VMs' Docker files in "
                             f"{TMPFS_ROOT} are root's, and only root can remove them")
    if not TMPFS_ROOT.parent.is_dir():
        raise LabConfigError(f"{VM_DOCKER_ENV}=tmpfs: this machine has no {TMPFS_ROOT.parent}")
    return True


def vm_docker_volume_args(vm_id: str) -> list[str]:
    """``docker volume create`` options for the VM's /var/lib/docker: none for a plain volume;
    a bind of ``TMPFS_ROOT/<vm id>`` (made here) when the VMs keep it in memory. Either way it is
    a labelled volume of the VM, which the cleanups find and remove."""
    if not vm_docker_on_tmpfs():
        return []
    path = TMPFS_ROOT / vm_id
    path.mkdir(parents=True, exist_ok=True)
    return ["--opt", "type=none", "--opt", "o=bind", "--opt", f"device={path}"]


async def remove_vm_docker_dir(vm_id: str) -> None:
    """Delete what a VM kept in memory (TMPFS_ROOT/<vm id>), whatever the setting is now: call it
    once the VM's container (whose mounts use it) is gone."""
    path = TMPFS_ROOT / vm_id
    if path.parent != TMPFS_ROOT or vm_id in ("", ".", ".."):  # a name, never a way out of it
        return
    if path.exists():
        await asyncio.to_thread(shutil.rmtree, path, True)


def network_name(net_id: str) -> str:
    return f"csdeploy-lab-net-{net_id[:12]}"


def top_range(cidr: str) -> str:
    """The last /28 of ``cidr`` (or the CIDR itself when it is that small)."""
    net = ipaddress.ip_network(cidr, strict=False)
    if net.prefixlen >= 28:
        return str(net)
    return str(list(net.subnets(new_prefix=28))[-1])


async def _ls(kind: str, *filters: str) -> list[str]:
    args = [kind, "ls", "-q"] if kind != "container" else ["ps", "-aq"]
    for f in filters:
        args += ["--filter", f"label={f}"]
    _, out, _ = await docker(*args, check=False)
    return out.split()


async def cleanup_lab_resources(lab_id: str | None = None, *, delete_files: bool = True) -> dict[str, int]:
    """Remove the lab's VMs, networks, VM docker volumes, loop devices and volume files.

    ``lab_id`` limits it to one simulator's resources (its labels, its volume files' owner
    marks); None removes all of this CSDEPLOY_HOME's lab (``lab down``), never another
    lab's. ``delete_files=False`` keeps the data volumes' files (only their loop devices are
    released). The registry container is not touched, only disconnected from the networks.
    Returns how many of each were removed.
    """
    lab = current_lab_config()
    scope = [f"{SIM_LABEL}={lab_id}"] if lab_id else [f"{HOME_LABEL}={lab.id}"]
    removed = {"containers": 0, "networks": 0, "volumes": 0, "loops": 0, "files": 0}
    containers = await _ls("container", f"{ROLE_LABEL}=vm", *scope)
    if containers:  # first: their mounts hold the loop devices
        await docker("rm", "-f", "-v", *containers, check=False, timeout=300)
        removed["containers"] = len(containers)
    for net in await _ls("network", f"{ROLE_LABEL}=network", *scope):
        await docker("network", "disconnect", "-f", net, lab.registry_container, check=False)
        code, _, _ = await docker("network", "rm", net, check=False)
        removed["networks"] += code == 0
    vols = await _ls("volume", f"{ROLE_LABEL}=vm-docker", *scope)
    if vols:
        await docker("volume", "rm", "-f", *vols, check=False)
        removed["volumes"] = len(vols)
        for vol in vols:  # a VM that kept /var/lib/docker in memory: that memory too
            if vol.startswith("csdeploy-lab-vm-") and vol.endswith("-docker"):
                await remove_vm_docker_dir(vol[len("csdeploy-lab-vm-"):-len("-docker")])
    root = state_root()
    files = owned_files(root, lab_id)
    for dev in await lab_loops(root, None if lab_id is None else files):
        await detach_loop(dev)
        removed["loops"] += 1
    if delete_files:
        for img in files:
            img.unlink(missing_ok=True)
            img.with_suffix(".owner").unlink(missing_ok=True)
            removed["files"] += 1
    return removed
