"""cloud-init user data for csdeploy's VMs: host name, pinned host key, data disks.

The user data is the only channel into a VM before SSH works, so it carries what SSH needs to
be trustworthy from the first packet (the host key csdeploy made, see ``hostkeys``) and what
must be true at every boot before containers start (data disks mounted at fixed paths).

Data disks are found by filesystem label, never by device name: ``/dev/vdb`` on one hypervisor
is ``/dev/sdb`` or ``/dev/xvdb`` on another, and the order of attached disks is not stable.
A disk is formatted only when it holds nothing at all, so a re-run, a reboot or a re-attached
volume never loses data; after a CloudStack ``resizeVolume`` the next run grows the filesystem.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.inventory import DISK_UNIT

from .hostkeys import HostKey

if TYPE_CHECKING:
    import yaml

#: CloudStack's default limit on decoded user data (``vm.userdata.max.length`` is 32768).
USERDATA_MAX_BYTES = 32768
#: Base64 user data longer than this does not fit a GET request (``cs`` sends GET by default);
#: the caller must then send deployVirtualMachine as POST.
USERDATA_GET_LIMIT = 4096
#: ext4 labels hold at most 16 bytes.
LABEL_MAX = 16
LABEL_PREFIX = "csd-"
DISK_SCRIPT_PATH = "/usr/local/sbin/csdeploy-disks"

_LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.:=~_-]*$")
# The disk script is plain bash with util-linux and e2fsprogs only (present on every cloud
# image). CSDEPLOY_DISKS_ONLY (a list of devices that may be used) and CSDEPLOY_FSTAB exist so
# tests can run it against loop devices without any chance of touching a real disk.
DISK_SCRIPT = r"""#!/bin/bash
# csdeploy-disks LABEL:MOUNT... (csdeploy: mount data disks by label)
set -u
only=${CSDEPLOY_DISKS_ONLY:-} fstab=${CSDEPLOY_FSTAB:-/etc/fstab} rc=0
say() { echo "csdeploy-disks: $*" >&2; }
[ -n "$only" ] || udevadm settle -t 10 2>/dev/null
root=" $(lsblk -snro NAME "$(findmnt -no SOURCE /)" 2>/dev/null | tr '\n' ' ') "
labeled() {
  [ -n "$only" ] || { blkid -L "$1"; return; }
  for d in $only; do [ "$(blkid -p -s LABEL -o value "$d")" = "$1" ] && echo "$d" && return; done
}
blank() {
  local n s
  n=$(lsblk -dno NAME "$1") || return 1
  case $root in *" $n "*) return 1 ;; esac
  [ "$(lsblk -no NAME,MOUNTPOINT "$1" | wc -w)" = 1 ] || return 1
  [ -z "$(ls -A "/sys/class/block/$n/holders")" ] || return 1
  blkid -p "$1" >/dev/null 2>&1
  [ $? = 2 ] && s=$(wipefs -n "$1") && [ -z "$s" ]
}
for arg; do
  label=${arg%%:*} mnt=${arg#*:}
  dev=$(labeled "$label")
  if [ -z "$dev" ]; then
    for d in ${only:-$(lsblk -dnpo NAME,TYPE | awk '$2=="disk"{print $1}')}; do
      blank "$d" && dev=$d && break
    done
    # Not attached yet (clouds attach data disks after boot): the udev rule runs us again.
    [ -n "$dev" ] || { say "no disk labelled $label and none blank yet: waiting for it"; continue; }
    say "formatting blank disk $dev as $label"
    mkfs.ext4 -q -L "$label" "$dev" </dev/null || { rc=1; continue; }
  fi
  mkdir -p "$mnt"
  grep -qs "^LABEL=$label " "$fstab" || echo "LABEL=$label $mnt ext4 defaults,nofail 0 2" >>"$fstab"
  cur=$(findmnt -rnvo SOURCE -M "$mnt")
  [ -n "$cur" ] || { mount "$dev" "$mnt" && cur=$dev; }
  [ "$cur" = "$dev" ] || { say "$dev not mounted at $mnt ($cur)"; rc=1; continue; }
  resize2fs "$dev" >/dev/null 2>&1 || { say "resize2fs $dev failed"; rc=1; }
done
exit $rc
"""

#: A disk plugged in (attach) or grown (resizeVolume) runs the script again: hot-plug is
#: the normal case on CloudStack, where volumes are attached after the VM has booted.
UDEV_RULE_PATH = "/etc/udev/rules.d/90-csdeploy-disks.rules"
UDEV_RULE = ('ACTION=="add|change", SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", '
             'RUN+="/bin/systemctl --no-block restart csdeploy-disks.service"\n')

_UNIT = """[Unit]
Description=csdeploy data disks
Before=docker.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={exec_start}
[Install]
WantedBy=multi-user.target
"""



@dataclass(frozen=True)
class DataDisk:
    """A data disk as the VM sees it: the filesystem label it is found by, and where it goes."""

    label: str
    mount: str

    def __post_init__(self) -> None:
        if not _LABEL_RE.fullmatch(self.label):
            raise InvalidInput(
                f"disk label {self.label!r} is not usable: ext4 labels here are 1-{LABEL_MAX} "
                "lower-case letters, digits or hyphens", hint="build labels with disk_label()")
        from cloudstack_deploy.blueprint_schema import (
            mount_point_problem,  # the blueprint's rule, loaded when used
        )

        problem = mount_point_problem(self.mount)
        if problem:  # the blueprint refuses these already (same rule): a caller's mistake
            raise InvalidInput(f"mount point {self.mount!r} of disk {self.label} is not usable: {problem}",
                                hint="use an absolute, normalized path of letters, digits, '.', '_' and '-' "
                                     "outside system directories, e.g. /data/db")


def disk_label(name: str) -> str:
    """The filesystem label of a data disk named ``name``: ``csd-<name>``, at most 16 chars.

    The prefix marks the filesystems csdeploy owns; the name is lower-cased, other characters
    become '-', and it is cut to fit ext4's 16 bytes (``build_userdata`` rejects duplicates,
    so two names that collide after cutting are caught rather than sharing a disk).
    """
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    label = (LABEL_PREFIX + cleaned)[:LABEL_MAX].rstrip("-")
    if not cleaned or len(label) <= len(LABEL_PREFIX):
        raise InvalidInput(f"disk name {name!r} gives no usable label",
                            hint="name data disks with letters and digits, e.g. 'db'")
    return label


@functools.cache
def _dumper() -> type[yaml.SafeDumper]:
    """Multi-line strings (keys, scripts) as literal blocks: readable and smaller. libyaml's
    emitter when PyYAML has it (the same text, 12x faster: 200 VMs spent 0.7 s in the
    pure-Python one before the first deployVirtualMachine). Made on first use: `envs` reads
    tags through this module and never writes user data."""
    import yaml

    class Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
        pass

    def str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, str_representer)
    return Dumper


def cloud_config(*, hostname: str, host_key: HostKey, user: str = "root",
                 disks: Sequence[DataDisk] = (), extra_packages: Sequence[str] = ()
                 ) -> dict[str, Any]:
    """The ``#cloud-config`` document as a dict (see :func:`build_userdata`)."""
    if not _HOSTNAME_RE.fullmatch(hostname):
        raise InvalidInput(f"host name {hostname!r} is not a valid DNS label",
                            hint="use lower-case letters, digits and '-', at most 63 chars")
    labels = [d.label for d in disks]
    mounts = [d.mount for d in disks]
    if len(set(labels)) != len(labels) or len(set(mounts)) != len(mounts):
        raise InvalidInput(f"data disks of {hostname} share a label or mount point: {list(disks)}",
                            hint="give each data disk of a role its own name and path")
    for package in extra_packages:
        if not _PACKAGE_RE.fullmatch(package):
            raise InvalidInput(f"package name {package!r} is not valid")
    config: dict[str, Any] = {"hostname": hostname, "fqdn": hostname}
    if user == "root":
        config["disable_root"] = False
    config.update({
        # Install exactly our key and make no others: the pinned key is the only one sshd has.
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_key.private_openssh,
                     "ed25519_public": host_key.public_line},
    })
    if extra_packages:
        config["packages"] = list(extra_packages)
    exec_start = " ".join([DISK_SCRIPT_PATH, *(f"{d.label}:{d.mount}" for d in disks)])
    config["write_files"] = [
        {"path": DISK_SCRIPT_PATH, "permissions": "0755", "content": DISK_SCRIPT},
        {"path": f"/etc/systemd/system/{DISK_UNIT}",
         "content": _UNIT.format(exec_start=exec_start)},
    ]
    if disks:
        config["write_files"].append({"path": UDEV_RULE_PATH, "content": UDEV_RULE})
    # `enable` reloads systemd itself; runcmd runs once, the unit then runs at every boot.
    config["runcmd"] = [["systemctl", "enable", "--now", DISK_UNIT]]
    return config


