"""Names and labels of what the docker backend creates, and the cleanup that finds them.

Everything carries ``csdeploy.lab=1``, a role (``vm``, ``network``, ``vm-docker``), the
lab's id (``csdeploy.lab.home``: one lab per CSDEPLOY_HOME, see lab/config.py) and the
simulator's identity (``csdeploy.lab.sim``), so one simulator's cleanup never touches
another's resources, and ``lab down`` finds all of its own lab's from labels alone (no state
file needed), never another lab's. The lab registry belongs to lab/registry.py: it is only
ever disconnected here.
"""

from __future__ import annotations

import ipaddress

from ...state import state_root
from ..config import HOME_LABEL, current_lab_config
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
