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
    """A fresh ed25519 host key (ed25519: small enough for GET user data, fast, modern).

    Made with cryptography's primitives (34 ms of imports here), not asyncssh (0.2 s): the key
    is made just before a VM is asked for, and SSH is needed only once the VM has booted (its
    modules load meanwhile, see provision.run). ``comment`` ends the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode().strip()
    return HostKey(private_openssh=private, public_line=f"{public} {comment}" if comment else public)


def public_line_of_private(data: bytes) -> str:
    """``type base64`` of the private key ``data``: cryptography reads OpenSSH and PEM keys
    (a few milliseconds of imports); asyncssh, the other formats it knows (a fifth of a second
    more, paid only for them). ValueError when neither can (an encrypted key, not a key)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,  # type: ignore[union-attr]
                                               serialization.PublicFormat.OpenSSH)
        return " ".join(public.decode().split()[:2])
    except (ValueError, TypeError, UnsupportedAlgorithm, AttributeError):
        pass
    import asyncssh

    try:
        line = asyncssh.import_private_key(data).export_public_key("openssh").decode()
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    return " ".join(line.split()[:2])


def key_fingerprint(public_line: str) -> str:
    """CloudStack's fingerprint of an SSH public key: MD5 of the key blob, colon hex."""
    blob = base64.b64decode(public_line.split()[1])
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
