"""Files the docker backend puts into a VM before it boots: the cloud-init seed and the lab CA.

CloudStack hands a VM its user data and SSH key through the virtual router's metadata
service; cloud-init reads them at first boot. The lab gives cloud-init the same facts through
its NoCloud datasource (``/var/lib/cloud/seed/nocloud/{meta-data,user-data}``), so the VM
configures itself exactly as on a real cloud: host name, the keypair's key, the user data's
host key, write_files, runcmd. The files go in as one tar stream (``docker cp -``), which
also creates the directories.
"""

from __future__ import annotations

import base64
import binascii
import io
import tarfile
import time
from pathlib import Path
from typing import Any

import yaml

from .engine import Simulator
from .guest import keypair_names

SEED_DIR = "var/lib/cloud/seed/nocloud"
#: Where the lab CA goes: the system trust store (update-ca-certificates runs at boot, see the
#: template's csdeploy-lab-ca.service) and Docker's per-registry trust.
CA_PATHS = ("usr/local/share/ca-certificates/csdeploy-lab.crt",
            "etc/docker/certs.d/registry.lab:5000/ca.crt")
EMPTY_USERDATA = b"#cloud-config\n{}\n"


def public_keys(sim: Simulator, vm: dict[str, Any]) -> list[str]:
    """The public keys of the VM's keypair(s), as CloudStack's metadata serves them."""
    names = set(keypair_names(vm))
    return [kp["_publickey"] for kp in sim.col("keypairs").values()
            if kp.get("name") in names and kp.get("_publickey") and not kp.get("_removed")]


def meta_data(sim: Simulator, vm: dict[str, Any]) -> bytes:
    """NoCloud meta-data: the instance id (the VM id: cloud-init's per-instance modules run once
    per VM, not once per boot), the host name and the keypair's public keys."""
    data: dict[str, Any] = {"instance-id": vm["id"], "local-hostname": vm.get("name") or vm["id"]}
    keys = public_keys(sim, vm)
    if keys:
        data["public-keys"] = keys
    return yaml.safe_dump(data, sort_keys=False).encode()


def user_data(vm: dict[str, Any]) -> bytes:
    """The VM's user data as cloud-init reads it (decoded from base64; gzip is left to it)."""
    b64 = vm.get("_userdata")
    if not b64:
        return EMPTY_USERDATA
    try:
        return base64.b64decode(b64, validate=False)
    except (binascii.Error, ValueError):  # deploy validated it; keep the VM bootable anyway
        return EMPTY_USERDATA


def seed_tar(sim: Simulator, vm: dict[str, Any], ca_file: Path | None) -> bytes:
    """A tar (for ``docker cp - VM:/``) with the NoCloud seed and, if it exists, the lab CA."""
    files: dict[str, tuple[bytes, int]] = {
        f"{SEED_DIR}/meta-data": (meta_data(sim, vm), 0o600),
        f"{SEED_DIR}/user-data": (user_data(vm), 0o600),
    }
    if ca_file is not None and ca_file.is_file():
        cert = ca_file.read_bytes()
        for path in CA_PATHS:
            files[path] = (cert, 0o644)
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            tar.addfile(info)
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), mode, now
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()
