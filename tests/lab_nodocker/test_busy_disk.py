"""What keeps a detached lab disk's loop device busy, named (cloudstack_deploy/lab/simulator/docker_disks.py).

When a detach leaves a loop device busy past its settle time, the simulator's warning names the
namespaces that still mount it and the processes that use it without a mount: the device open,
or a working directory, open file or memory-mapped file on its filesystem (a lazily unmounted
one lives on while they do), and the mount namespaces no process is in (a descriptor or a bind
mount keeps them, with their mounts, alive). These check the last two against real processes and
namespaces of this machine, by the device number of a filesystem they sit on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_deploy.lab.simulator.docker_disks import unowned_mount_namespaces, users_of


@pytest.fixture
def fs() -> Iterator[Path]:
    """A directory on a filesystem of its own (not the one every process has as its root)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat("/").st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    with tempfile.TemporaryDirectory(dir=shm) as path:
        yield Path(path)


@pytest.fixture
def unshare() -> str:
    """util-linux's unshare, where this machine lets it make a mount namespace."""
    path = shutil.which("unshare")
    if path is None or subprocess.run([path, "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare --mount (util-linux, and the right to make a mount namespace)")
    return path


def test_a_process_whose_working_directory_is_on_the_filesystem_is_named(fs: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=fs)
    try:
        found = users_of({os.stat(fs).st_dev})
        assert any(line.startswith(f"{proc.pid} python") and "cwd" in line for line in found), found
    finally:
        proc.kill()
        proc.wait()
    assert not any(line.startswith(f"{proc.pid} ") for line in users_of({os.stat(fs).st_dev}))


def test_a_process_holding_a_file_open_on_it_is_named_with_the_descriptor(fs: Path) -> None:
    held = fs / "held"
    held.write_text("x")
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1]); print('open', flush=True); "
                             "time.sleep(60)", str(held)], cwd="/", stdout=subprocess.PIPE, text=True)  # cwd elsewhere
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "open\n"  # the child has it open now
        found = [line for line in users_of({os.stat(fs).st_dev}) if line.startswith(f"{proc.pid} ")]
        assert found and "fd " in found[0] and "cwd" not in found[0], found
    finally:
        proc.kill()
        proc.wait()


def test_an_unknown_device_number_names_nobody() -> None:
    assert users_of({os.makedev(4095, 4095)}) == []


def test_a_process_with_the_device_itself_open_is_named() -> None:
    """The device node open (as mkfs or blkid would hold a loop device): here /dev/null, as stdin."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd="/",
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        found = [line for line in users_of({os.stat("/dev/null").st_rdev}) if line.startswith(f"{proc.pid} ")]
        assert found and "fd 0" in found[0].split(" ", 2)[2].split(", "), found
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_mapped_a_file_there_and_closed_it_is_named_with_the_file(fs: Path) -> None:
    """A mapping outlives the descriptor it was made from, and keeps the file's filesystem."""
    mapped = fs / "mapped"
    mapped.write_bytes(b"x" * 4096)
    # libc's mmap (Python's mmap object keeps a descriptor of its own), then the file closed
    proc = subprocess.Popen([sys.executable, "-c", "import ctypes, mmap, os, sys, time\n"
                             "libc = ctypes.CDLL(None, use_errno=True)\n"
                             "libc.mmap.restype = ctypes.c_void_p\n"
                             "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,"
                             " ctypes.c_int, ctypes.c_long]\n"
                             "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
                             "assert libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0) != ctypes.c_void_p(-1).value\n"
                             "os.close(fd)\n"
                             "print('mapped', flush=True); time.sleep(60)", str(mapped)],
                            cwd="/", stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "mapped\n"  # mapped, its file closed
        found = [line for line in users_of({os.stat(fs).st_dev}) if line.startswith(f"{proc.pid} ")]
        assert found and f"map {mapped}" in found[0] and "fd " not in found[0], found
    finally:
        proc.kill()
        proc.wait()


def test_a_mount_namespace_kept_by_a_descriptor_after_its_process_is_gone_is_named(unshare: str) -> None:
    # the shell speaks from inside the namespace unshare made, then becomes the sleep in it
    inside = subprocess.Popen([unshare, "--mount", "sh", "-c", "echo in; exec sleep 60"],
                              stdout=subprocess.PIPE, text=True)
    holder = None
    try:
        assert inside.stdout is not None and inside.stdout.readline() == "in\n"
        ns = os.readlink(f"/proc/{inside.pid}/ns/mnt")
        assert ns != os.readlink("/proc/self/ns/mnt")
        holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1]); print('open', flush=True); "
                                   "time.sleep(60)", f"/proc/{inside.pid}/ns/mnt"], stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        assert not [line for line in unowned_mount_namespaces() if line.startswith(f"{ns} ")]  # sleep is in it
        inside.kill()
        inside.wait()
        found = [line for line in unowned_mount_namespaces() if line.startswith(f"{ns} ")]
        assert len(found) == 1 and found[0].endswith(f" of {holder.pid}"), found
    finally:
        for proc in (inside, holder):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_a_mount_namespace_kept_by_a_bind_mount_after_its_process_is_gone_is_named(fs: Path, unshare: str) -> None:
    """As `unshare --mount=FILE` or `ip netns` keep one: bind-mounted, no process in it."""
    pin = fs / "pinned"
    pin.touch()
    made = subprocess.run([unshare, f"--mount={pin}", "true"], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount a mount namespace here: {made.stderr.strip()}")
    try:
        found = [line for line in unowned_mount_namespaces() if f" by a mount at {pin} seen by " in line]
        assert len(found) == 1 and found[0].startswith("mnt:["), unowned_mount_namespaces()
    finally:
        subprocess.run(["umount", str(pin)], check=True)
    assert not [line for line in unowned_mount_namespaces() if f" at {pin} " in line]
