"""A lab VM's bounded root disk (rootdisksize), without Docker: its file and what the guest runs.

The docker backend gives a VM deployed with ``rootdisksize`` a /var/lib/docker of that size
(cloudstack_deploy/lab/simulator/docker_disks.py); the VM itself is checked in
tests/lab/test_docker_backend.py. Here: the filesystem file is made on this machine as a real
ext4 of exactly that size, sparse, owned by its lab (so ``lab down`` finds and removes it), made
once; and the guest's plug script mounts it where dockerd writes, without ever listing it among
the data disks that csdeploy's disk script formats.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from cloudstack_deploy.lab.simulator.docker_disks import (
    DISKS_ENV,
    VolumeFiles,
    owned_files,
    plug_script,
    root_disk_id,
)

GB = 1024**3

needs_mkfs = pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("dumpe2fs") is None,
                                reason="e2fsprogs (mkfs.ext4, dumpe2fs) is not installed")


def superblock(image: Path) -> dict[str, str]:
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


@needs_mkfs
def test_a_root_disk_is_a_sparse_ext4_file_of_its_size_owned_by_its_lab(tmp_path: Path) -> None:
    files = VolumeFiles(tmp_path, "lab-a")
    image = asyncio.run(files.ensure_filesystem(root_disk_id("vm-1"), 3 * GB))
    assert image.stat().st_size == 3 * GB
    assert image.stat().st_blocks * 512 < 200 * 1024**2          # sparse: this machine's disk is not taken
    sb = superblock(image)
    assert sb["Filesystem volume name"] == "csdeploy-root"
    assert int(sb["Block count"]) * int(sb["Block size"]) == 3 * GB
    assert sb["Reserved block count"] == "0"                     # full means full, for root too
    assert owned_files(tmp_path, "lab-a") == [image] and owned_files(tmp_path, "lab-b") == []
    assert [p.name for p in image.parent.iterdir() if p.name.endswith(".part")] == []


@needs_mkfs
def test_a_root_disk_is_made_once_its_data_kept_across_boots(tmp_path: Path) -> None:
    files = VolumeFiles(tmp_path, "lab-a")
    image = asyncio.run(files.ensure_filesystem(root_disk_id("vm-1"), GB))
    subprocess.run(["debugfs", "-w", "-R", "mkdir kept", str(image)], capture_output=True, check=True)
    again = asyncio.run(files.ensure_filesystem(root_disk_id("vm-1"), GB))
    listing = subprocess.run(["debugfs", "-R", "ls", str(again)], capture_output=True, text=True, check=True).stdout
    assert again == image and "kept" in listing


def test_the_guest_mounts_the_root_disk_where_docker_writes_and_never_lists_it_as_data() -> None:
    script = plug_script({"vdb": 5}, ["vdb"], root=9)
    assert "mknod -m 0660 /dev/vda b 7 9" in script
    assert "mount -o discard /dev/vda /var/lib/docker" in script
    # mounted before the marker the guest's dockerd waits for (csdeploy-lab-devices.service)
    assert script.index("/var/lib/docker") < script.index("devices-ready")
    env = script.split(f"cat >{DISKS_ENV} <<'EOF'\n", 1)[1].split("EOF", 1)[0]
    assert 'CSDEPLOY_DISKS_ONLY="/dev/vdb"' in env and "vda" not in env
    assert "vda" not in plug_script({"vdb": 5}, ["vdb"])        # a VM without one: nothing
