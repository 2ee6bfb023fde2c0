"""Data volumes of the docker backend: sparse files, loop devices, device nodes in the guest.

A CloudStack data volume must be a real block device the guest formats, mounts by label and
keeps across reboots and re-attachment. Here a volume is a sparse file
(``$CSDEPLOY_HOME/lab/volumes/<volumeid>.img``, its CloudStack size); while it is attached to a
*running* VM it is a loop device on this machine, and the VM container gets a device node for
it (``/dev/vdb``, ``/dev/vdc``...; the container is created with ``--device-cgroup-rule
'b 7:* rmw'`` so the node may be made later). Loop devices are held only while a VM runs with
the volume: stop, detach, expunge and ``lab down`` release them.

A VM deployed with a root disk size (deployVirtualMachine ``rootdisksize``) gets its
``/var/lib/docker`` on a disk of that size: an ext4 filesystem in a sparse file
(``root-<vmid>.img`` beside the volumes, owned like them), plugged in as ``/dev/vda`` (a real
VM's root disk) and mounted before the guest's dockerd starts. What a deploy writes there
(image pulls, container layers and logs, kamal-proxy's state) then fills a filesystem of the
size the blueprint asked for, never this machine's disk; its loop device and file go with the
VM (expunge, ``lab down``), as a data volume's do. A VM without one keeps the unbounded docker
volume (the template's nominal 2 GB would not hold the lab's images).

A snapshot is a sparse copy of the volume's file (``snapshot-<snapshotid>.img`` beside the
volumes, owned like them), taken after a ``sync`` so what the guest wrote is in it (crash
consistent, as a snapshot of a running KVM guest is); a volume created from a snapshot starts
as a copy of that file. A ROOT volume has no file here (it is the container's filesystem): its
snapshots are empty disks of its size.

Two stand-ins for what a hypervisor and udev would do, both documented in the templates:

- hot-plug: after plugging a disk into a running VM, ``systemctl restart
  csdeploy-disks.service`` runs in the guest if that unit exists (udev's "add" event would
  trigger the same handling on a real VM);
- enumeration: the kernel reports loop devices as type ``loop``, not ``disk``, and the guest
  sees the host's /sys; so the guest's ``/etc/csdeploy-lab/disks.env`` lists exactly the VM's
  data disk nodes (``CSDEPLOY_DISKS_ONLY``), which the template's drop-in hands to the unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import CsdeployError
from ...inventory import DISK_UNIT
from ..docker import docker

#: Device names the guest sees, in attach order (vda is the root disk of a real VM).
DEVICE_NAMES = tuple(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz")
#: The bounded root disk's device in the guest, and where it is mounted there.
ROOT_DEVICE = "vda"
ROOT_MOUNT = "/var/lib/docker"
LOOP_MAJOR = 7
DISKS_ENV = "/etc/csdeploy-lab/disks.env"
READY_MARKER = "/run/csdeploy-lab/devices-ready"
_LOOP_LINE = re.compile(r"^(/dev/loop\d+):")
log = logging.getLogger(__name__)


class DiskError(CsdeployError):
    """A data volume could not be set up on this machine (loop device, file)."""


def volumes_dir(root: Path) -> Path:
    """Where the volume files live under the csdeploy state root."""
    return root / "lab" / "volumes"


async def _run(*argv: str, check: bool = True) -> tuple[int, str]:
    if shutil.which(argv[0]) is None:
        raise DiskError(f"{argv[0]} is not installed; the docker backend needs it for data volumes",
                        hint="apt-get install -y util-linux")
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()
    if check and proc.returncode != 0:
        raise DiskError(f"{' '.join(argv)} failed: {text or f'exit {proc.returncode}'}",
                        hint="data volumes need root and loop devices (modprobe loop)")
    return proc.returncode or 0, text


class VolumeFiles:
    """The host side: one sparse file per volume, attached to a loop device on demand.

    Beside each ``<id>.img`` an ``<id>.owner`` file names the simulator (lab id) it belongs
    to, so one lab's cleanup finds its loop devices and files without its state file.
    """

    def __init__(self, root: Path, lab_id: str) -> None:
        self.dir = volumes_dir(root)
        self.lab_id = lab_id
        #: losetup --find and -d race with each other across concurrent effects.
        self._lock = asyncio.Lock()

    def path(self, volume_id: str) -> Path:
        return self.dir / f"{volume_id}.img"

    async def ensure_filesystem(self, volume_id: str, size: int) -> Path:
        """The volume's file holding an ext4 filesystem of ``size`` bytes, made empty if
        missing: formatted aside and renamed, so a crash half-way leaves no unformatted disk."""
        path = self.path(volume_id)
        if path.exists():
            return path
        self.dir.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        part.unlink(missing_ok=True)
        part.touch()
        os.truncate(part, size)
        try:
            await _run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", "csdeploy-root", "-E",
                       "lazy_itable_init=1,lazy_journal_init=1,nodiscard", str(part))
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        path.with_suffix(".owner").write_text(self.lab_id + "\n")
        os.replace(part, path)
        return path

    def ensure_file(self, volume_id: str, size: int) -> Path:
        """The volume's file, created sparse at ``size`` bytes if missing (never shrunk here)."""
        path = self.path(volume_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.with_suffix(".owner").write_text(self.lab_id + "\n")
            with open(path, "wb") as fh:
                fh.truncate(size)
        return path

    async def loops(self, volume_id: str) -> list[str]:
        """Loop devices currently backed by the volume's file."""
        path = self.path(volume_id)
        if not path.exists():
            return []
        _, out = await _run("losetup", "-j", str(path))
        return [m.group(1) for line in out.splitlines() if (m := _LOOP_LINE.match(line))]

    async def attach(self, volume_id: str, size: int) -> tuple[str, int]:
        """A loop device for the volume (reused if one exists): (device, minor number)."""
        async with self._lock:
            path = self.ensure_file(volume_id, size)
            found = await self.loops(volume_id)
            if found:
                dev = found[0]
            else:
                _, dev = await _run("losetup", "--find", "--show", str(path))
            return dev, os.minor(os.stat(dev).st_rdev)

    async def release(self, volume_id: str, *, settle: float = 20.0,
                      unplug: Callable[[list[str]], Awaitable[None]] | None = None) -> None:
        """Detach every loop device of the volume, and wait (up to ``settle`` seconds) until
        the kernel has let them go: a device still open for a moment (udev's probe of the
        change, a lazily unmounted filesystem flushing) is only marked autoclear by
        ``losetup -d``, so detachVolume would otherwise return while the disk is still
        plugged on this machine. ``unplug``: called once when the devices are still busy after
        a few seconds (the VM's own mounts of them, as a hot-unplug would pull the disk from
        under them). Past ``settle`` the autoclear frees them when their last user goes (logged,
        with the namespaces that still mount them)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + settle
            pull_at = loop.time() + min(3.0, settle / 2)
            while devs := await self.loops(volume_id):
                for dev in devs:
                    await detach_loop(dev)
                if not await self.loops(volume_id):
                    return
                if unplug is not None and loop.time() >= pull_at:
                    await unplug(devs)
                    unplug = None
                    continue
                if loop.time() >= deadline:
                    log.warning("volume %s: loop device(s) %s still busy after %.0fs; freed by "
                                "autoclear when their last user goes; mounted by: %s; in use by: %s; "
                                "mount namespaces without a process: %s",
                                volume_id, " ".join(devs), settle,
                                "; ".join(map(str, mounted_by(devs))) or "no process",
                                "; ".join(using(devs)) or "no process",
                                "; ".join(unowned_mount_namespaces()) or "none")
                    return
                await asyncio.sleep(0.1)

    async def resize(self, volume_id: str, size: int) -> None:
        """Grow (or shrink) the file to ``size``; a live loop device learns the new capacity."""
        path = self.ensure_file(volume_id, size)
        os.truncate(path, size)
        for dev in await self.loops(volume_id):
            await _run("losetup", "-c", dev)

    # ---- snapshots ------------------------------------------------------------------------
    def has_file(self, volume_id: str) -> bool:
        return self.path(volume_id).exists()

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.dir / f"snapshot-{snapshot_id}.img"

    async def _copy(self, src: Path, dst: Path, size: int) -> None:
        """``dst``: a sparse copy of ``src`` (an empty disk of ``size`` when there is none), at
        least ``size`` bytes, owned by this lab; written aside and renamed (a re-run after a
        crash starts over, an existing ``dst`` is kept: effects are idempotent)."""
        started = self._start_copy(src, dst)
        if started is None:
            return
        part, have_src = started
        if have_src:
            await _run("cp", "--sparse=always", "--reflink=auto", str(src), str(part))
        self._finish_copy(part, dst, size)

    def _start_copy(self, src: Path, dst: Path) -> tuple[Path, bool] | None:
        if dst.exists():
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(dst.name + ".part")
        part.unlink(missing_ok=True)
        return part, src.exists()

    def _finish_copy(self, part: Path, dst: Path, size: int) -> None:
        if not part.exists():
            part.touch()
        if part.stat().st_size < size:
            os.truncate(part, size)
        dst.with_suffix(".owner").write_text(self.lab_id + "\n")
        os.replace(part, dst)

    async def snapshot(self, volume_id: str, snapshot_id: str, size: int) -> Path:
        """Copy the volume's data into the snapshot's file, after flushing every filesystem
        (the guest's, on the loop device, and this machine's page cache of the file)."""
        if self.has_file(volume_id):
            await _run("sync")
        await self._copy(self.path(volume_id), self.snapshot_path(snapshot_id), size)
        return self.snapshot_path(snapshot_id)

    async def restore(self, volume_id: str, snapshot_id: str, size: int) -> Path:
        """A new volume's file from a snapshot's (grown to ``size``)."""
        await self._copy(self.snapshot_path(snapshot_id), self.path(volume_id), size)
        return self.path(volume_id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.snapshot_path(snapshot_id).unlink(missing_ok=True)
        self.snapshot_path(snapshot_id).with_suffix(".owner").unlink(missing_ok=True)

    async def delete(self, volume_id: str) -> None:
        await self.release(volume_id)
        self.path(volume_id).unlink(missing_ok=True)
        self.path(volume_id).with_suffix(".owner").unlink(missing_ok=True)


def root_disk_id(vm_id: str) -> str:
    """The file name (without ``.img``) of VM ``vm_id``'s bounded root disk."""
    return f"root-{vm_id}"


def owned_files(root: Path, lab_id: str | None) -> list[Path]:
    """Volume files of lab ``lab_id`` (every lab's for None)."""
    vdir = volumes_dir(root)
    if not vdir.is_dir():
        return []
    found = []
    for img in sorted(vdir.glob("*.img")):
        owner = img.with_suffix(".owner")
        mine = owner.exists() and owner.read_text().strip() == lab_id
        if lab_id is None or mine:
            found.append(img)
    return found


@dataclass(frozen=True)
class Holder:
    """A mount namespace on this machine that mounts a loop device: seen through one of its
    processes (``pid``, ``comm``), at ``target`` inside that namespace."""

    pid: int
    comm: str
    target: str

    def __str__(self) -> str:
        return f"{self.pid} {self.comm} {self.target}"


def mounted_by(devs: list[str], proc: Path = Path("/proc"), *, within: str | None = None) -> list[Holder]:
    """Mount namespaces on this machine that still mount one of ``devs`` (by device number, as
    /proc/PID/mountinfo lists it), one process each; ``within``: only processes whose cgroup
    path names this (a VM container's id: its processes and those of containers nested in it)."""
    numbers = set()
    for dev in devs:
        try:
            rdev = os.stat(dev).st_rdev
        except OSError:
            continue
        numbers.add(f"{os.major(rdev)}:{os.minor(rdev)}")
    found, seen = [], set()
    for info in proc.glob("[0-9]*/mountinfo"):
        try:
            ns = os.readlink(info.parent / "ns" / "mnt")
            if ns in seen:
                continue
            if within is not None and within not in (info.parent / "cgroup").read_text():
                continue
            lines = info.read_text().splitlines()
            comm = (info.parent / "comm").read_text().strip()
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 4 and fields[2] in numbers:
                seen.add(ns)
                found.append(Holder(int(info.parent.name), comm, fields[4]))
                break
    return found


async def detach_loop(dev: str) -> None:
    """``losetup -d``: frees the device now, or when the last mount of it goes (autoclear)."""
    await _run("losetup", "-d", dev, check=False)


async def lab_loops(root: Path, files: list[Path] | None = None) -> list[str]:
    """Loop devices backed by ``files`` (default: any file in the lab's volume directory,
    including files deleted while still attached)."""
    if shutil.which("losetup") is None:
        return []
    vdir = str(volumes_dir(root).resolve()) + os.sep
    wanted = {str(f.resolve()) for f in files} if files is not None else None
    _, out = await _run("losetup", "-l", "-n", "-O", "NAME,BACK-FILE", check=False)
    found = []
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        back = parts[1].strip().removesuffix(" (deleted)")
        if (back in wanted) if wanted is not None else back.startswith(vdir):
            found.append(parts[0])
    return found


# ---- the guest side -------------------------------------------------------------------------
def _env_file(devices: list[str]) -> str:
    listed = " ".join(f"/dev/{d}" for d in sorted(devices)) or "/dev/null"
    return ("# csdeploy lab: the data disks of this VM (written by the simulator at each change)\n"
            f'CSDEPLOY_DISKS_ONLY="{listed}"\n')


def plug_script(plugged: dict[str, int], all_devices: list[str], *, root: int | None = None) -> str:
    """Shell for the guest: make nodes ``{name: loop minor}``, list the disks, mark ready.

    ``root``: the loop minor of the VM's bounded root disk, plugged in as ``/dev/vda`` and
    mounted at ``/var/lib/docker`` (before the marker: the guest's dockerd waits for it). It is
    never listed among the data disks, so csdeploy's disk script leaves it alone."""
    lines = ["set -e", "mkdir -p /etc/csdeploy-lab /run/csdeploy-lab"]
    nodes = dict(plugged) | ({ROOT_DEVICE: root} if root is not None else {})
    for name, minor in sorted(nodes.items()):
        lines.append(f"rm -f /dev/{name}; mknod -m 0660 /dev/{name} b {LOOP_MAJOR} {minor}; "
                     f"chgrp disk /dev/{name} 2>/dev/null || true")
    if root is not None:
        lines.append(f"mkdir -p {ROOT_MOUNT}; mountpoint -q {ROOT_MOUNT} || "
                     f"mount -o discard /dev/{ROOT_DEVICE} {ROOT_MOUNT}")
    lines.append(f"cat >{DISKS_ENV} <<'EOF'\n{_env_file(all_devices)}EOF")
    lines.append(f"touch {READY_MARKER}")
    return "\n".join(lines) + "\n"


def unplug_script(name: str, remaining: list[str]) -> str:
    """Shell for the guest: unmount what came from ``/dev/NAME`` (as a hot-unplug would leave
    it), remove the node, list the remaining disks."""
    return "\n".join([
        f"for t in $(findmnt -rno TARGET -S /dev/{name} | sort -r); do "
        'umount "$t" 2>/dev/null && continue; '
        # busy: say who holds it (the simulator logs it), then detach it lazily
        'echo "lazy unmount of $t, held by:"; '
        'for p in /proc/[0-9]*; do '
        'if ls -l "$p/cwd" "$p/root" "$p/fd" 2>/dev/null | grep -q -- "-> $t"; then '
        'echo "  ${p#/proc/} $(cat "$p/comm" 2>/dev/null) $(tr "\\0" " " <"$p/cmdline" 2>/dev/null | cut -c1-120)"; fi; done; '
        'umount -l "$t"; done',
        f"rm -f /dev/{name}",
        "mkdir -p /etc/csdeploy-lab",
        f"cat >{DISKS_ENV} <<'EOF'\n{_env_file(remaining)}EOF",
    ]) + "\n"


HOTPLUG_SCRIPT = (f"if systemctl cat {DISK_UNIT} >/dev/null 2>&1; then "
                  f"systemctl restart {DISK_UNIT} || journalctl -u {DISK_UNIT} -n 5 --no-pager; fi\n")


async def guest_sh(container: str, script: str, *, check: bool = True, timeout: float = 120) -> str:
    """Run ``script`` with sh in the VM container (as root, outside any login)."""
    _, out, err = await docker("exec", "-i", container, "sh", "-s", input=script.encode(),
                               check=check, timeout=timeout)
    return out + err


def using(devs: list[str], proc: Path = Path("/proc")) -> list[str]:
    """Processes on this machine that keep one of ``devs`` busy without a mount of it: the
    device open, or a working directory, root, executable, open file or memory-mapped file on a
    filesystem of it (one that was lazily unmounted lives on while they do). ``PID COMM what``
    each."""
    numbers = set()
    for dev in devs:
        with contextlib.suppress(OSError):
            numbers.add(os.stat(dev).st_rdev)
    return users_of(numbers, proc)


def users_of(numbers: set[int], proc: Path = Path("/proc")) -> list[str]:
    """``using`` by device numbers (``st_rdev`` of the device, ``st_dev`` of a file on it)."""
    found = []
    for pid_dir in proc.glob("[0-9]*"):
        uses = []
        try:
            links = [("cwd", pid_dir / "cwd"), ("root", pid_dir / "root"), ("exe", pid_dir / "exe"),
                     *((f"fd {fd.name}", fd) for fd in (pid_dir / "fd").iterdir())]
        except OSError:
            continue
        for what, link in links:
            try:
                st = os.stat(link)
            except OSError:
                continue
            if st.st_dev in numbers or (st.st_rdev and st.st_rdev in numbers):
                uses.append(what)
        mapped = _mapped_from(pid_dir / "maps", numbers)
        if mapped:
            uses.append(f"map {mapped}")
        if uses:
            try:
                comm = (pid_dir / "comm").read_text().strip()
            except OSError:
                comm = "?"
            found.append(f"{pid_dir.name} {comm} {', '.join(uses)}")
    return found


def _mapped_from(maps: Path, numbers: set[int]) -> str | None:
    """The first file of ``maps`` (``/proc/PID/maps``) that lies on one of the devices
    ``numbers``: a mapping keeps its file, and so a lazily unmounted filesystem, alive after the
    descriptor it was made from is closed. Its device is the line's 4th field, ``MAJOR:MINOR``
    in hex."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(None, 5)
        if len(fields) < 6 or fields[4] == "0":  # anonymous memory
            continue
        major, _, minor = fields[3].partition(":")
        try:
            number = os.makedev(int(major, 16), int(minor, 16))
        except ValueError:
            continue
        if number in numbers:
            return fields[5]
    return None


def unowned_mount_namespaces(proc: Path = Path("/proc")) -> list[str]:
    """Mount namespaces that no process is in, kept alive by a descriptor (``/proc/PID/ns/mnt``
    held open) or a bind mount of one (``nsfs``): a mount in them holds its filesystem, and no
    scan of processes' mounts sees it. ``mnt:[INODE] by WHAT`` each."""
    lived_in: set[str] = set()
    holders: dict[str, str] = {}
    for pid_dir in proc.glob("[0-9]*"):
        with contextlib.suppress(OSError):
            lived_in.add(os.readlink(pid_dir / "ns" / "mnt"))
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            fds = []
        for fd in fds:
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("mnt:["):
                    holders.setdefault(target, f"fd {fd.name} of {pid_dir.name}")
        try:
            mounts = (pid_dir / "mountinfo").read_text().splitlines()
        except OSError:
            mounts = []
        for line in mounts:
            before, _, after = line.partition(" - ")
            fields = before.split()
            if after.startswith("nsfs ") and len(fields) > 4 and fields[3].startswith("mnt:["):
                holders.setdefault(fields[3], f"a mount at {fields[4]} seen by {pid_dir.name}")
    return [f"{ns} by {what}" for ns, what in sorted(holders.items()) if ns not in lived_in]
