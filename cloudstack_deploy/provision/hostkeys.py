"""SSH host keys that csdeploy makes for its VMs.

csdeploy generates each VM's host key itself and hands it over in the VM's user data, which
cloud-init installs before sshd starts. The key is therefore known before the first SSH
contact: that contact is verified like every later one, with no trust-on-first-use window
in which a man in the middle could slip in its own key.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class HostKey:
    """One host key pair: the private half goes to the VM, the public half to known_hosts."""

    private_openssh: str
    """The private key in OpenSSH format (as ``ssh_keys.ed25519_private`` wants it)."""
    public_line: str
    """The public key as an OpenSSH line ``ssh-ed25519 AAAA...`` (no trailing newline)."""

    def __repr__(self) -> str:  # never print the private half by accident
        return f"HostKey(public_line={self.public_line!r})"


def generate_host_key(comment: str | None = None) -> HostKey:
    """A fresh ed25519 host key (ed25519: small enough for GET user data, fast, modern)."""
    import asyncssh  # here, not at the top: a command that makes no VM never pays for SSH

    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    return HostKey(
        private_openssh=key.export_private_key("openssh").decode(),
        public_line=key.export_public_key("openssh").decode().strip(),
    )


def key_fingerprint(public_line: str) -> str:
    """CloudStack's fingerprint of an SSH public key: MD5 of the key blob, colon hex."""
    blob = base64.b64decode(public_line.split()[1])
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