def build_userdata(*, hostname: str, host_key: HostKey, user: str = "root",
                   disks: Sequence[DataDisk] = (), extra_packages: Sequence[str] = ()) -> str:
    """Base64 ``#cloud-config`` user data for deployVirtualMachine.

    Sets the host name, installs ``host_key`` as the VM's only SSH host key, lets root log in
    with the keypair when ``user`` is root, installs packages, and installs the disk script
    with a systemd unit that runs it at every boot before docker. Raises
    :class:`InvalidInput` past CloudStack's size limit; use :func:`needs_post` to choose
    GET or POST.
    """
    import yaml

    config = cloud_config(hostname=hostname, host_key=host_key, user=user, disks=disks,
                          extra_packages=extra_packages)
    text = "#cloud-config\n" + yaml.dump(config, Dumper=_dumper(), sort_keys=False, width=4096,
                                         default_flow_style=None)
    raw = text.encode()
    if len(raw) > USERDATA_MAX_BYTES:
        raise InvalidInput(f"user data of {hostname} is {len(raw)} bytes; CloudStack takes at "
                            f"most {USERDATA_MAX_BYTES}", hint="install fewer extra packages")
    return base64.b64encode(raw).decode()


def needs_post(userdata: str) -> bool:
    """True if base64 ``userdata`` is too long for a GET request to CloudStack."""
    return len(userdata) > USERDATA_GET_LIMIT


