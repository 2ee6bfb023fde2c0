"""Where a lab VM keeps /var/lib/docker (CSDEPLOY_LAB_VM_DOCKER), without Docker.

The VM itself is checked in tests/lab/test_docker_backend.py (a VM's notes in memory outlive
the stop of its container; the cleanup frees them). Here: the setting is read as written, a
value this machine cannot honour is refused in words that name the variable, and the memory a
VM used goes with it, whatever the setting says by then.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid

import pytest

from cloudstack_deploy.lab.config import LabConfigError
from cloudstack_deploy.lab.simulator.docker_resources import (
    TMPFS_ROOT,
    VM_DOCKER_ENV,
    remove_vm_docker_dir,
    vm_docker_on_tmpfs,
    vm_docker_volume_args,
)

as_root = pytest.mark.skipif(os.geteuid() != 0 or not TMPFS_ROOT.parent.is_dir(),
                             reason="needs root and /dev/shm")


@pytest.mark.parametrize("value", [None, "", "volume", " volume "])
def test_the_default_is_a_docker_volume_on_this_machine_s_disk(monkeypatch: pytest.MonkeyPatch,
                                                               value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(VM_DOCKER_ENV, raising=False)
    else:
        monkeypatch.setenv(VM_DOCKER_ENV, value)
    vm_id = str(uuid.uuid4())
    assert not vm_docker_on_tmpfs()
    assert vm_docker_volume_args(vm_id) == []
    assert not (TMPFS_ROOT / vm_id).exists()


def test_an_unknown_setting_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VM_DOCKER_ENV, "ram")
    with pytest.raises(LabConfigError) as err:
        vm_docker_on_tmpfs()
    assert str(err.value) == "CSDEPLOY_LAB_VM_DOCKER='ram': expected 'volume' or 'tmpfs'"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may use it")
def test_memory_is_refused_to_a_user_who_could_not_free_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VM_DOCKER_ENV, "tmpfs")
    with pytest.raises(LabConfigError, match="CSDEPLOY_LAB_VM_DOCKER=tmpfs needs root"):
        vm_docker_on_tmpfs()


@as_root
def test_in_memory_a_vm_gets_a_bind_of_its_own_directory_which_goes_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VM_DOCKER_ENV, "tmpfs")
    vm_id = str(uuid.uuid4())
    path = TMPFS_ROOT / vm_id
    try:
        assert vm_docker_volume_args(vm_id) == ["--opt", "type=none", "--opt", "o=bind",
                                                "--opt", f"device={path}"]
        assert path.is_dir()
        (path / "overlay2" / "l").mkdir(parents=True)  # what the VM's dockerd leaves there
        (path / "overlay2" / "l" / "layer").write_text("x")
        monkeypatch.setenv(VM_DOCKER_ENV, "volume")  # the setting changed since: still freed
        asyncio.run(remove_vm_docker_dir(vm_id))
        assert not path.exists()
        asyncio.run(remove_vm_docker_dir(vm_id))  # nothing left: nothing to do
    finally:
        if path.exists():
            shutil.rmtree(path)


@as_root
def test_only_a_vm_s_own_directory_is_ever_removed() -> None:
    """The cleanup derives the id from a volume's name: one that is no plain name removes nothing."""
    TMPFS_ROOT.mkdir(parents=True, exist_ok=True)
    keep = TMPFS_ROOT / f"keep-{uuid.uuid4()}"
    keep.mkdir()
    try:
        for name in ("..", ".", "", f"../{TMPFS_ROOT.name}", f"x/../{keep.name}"):
            asyncio.run(remove_vm_docker_dir(name))
        assert keep.is_dir() and TMPFS_ROOT.is_dir()
    finally:
        shutil.rmtree(keep, ignore_errors=True)
