"""cloud-init user data: pinned host key, sizes, and the data disk script run for real."""

from __future__ import annotations

import base64
import gzip
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
import yaml

from cloudstack_deploy.errors import CsdeployError
from cloudstack_deploy.lab.simulator.guest import cloud_config, userdata_host_keys
from cloudstack_deploy.provision.hostkeys import HostKey, generate_host_key
from cloudstack_deploy.provision.userdata import (
    DISK_SCRIPT,
    DISK_SCRIPT_PATH,
    DISK_UNIT,
    USERDATA_GET_LIMIT,
    USERDATA_MAX_BYTES,
    DataDisk,
    InvalidInput,
    build_userdata,
    disk_label,
    host_public_key_from_userdata,
    needs_post,
)


@pytest.fixture(scope="module")
def host_key() -> HostKey:
    return generate_host_key()


def decode(b64: str) -> str:
    return base64.b64decode(b64).decode()


def config_of(b64: str) -> dict:
    text = decode(b64)
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


# ---- host keys ------------------------------------------------------------------------------
def test_generate_host_key() -> None:
    key = generate_host_key()
    private = asyncssh.import_private_key(key.private_openssh)
    assert private.algorithm == b"ssh-ed25519"
    assert key.public_line.startswith("ssh-ed25519 ") and "\n" not in key.public_line
    assert asyncssh.import_public_key(key.public_line).public_data == private.public_data
    assert "PRIVATE" not in repr(key)
    assert generate_host_key().public_line != key.public_line


def test_a_host_key_is_read_by_openssh_as_sshd_reads_it(tmp_path: Path) -> None:
    """OpenSSH's own reader (ssh-keygen -y, as sshd loads a host key) takes the private half
    and derives the public line cloud-init pins, the comment (the VM's name) after it."""
    key = generate_host_key(comment="demo-web-1")
    assert key.public_line.endswith(" demo-web-1")
    path = tmp_path / "ssh_host_ed25519_key"
    path.write_text(key.private_openssh)
    path.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(path)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == key.public_line.split()[:2]


# ---- the cloud-config -----------------------------------------------------------------------
def test_userdata_pins_the_host_key(host_key: HostKey) -> None:
    b64 = build_userdata(hostname="demo-web-1", host_key=host_key)
    cfg = config_of(b64)
    assert cfg["hostname"] == cfg["fqdn"] == "demo-web-1"
    assert cfg["ssh_keys"] == {"ed25519_private": host_key.private_openssh,
                               "ed25519_public": host_key.public_line}
    assert cfg["ssh_deletekeys"] is True and cfg["ssh_genkeytypes"] == []
    assert cfg["disable_root"] is False
    assert "packages" not in cfg
    # the simulator reads it exactly as cloud-init would, and gets our key
    assert cloud_config(b64) == cfg
    keys = userdata_host_keys(b64)
    assert [k.public_data for k in keys] == [
        asyncssh.import_public_key(host_key.public_line).public_data]


def test_non_root_user_keeps_cloud_init_default(host_key: HostKey) -> None:
    cfg = config_of(build_userdata(hostname="demo-web-1", host_key=host_key, user="debian",
                                   extra_packages=["fail2ban", "unattended-upgrades"]))
    assert "disable_root" not in cfg
    assert cfg["packages"] == ["fail2ban", "unattended-upgrades"]


def test_disk_script_and_unit_are_installed(host_key: HostKey) -> None:
    disks = [DataDisk(disk_label("blobs"), "/data/blobs"), DataDisk(disk_label("db"), "/data/db")]
    cfg = config_of(build_userdata(hostname="demo-db-1", host_key=host_key, disks=disks))
    files = {f["path"]: f for f in cfg["write_files"]}
    script = files[DISK_SCRIPT_PATH]
    assert script["permissions"] == "0755" and script["content"] == DISK_SCRIPT
    unit = files[f"/etc/systemd/system/{DISK_UNIT}"]["content"]
    assert "Before=docker.service" in unit and "Type=oneshot" in unit
    assert "WantedBy=multi-user.target" in unit  # every boot, not just the first
    assert (f"ExecStart={DISK_SCRIPT_PATH} csd-blobs:/data/blobs csd-db:/data/db\n") in unit
    assert ["systemctl", "enable", "--now", DISK_UNIT] in cfg["runcmd"]


