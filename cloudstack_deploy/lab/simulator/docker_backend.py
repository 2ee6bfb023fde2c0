"""The docker backend: every simulated VM is a real Linux host in a container.

A VM is a container of a VM template (lab/templates.py): systemd as PID 1, cloud-init
configuring it from a NoCloud seed at first boot, sshd, and its own dockerd (Docker-in-Docker,
``/var/lib/docker`` on a volume of its own because overlay2 cannot sit on overlay: a docker
volume on this machine's disk, or a directory in memory with CSDEPLOY_LAB_VM_DOCKER=tmpfs (see
docker_resources.py); on a bounded disk of the root disk's size when the VM was deployed with
``rootdisksize``, see docker_disks.py). A
CloudStack network is a docker bridge network with the network's CIDR and gateway, created
lazily when its first VM is deployed, as CloudStack implements networks; a VM's NIC keeps
its CloudStack address (``--ip``). The VMs are reachable from outside only through the
simulator's public network (network.py), so a missing firewall rule really blocks SSH.

Every container, network and volume carries ``csdeploy.lab=1``, a role label, its lab's id
(``csdeploy.lab.home``, from ``$CSDEPLOY_HOME/lab/lab.json``) and the simulator's identity
(``csdeploy.lab.sim``, kept in its state file), so two simulators on one machine never touch
each other's resources, and :func:`cleanup_lab_resources` finds them all. The registry
joined to the networks is this lab's, and the guest subnets come from this lab's block,
so labs of other homes never overlap with it. A simulator without a state file removes everything it made when it stops; one
with a state file leaves its VMs running (a management-server restart does not stop VMs).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from ...state import state_root
from ..config import HOME_LABEL, ensure_lab_config
from ..docker import DockerError, docker, engine_available
from .backend import HostBackend
from .docker_disks import (
    DEVICE_NAMES,
    HOTPLUG_SCRIPT,
    VolumeFiles,
    guest_sh,
    mounted_by,
    plug_script,
    root_disk_id,
    unplug_script,
)
from .docker_resources import (
    LAB_LABEL,
    REGISTRY_ALIAS,
    ROLE_LABEL,
    SIM_LABEL,
    STOP_TIMEOUT,
    VM_FLAGS,
    cleanup_lab_resources,
    container_name,
    docker_volume_name,
    network_name,
    remove_vm_docker_dir,
    top_range,
    vm_docker_on_tmpfs,
    vm_docker_volume_args,
)
from .docker_seed import seed_tar
from .engine import Simulator
from .errors import ApiError, invalid_value
from .guest import SSH_PORT, Guest, GuestBackend

__all__ = ["DockerHost", "DockerGuests", "cleanup_lab_resources"]

log = logging.getLogger("csdeploy.lab.simulator.docker")

Progress = Callable[[str], None]


class DockerGuest(Guest):
    """A running VM as the public network sees it: any port, at the VM's own address."""

    def __init__(self, vm_id: str, address: str | None) -> None:
        super().__init__(vm_id)
        self.address = address

    def target(self, private_port: int) -> tuple[str, int] | None:
        return (self.address, private_port) if self.address else None

    async def start(self) -> None:
        """Nothing to do: the container runs already (the start effect booted it)."""

    async def stop(self) -> None:
        """Nothing to do: live connections end when the VM stops or the rule goes."""


class DockerGuests(GuestBackend):
    """Real hosts serve whatever they run: sshd now, kamal-proxy on 80/443 after a deploy."""

    serves_all_ports = True

    def declared_ports(self, vm: dict[str, Any]) -> frozenset[int]:
        return frozenset({SSH_PORT, 80, 443})

    def create(self, vm: dict[str, Any]) -> Guest:
        nics = vm.get("nic") or []
        return DockerGuest(vm["id"], nics[0]["ipaddress"] if nics else None)


