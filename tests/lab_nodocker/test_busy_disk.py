"""What keeps a detached lab disk's loop device busy, named (cloudstack_deploy/lab/simulator/docker_disks.py).

When a detach leaves a loop device busy past its settle time, the simulator's warning names the
namespaces that still mount it and the processes that use it without a mount: the device open,
or a working directory or open file on its filesystem (a lazily unmounted one lives on while
they do). These check the second against real processes of this machine, by the device number
of a filesystem they sit on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_deploy.lab.simulator.docker_disks import users_of


@pytest.fixture
def fs() -> Iterator[Path]:
    """A directory on a filesystem of its own (not the one every process has as its root)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat("/").st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    with tempfile.TemporaryDirectory(dir=shm) as path:
        yield Path(path)


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