def test_sizes_fit_cloudstack_and_a_get_request(host_key: HostKey) -> None:
    sizes = {}
    for name, disks in {"plain": [], "web": [DataDisk("csd-blobs", "/data/blobs")],
                        "db": [DataDisk("csd-db", "/data/db")],
                        "two": [DataDisk("csd-blobs", "/data/blobs"),
                                DataDisk("csd-db", "/data/db")]}.items():
        b64 = build_userdata(hostname=f"shop-staging-{name}-12", host_key=host_key,
                             disks=disks, extra_packages=["fail2ban"])
        sizes[name] = (len(base64.b64decode(b64)), len(b64))
        assert len(base64.b64decode(b64)) < USERDATA_MAX_BYTES
        # Too long for a GET only matters if nobody notices: needs_post tells the caller.
        assert needs_post(b64) == (len(b64) > USERDATA_GET_LIMIT), sizes
    assert sizes["plain"][1] <= USERDATA_GET_LIMIT, sizes  # VMs without data disks go by GET
    print("user data sizes (decoded bytes, base64 chars):", sizes)


def test_oversized_userdata_is_refused(host_key: HostKey) -> None:
    many = [f"package-{i:05d}" for i in range(3000)]
    with pytest.raises(InvalidInput, match="bytes; CloudStack takes at most 32768"):
        build_userdata(hostname="demo-web-1", host_key=host_key, extra_packages=many)
    b64 = build_userdata(hostname="demo-web-1", host_key=host_key, extra_packages=many[:100])
    assert needs_post(b64)


@pytest.mark.parametrize("kw", [
    {"hostname": "Demo_web"}, {"hostname": "-a"}, {"hostname": "a" * 64},
    {"extra_packages": ["ok", "rm -rf /"]},
    {"disks": [DataDisk("csd-a", "/data/a"), DataDisk("csd-a", "/data/b")]},
    {"disks": [DataDisk("csd-a", "/data/a"), DataDisk("csd-b", "/data/a")]},
])
def test_bad_input_is_refused(host_key: HostKey, kw: dict) -> None:
    args = {"hostname": "demo-web-1", **kw}
    with pytest.raises(InvalidInput) as err:
        build_userdata(host_key=host_key, **args)
    assert isinstance(err.value, CsdeployError)


@pytest.mark.parametrize("mount", ["data", "/", "/etc", "/var", "/data/", "/data/../etc",
                                   "/data//x", "/data/a b", "/data/a:b", "/data/$x", "/data/."])
def test_bad_mount_points(mount: str) -> None:
    with pytest.raises(InvalidInput):
        DataDisk("csd-db", mount)


def test_disk_labels() -> None:
    assert disk_label("web") == "csd-web"
    assert disk_label("db") == "csd-db"
    assert disk_label("Blob Store") == "csd-blob-store"
    long = disk_label("database-primary-volume")
    assert long == "csd-database-pri" and len(long) == 16
    assert disk_label("abcdefghijkl-xyz") == "csd-abcdefghijkl"  # no trailing '-'
    for bad in ["", "---", "__"]:
        with pytest.raises(InvalidInput):
            disk_label(bad)
    with pytest.raises(InvalidInput):
        DataDisk("csd-toolonglabel-x", "/data/x")
    with pytest.raises(InvalidInput):
        DataDisk("CSD", "/data/x")


# ---- reading the host key back from the cloud ------------------------------------------------
def test_host_public_key_from_userdata(host_key: HostKey) -> None:
    b64 = build_userdata(hostname="demo-web-1", host_key=host_key)
    assert host_public_key_from_userdata(b64) == host_key.public_line
    # gzip, as cloud-init accepts it
    gz = base64.b64encode(gzip.compress(base64.b64decode(b64))).decode()
    assert host_public_key_from_userdata(gz) == host_key.public_line
    # only the private half: derived
    only_private = base64.b64encode(
        ("#cloud-config\n" + yaml.safe_dump(
            {"ssh_keys": {"ed25519_private": host_key.private_openssh}})).encode()).decode()
    assert host_public_key_from_userdata(only_private) == host_key.public_line


def test_a_host_key_read_back_keeps_the_vm_s_name_and_trusts_the_private_half() -> None:
    """The public line comes back as it was made (the VM's name after the key: what the
    inventory pinned at first); a public half that is not the private half's key is
    overruled by the private one, the key sshd presents."""
    named = generate_host_key(comment="demo-web-1")
    b64 = build_userdata(hostname="demo-web-1", host_key=named)
    assert host_public_key_from_userdata(b64) == named.public_line
    other = generate_host_key(comment="someone-else")
    forged = base64.b64encode(("#cloud-config\n" + yaml.safe_dump({"ssh_keys": {
        "ed25519_private": named.private_openssh, "ed25519_public": other.public_line}})).encode()).decode()
    assert host_public_key_from_userdata(forged) == " ".join(named.public_line.split()[:2])