class DockerHost(HostBackend):
    """Effects that create, boot, stop and remove containers, networks and disks."""

    name = "docker"
    has_effects = True
    simulated_boot = False

    def __init__(self, sim: Simulator, *, ephemeral: bool, progress: Progress | None = None) -> None:
        self.sim = sim
        self.ephemeral = ephemeral
        self.progress = progress
        self.lab_id: str = sim.state.setdefault("lab_id", uuid.uuid4().hex[:12])
        self.root = state_root()
        self.lab = ensure_lab_config()
        self.registry = self.lab.registry_container
        self.files = VolumeFiles(self.root, self.lab_id)
        self.drop_sys_resource = True
        self._reserved: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    # ---- lifecycle -----------------------------------------------------------------------
    def labels(self, role: str, **extra: str) -> list[str]:
        out = [f"{LAB_LABEL}=1", f"{HOME_LABEL}={self.lab.id}", f"{SIM_LABEL}={self.lab_id}",
               f"{ROLE_LABEL}={role}"]
        out += [f"{LAB_LABEL}.{k}={v}" for k, v in extra.items()]
        return [arg for label in out for arg in ("--label", label)]

    async def start(self) -> None:
        problem = await engine_available()
        if problem:
            raise DockerError(f"the docker backend needs a Docker engine: {problem}")
        from ..templates import ensure_templates

        vm_docker_on_tmpfs()  # a setting this machine cannot honour is told now, not at a VM's deploy
        await ensure_templates(progress=self.progress)
        # Engines without CAP_SYS_RESOURCE refuse containers that ask for it (no online resize2fs).
        code, _, _ = await docker("run", "--rm", "--cap-add=SYS_RESOURCE", "--network=none",
                                  "--entrypoint", "/bin/true", "csdeploy-lab/debian:bookworm", check=False)
        self.drop_sys_resource = code != 0
        await self._load_reserved_subnets()
        self.sim.save()  # keep lab_id
        for vm in self.sim.col("vms").values():  # e.g. after a reboot of this machine
            if vm.get("state") == "Running" and not vm.get("_removed"):
                self.sim.background_effect("start_vm", {"id": vm["id"]})

    async def close(self) -> None:
        if self.ephemeral:  # nothing could ever come back to these: remove them all
            await cleanup_lab_resources(self.lab_id)

    def guests(self) -> GuestBackend:
        return DockerGuests()

    def check_template(self, template: dict[str, Any]) -> None:
        if not template.get("_image"):
            raise invalid_value(f"Template {template.get('name')} is not available in this lab (no image)")

    def reserved_subnets(self) -> frozenset[str]:
        """Other docker networks' subnets, other labs' blocks, and this cloud's live networks."""
        live = {n.get("cidr") for n in self.sim.col("networks").values() if not n.get("_removed")}
        others = {f"10.1.{n}.0/24" for n in range(1, 251)} - self.lab.guest_cidrs()
        return frozenset(self._reserved | others | {c for c in live if c})

    async def _load_reserved_subnets(self) -> None:
        """Subnets of docker networks that are not ours: docker refuses overlapping pools."""
        _, out, _ = await docker("network", "ls", "-q", check=False)
        ids = out.split()
        if not ids:
            return
        _, out, _ = await docker("network", "inspect", *ids, check=False)
        for net in json.loads(out or "[]"):
            if (net.get("Labels") or {}).get(SIM_LABEL) == self.lab_id:
                continue
            for cfg in (net.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(ValueError, KeyError):
                    subnet = ipaddress.ip_network(cfg["Subnet"], strict=False)
                    for n in range(1, 251):
                        if ipaddress.ip_network(f"10.1.{n}.0/24").overlaps(subnet):
                            self._reserved.add(f"10.1.{n}.0/24")

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # ---- networks ------------------------------------------------------------------------
    async def _ensure_network(self, net: dict[str, Any]) -> str:
        name = network_name(net["id"])
        async with self._lock("net:" + net["id"]):
            code, _, _ = await docker("network", "inspect", name, check=False)
            if code != 0:
                # CloudStack hands out guest addresses from the bottom of the CIDR; containers
                # docker addresses itself (the registry) get the top /28 so the two never clash.
                await docker("network", "create", "--driver", "bridge", "--subnet", net["cidr"],
                             "--gateway", net["gateway"], "--ip-range", top_range(net["cidr"]),
                             *self.labels("network", network=net["id"]), name)
            await self._connect_registry(name)
        return name

    async def _connect_registry(self, network: str) -> None:
        """Let the VMs of ``network`` resolve and reach the lab registry as ``registry.lab``."""
        code, out, _ = await docker("inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                    self.registry, check=False)
        if code != 0 or network in json.loads(out or "{}"):
            return
        code, _, err = await docker("network", "connect", "--alias", REGISTRY_ALIAS, network,
                                    self.registry, check=False)
        if code != 0 and "already exists" not in err:
            log.warning("registry not connected to %s: %s", network, err.strip())

    async def delete_network(self, id: str) -> None:
        if any(n.get("networkid") == id for vm in self.sim.col("vms").values() for n in vm.get("nic", [])):
            return  # VMs remain: the job's finisher refuses, as CloudStack does
        name = network_name(id)
        async with self._lock("net:" + id):
            if (await docker("network", "inspect", name, check=False))[0] != 0:
                return  # never implemented (no VM was deployed in it), or removed already
            await docker("network", "disconnect", "-f", name, self.registry, check=False)
            code, _, err = await docker("network", "rm", name, check=False)
            if code != 0:
                raise ApiError(530, f"Unable to shut down network {id}: {err.strip()}")

    # ---- VMs -----------------------------------------------------------------------------
    def _vm(self, id: str) -> dict[str, Any] | None:
        vm = self.sim.get("vms", id)
        return None if vm is None or vm.get("_removed") else vm

    async def _status(self, id: str) -> str | None:
        """The container's status (running, exited, created...), or None if there is none."""
        code, out, _ = await docker("inspect", "--format", "{{.State.Status}}", container_name(id),
                                    check=False)
        return out.strip() if code == 0 else None

    async def _create(self, vm: dict[str, Any]) -> None:
        if await self._status(vm["id"]) is not None:
            return
        template = self.sim.get("templates", vm["templateid"]) or {}
        image = template.get("_image")
        if not image:
            raise ApiError(530, f"Template {template.get('name')} is not available in this lab (no image)")
        nics = vm.get("nic") or []
        networks = [await self._ensure_network(self.sim.get("networks", n["networkid"]) or {})
                    for n in nics]
        root = self._root_disk(vm)
        if root is not None:  # /var/lib/docker: the bounded root disk, mounted by the guest at boot
            await self.files.ensure_filesystem(root_disk_id(vm["id"]), root)
            docker_dir: list[str] = []
        else:
            dvol = docker_volume_name(vm["id"])
            await docker("volume", "create", *self.labels("vm-docker", vm=vm["id"]),
                         *vm_docker_volume_args(vm["id"]), dvol)
            docker_dir = ["-v", f"{dvol}:/var/lib/docker"]
        # (no --mac-address: docker CLIs newer than the engine refuse it per network)
        net_args = ["--network", networks[0], "--ip", nics[0]["ipaddress"]] if nics else ["--network", "none"]
        caps = ["--cap-drop=SYS_RESOURCE"] if self.drop_sys_resource else []
        await docker("create", "--name", container_name(vm["id"]), "--hostname", vm["name"],
                     *self.labels("vm", vm=vm["id"], **{"vm-name": vm["name"]}), *VM_FLAGS, *caps,
                     *net_args, *docker_dir, image)
        for nic, network in list(zip(nics, networks, strict=True))[1:]:
            await docker("network", "connect", "--ip", nic["ipaddress"], network, container_name(vm["id"]))

    async def _boot(self, vm: dict[str, Any]) -> None:
        """Seed, start, then plug the attached data disks in before the guest mounts them."""
        name = container_name(vm["id"])
        ca = self.root / "lab" / "ca" / "ca.crt"
        await docker("cp", "-", f"{name}:/", input=seed_tar(self.sim, vm, ca))
        for nic in vm.get("nic") or []:  # the registry may have started since the VM was created
            await self._connect_registry(network_name(nic["networkid"]))
        await docker("start", name)
        plugged = {}
        for vol in self._data_volumes(vm["id"]):
            _, minor = await self.files.attach(vol["id"], vol["size"])
            plugged[self._device(vol, vm["id"])] = minor
        root = None
        size = self._root_disk(vm)
        if size is not None:
            _, root = await self.files.attach(root_disk_id(vm["id"]), size)
        await guest_sh(name, plug_script(plugged, list(plugged), root=root))

    @staticmethod
    def _root_disk(vm: dict[str, Any]) -> int | None:
        """The size in bytes of the VM's bounded root disk (deployed with rootdisksize), or None."""
        gb = vm.get("_rootsize")
        return int(gb) * 1024**3 if gb else None

    def _data_volumes(self, vm_id: str, plus: str | None = None, minus: str | None = None
                      ) -> list[dict[str, Any]]:
        """The VM's data volumes per the state (``plus``/``minus``: one being (de)tached now)."""
        return [v for v in self.sim.col("volumes").values()
                if v.get("type") == "DATADISK" and v["id"] != minus
                and (v.get("virtualmachineid") == vm_id or v["id"] == plus)]

    def _device(self, vol: dict[str, Any], vm_id: str) -> str:
        """The guest device name of ``vol`` (kept in the record, so it survives reboots)."""
        if vol.get("_dev"):
            return str(vol["_dev"])
        taken = {v.get("_dev") for v in self._data_volumes(vm_id) if v["id"] != vol["id"]}
        vol["_dev"] = next(d for d in DEVICE_NAMES if d not in taken)
        return str(vol["_dev"])

    async def create_vm(self, id: str, start: bool = True) -> None:
        async with self._lock(id):
            vm = self._vm(id)
            if vm is None:
                return
            await self._create(vm)
            if start:
                await self._boot(vm)

    async def start_vm(self, id: str) -> None:
        async with self._lock(id):
            vm = self._vm(id)
            if vm is None:
                return
            await self._create(vm)
            await self._boot(vm)

    async def _stop(self, id: str, *, release: bool = True) -> None:
        if await self._status(id) == "running":
            await docker("stop", "-t", str(STOP_TIMEOUT), container_name(id), timeout=STOP_TIMEOUT + 60)
        if release:
            for vol in self._data_volumes(id):
                await self.files.release(vol["id"])
            await self.files.release(root_disk_id(id))

    async def stop_vm(self, id: str) -> None:
        async with self._lock(id):
            await self._stop(id)

    async def reboot_vm(self, id: str) -> None:
        async with self._lock(id):
            vm = self._vm(id)
            if vm is None:
                return
            await self._stop(id, release=False)
            await self._create(vm)
            await self._boot(vm)

    async def _expunge(self, id: str) -> None:
        await docker("rm", "-f", "-v", container_name(id), check=False)
        await docker("volume", "rm", "-f", docker_volume_name(id), check=False)
        await remove_vm_docker_dir(id)
        for vol in self._data_volumes(id):
            await self.files.release(vol["id"])
            vol.pop("_dev", None)
        await self.files.delete(root_disk_id(id))

    async def destroy_vm(self, id: str, expunge: bool = False, volumes: list[str] | None = None) -> None:
        async with self._lock(id):
            await self._stop(id)
            if expunge:
                await self._expunge(id)
            for vol_id in volumes or []:
                await self.files.delete(vol_id)

    async def expunge_vm(self, id: str) -> None:
        async with self._lock(id):
            await self._expunge(id)

    # ---- data volumes --------------------------------------------------------------------
    async def create_volume(self, id: str, vm: str | None = None) -> None:
        vol = self.sim.get("volumes", id)
        if vol is None:
            return
        if vol.get("snapshotid"):  # createVolume from a snapshot: its data
            await self.files.restore(id, vol["snapshotid"], vol["size"])
        else:
            self.files.ensure_file(id, vol["size"])
        if vm:
            await self.attach_volume(id, vm)

    async def attach_volume(self, id: str, vm: str) -> None:
        async with self._lock(vm):
            vol = self.sim.get("volumes", id)
            if vol is None or self._vm(vm) is None:
                return
            self.files.ensure_file(id, vol["size"])
            dev = self._device(vol, vm)
            if await self._status(vm) != "running":
                return  # plugged in at the next start
            _, minor = await self.files.attach(id, vol["size"])
            devices = [self._device(v, vm) for v in self._data_volumes(vm, plus=id)]
            await guest_sh(container_name(vm), plug_script({dev: minor}, devices))
            out = await guest_sh(container_name(vm), HOTPLUG_SCRIPT, check=False, timeout=300)
            if out.strip():
                log.info("VM %s: disk hot-plug: %s", vm, out.strip())

    async def detach_volume(self, id: str) -> None:
        vol = self.sim.get("volumes", id)
        vm = (vol or {}).get("virtualmachineid")
        if vol is None or not vm:
            return
        async with self._lock(vm):
            if vol.get("_dev") and await self._status(vm) == "running":
                devices = [v["_dev"] for v in self._data_volumes(vm, minus=id) if v.get("_dev")]
                out = await guest_sh(container_name(vm), unplug_script(vol["_dev"], devices))
                if out.strip():
                    log.warning("VM %s: detaching %s: %s", vm, vol["_dev"], out.strip())
            await self.files.release(id, unplug=lambda devs: self._pull(vm, vol.get("_dev"), devs))
            vol.pop("_dev", None)

    async def _pull(self, vm: str, name: str | None, devs: list[str]) -> None:
        """The disk's loop devices are still mounted after the guest unmounted it: in another
        mount namespace of the VM (a service's private one, a container nested in it). A
        hot-unplug pulls the disk from under every one of them; so does this (a lazy unmount
        there, entered with the VM's pid namespace too: umount reads /proc/self, which the
        VM's /proc has only for its own processes), and says which."""
        _, cid, _ = await docker("inspect", "--format", "{{.Id}}", container_name(vm), check=False)
        cid = cid.strip()
        if not cid:
            return
        for holder in mounted_by(devs, within=cid):
            log.warning("VM %s: /dev/%s still mounted at %s in the namespace of %s (pid %d): unmounted there",
                        vm, name or "?", holder.target, holder.comm, holder.pid)
            proc = await asyncio.create_subprocess_exec("nsenter", "-t", str(holder.pid), "-m", "-p", "-r", "umount", "-l",
                                                        holder.target, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            out, _ = await proc.communicate()
            if proc.returncode:
                log.warning("VM %s: umount -l %s in the namespace of pid %d failed: %s", vm, holder.target,
                            holder.pid, out.decode(errors="replace").strip())

    async def resize_volume(self, id: str, size: int) -> None:
        await self.files.resize(id, size)

    async def delete_volume(self, id: str) -> None:
        await self.files.delete(id)

    # ---- snapshots -----------------------------------------------------------------------
    async def create_snapshot(self, id: str) -> None:
        """Copy the volume's data (its VM is left running: a crash-consistent copy)."""
        snap = self.sim.get("snapshots", id)
        if snap is None:
            return
        vol = self.sim.get("volumes", snap["volumeid"]) or {}
        vm = vol.get("virtualmachineid")
        if vm:
            async with self._lock(vm):  # no detach or stop half-way through the copy
                await self.files.snapshot(snap["volumeid"], id, snap["_size"])
        else:
            await self.files.snapshot(snap["volumeid"], id, snap["_size"])

    async def delete_snapshot(self, id: str) -> None:
        self.files.delete_snapshot(id)