def parse_cloud_config(userdata: str | None) -> dict[str, Any] | None:
    """The ``#cloud-config`` dict in base64 user data (gzip allowed), or None."""
    if not userdata:
        return None
    try:
        raw = base64.b64decode(userdata, validate=False)
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode()
    except (binascii.Error, ValueError, OSError, EOFError, UnicodeDecodeError):
        return None
    if not text.startswith("#cloud-config"):
        return None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def disks_from_userdata(b64: str | None) -> frozenset[tuple[str, str]] | None:
    """The (label, mount) pairs that ``b64`` user data makes the VM mount, or None when the
    user data is not csdeploy's (then nothing can be said about its disks).

    Read from the disk unit's ExecStart, which is what the VM runs at every boot: cloud-init
    writes it once, so this is what the VM does for its whole life, whatever the blueprint
    says now.
    """
    config = parse_cloud_config(b64)
    files = config.get("write_files") if config else None
    unit = next((f for f in files or () if isinstance(f, dict)
                 and f.get("path") == f"/etc/systemd/system/{DISK_UNIT}"), None)
    if unit is None or not isinstance(unit.get("content"), str):
        return None
    line = next((x for x in unit["content"].splitlines() if x.startswith("ExecStart=")), None)
    if line is None:
        return None
    words = line[len("ExecStart="):].split()
    if not words or words[0] != DISK_SCRIPT_PATH:
        return None
    pairs = [tuple(w.split(":", 1)) for w in words[1:]]
    if any(len(pair) != 2 for pair in pairs):
        return None
    return frozenset((label, mount) for label, mount in pairs)


def host_public_key_from_userdata(b64: str | None) -> str | None:
    """The ed25519 host public key line that ``b64`` user data installs, or None.

    Used to rebuild known_hosts from the cloud when the local state dir is gone: the user data
    comes from CloudStack's authenticated API, a channel csdeploy already trusts.
    """
    config = parse_cloud_config(b64)
    ssh_keys = config.get("ssh_keys") if config else None
    if not isinstance(ssh_keys, dict):
        return None
    # sshd presents the key derived from the private file, so that half is the truth; the
    # public line given beside it is taken when it is the same key (its comment, the VM's name).
    private, public = ssh_keys.get("ed25519_private"), ssh_keys.get("ed25519_public")
    line = str(public).strip() if public else ""
    if private:
        from .hostkeys import public_line_of_private

        try:
            derived = public_line_of_private(str(private).encode())
        except ValueError:
            return None
        if line.split()[:2] != derived.split():
            line = derived
    fields = line.split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519" or not _ed25519_blob(fields[1]):
        return None
    return line


def _ed25519_blob(b64: str) -> bool:
    """Whether ``b64`` is an OpenSSH ed25519 public key blob (string "ssh-ed25519", 32 bytes)."""
    try:
        blob = base64.b64decode(b64, validate=True)
    except ValueError:
        return False
    return len(blob) == 51 and blob.startswith(struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32))