@pytest.mark.parametrize("b64", [
    None, "", "!!!", base64.b64encode(b"#!/bin/sh\necho hi\n").decode(),
    base64.b64encode(b"#cloud-config\nhostname: x\n").decode(),
    base64.b64encode(b"#cloud-config\nssh_keys: {ed25519_public: garbage}\n").decode(),
    base64.b64encode(b"#cloud-config\nssh_keys: {ed25519_public: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5}\n").decode(),
    base64.b64encode(b"#cloud-config\nssh_keys: {ed25519_private: not-a-key}\n").decode(),
    base64.b64encode(b"#cloud-config\n: [\n").decode(),
])
def test_host_public_key_from_other_userdata_is_none(b64: str | None) -> None:
    assert host_public_key_from_userdata(b64) is None


# ---- the disk script ------------------------------------------------------------------------
def test_disk_script_is_valid_bash_and_names_no_device() -> None:
    subprocess.run(["bash", "-n"], input=DISK_SCRIPT, text=True, check=True)
    assert "/dev/vd" not in DISK_SCRIPT and "/dev/sd" not in DISK_SCRIPT
    assert "mkfs.ext4 -q -L" in DISK_SCRIPT and " -F" not in DISK_SCRIPT
    assert not [line for line in DISK_SCRIPT.splitlines() if line != line.rstrip()]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_disk_script_passes_shellcheck(tmp_path: Path) -> None:
    script = tmp_path / "csdeploy-disks"
    script.write_text(DISK_SCRIPT)
    result = subprocess.run(["shellcheck", "-S", "warning", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _loop_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create loop devices and mount filesystems"
    for tool in ("losetup", "mkfs.ext4", "resize2fs", "blkid", "wipefs", "lsblk", "findmnt"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


def _has_cap_sys_resource() -> bool:
    """True if this process may resize a mounted ext4 (capability 24, CAP_SYS_RESOURCE)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


class LoopDisk:
    """A sparse file attached as a loop device: a data disk that cannot be anyone's real disk."""

    def __init__(self, tmp: Path, size_mb: int = 64) -> None:
        self.file = tmp / f"disk-{uuid.uuid4().hex[:8]}.img"
        self.resize(size_mb)
        result = subprocess.run(["losetup", "-f", "--show", str(self.file)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"losetup does not work here: {result.stderr.strip()}")
        self.dev = result.stdout.strip()

    def resize(self, size_mb: int) -> None:
        with open(self.file, "ab") as f:
            f.truncate(size_mb * 1024 * 1024)

    def refresh(self) -> None:
        subprocess.run(["losetup", "-c", self.dev], check=True)

    def detach(self) -> None:
        subprocess.run(["umount", "-A", self.dev], capture_output=True)  # -A: every mount
        subprocess.run(["losetup", "-d", self.dev], capture_output=True)

    def label(self) -> str:
        return subprocess.run(["blkid", "-p", "-s", "LABEL", "-o", "value", self.dev],
                              capture_output=True, text=True).stdout.strip()


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[list[LoopDisk]]:
    reason = _loop_skip_reason()
    if reason:
        pytest.skip(reason)
    made: list[LoopDisk] = []
    try:
        yield made
    finally:
        for disk in made:
            disk.detach()


def run_script(tmp_path: Path, only: list[LoopDisk], *specs: str) -> subprocess.CompletedProcess[str]:
    """Run the disk script restricted to ``only`` (CSDEPLOY_DISKS_ONLY) with a private fstab."""
    script = tmp_path / "csdeploy-disks"
    script.write_text(DISK_SCRIPT)
    env = {**os.environ, "CSDEPLOY_DISKS_ONLY": " ".join(d.dev for d in only),
           "CSDEPLOY_FSTAB": str(tmp_path / "fstab")}
    return subprocess.run(["bash", str(script), *specs], env=env, capture_output=True,
                          text=True, timeout=60)


def size_of(mount: Path) -> int:
    st = os.statvfs(mount)
    return st.f_blocks * st.f_frsize


def test_disk_script_formats_once_mounts_and_grows(tmp_path: Path, disks: list[LoopDisk]) -> None:
    disk = LoopDisk(tmp_path)
    disks.append(disk)
    mount = tmp_path / "data" / "db"
    label = "csd-t" + uuid.uuid4().hex[:8]
    spec = f"{label}:{mount}"

    first = run_script(tmp_path, [disk], spec)
    assert first.returncode == 0, first.stderr
    assert f"formatting blank disk {disk.dev} as {label}" in first.stderr
    assert disk.label() == label
    assert os.path.ismount(mount)
    fstab = (tmp_path / "fstab").read_text()
    assert fstab == f"LABEL={label} {mount} ext4 defaults,nofail 0 2\n"
    (mount / "marker").write_text("precious")
    small = size_of(mount)

    # a second run (next boot, already mounted): no format, fstab entry not repeated
    again = run_script(tmp_path, [disk], spec)
    assert again.returncode == 0, again.stderr
    assert "formatting" not in again.stderr
    assert (mount / "marker").read_text() == "precious"
    assert (tmp_path / "fstab").read_text() == fstab

    # after a reboot (unmounted) it is found by label and mounted again, data intact
    subprocess.run(["umount", str(mount)], check=True)
    remount = run_script(tmp_path, [disk], spec)
    assert remount.returncode == 0, remount.stderr
    assert "formatting" not in remount.stderr
    assert (mount / "marker").read_text() == "precious"

    # resizeVolume: the disk grows under the mounted filesystem and the next run grows it
    # online. ext4 online resize needs CAP_SYS_RESOURCE, which root on a VM has; where it is
    # missing (some containers) the run must fail loudly and leave data and mount alone.
    disk.resize(128)
    disk.refresh()
    grown = run_script(tmp_path, [disk], spec)
    if _has_cap_sys_resource():
        assert grown.returncode == 0, grown.stderr
        assert size_of(mount) > small * 1.8
    else:
        assert grown.returncode == 1
        assert grown.stderr == f"csdeploy-disks: resize2fs {disk.dev} failed\n"
        assert size_of(mount) == small
    assert "formatting" not in grown.stderr
    assert os.path.ismount(mount)
    assert (mount / "marker").read_text() == "precious"


def test_disk_script_never_formats_a_disk_with_a_signature(
        tmp_path: Path, disks: list[LoopDisk]) -> None:
    foreign = LoopDisk(tmp_path)
    disks.append(foreign)
    subprocess.run(["mkfs.ext4", "-q", "-L", "someone-else", foreign.dev], check=True)
    label = "csd-t" + uuid.uuid4().hex[:8]
    result = run_script(tmp_path, [foreign], f"{label}:{tmp_path / 'mnt'}")
    assert result.returncode == 0  # not an error: the disk may be hot-plugged later
    assert f"no disk labelled {label} and none blank yet" in result.stderr
    assert foreign.label() == "someone-else"
    assert not (tmp_path / "fstab").exists()

    # with a blank disk beside it, the blank one is taken and the foreign one left alone
    blank = LoopDisk(tmp_path)
    disks.append(blank)
    result = run_script(tmp_path, [foreign, blank], f"{label}:{tmp_path / 'mnt'}")
    assert result.returncode == 0, result.stderr
    assert blank.label() == label and foreign.label() == "someone-else"


def test_disk_script_skips_a_disk_with_any_other_signature(
        tmp_path: Path, disks: list[LoopDisk]) -> None:
    if shutil.which("mkswap") is None:
        pytest.skip("mkswap not installed")
    swap = LoopDisk(tmp_path)
    disks.append(swap)
    subprocess.run(["mkswap", swap.dev], check=True, capture_output=True)
    result = run_script(tmp_path, [swap], f"csd-x{uuid.uuid4().hex[:6]}:{tmp_path / 'm'}")
    assert "none blank yet" in result.stderr
    assert "swap" in subprocess.run(["blkid", "-p", swap.dev], capture_output=True,
                                    text=True).stdout


def test_disk_script_two_labels_two_disks(tmp_path: Path, disks: list[LoopDisk]) -> None:
    a, b = LoopDisk(tmp_path), LoopDisk(tmp_path)
    disks += [a, b]
    tag = uuid.uuid4().hex[:6]
    specs = [f"csd-a{tag}:{tmp_path / 'a'}", f"csd-b{tag}:{tmp_path / 'b'}"]
    result = run_script(tmp_path, [a, b], *specs)
    assert result.returncode == 0, result.stderr
    assert {a.label(), b.label()} == {f"csd-a{tag}", f"csd-b{tag}"}
    assert os.path.ismount(tmp_path / "a") and os.path.ismount(tmp_path / "b")
    assert len((tmp_path / "fstab").read_text().splitlines()) == 2
