"""The lab's certificate authority: one CA per CSDEPLOY_HOME, server certificates from it.

The registry speaks TLS like a real one, so every client (the host's docker, the VMs'
dockers, curl in tests) verifies it against this CA instead of being told to skip checks.
Keys are EC P-256 (fast to make, accepted by Go and OpenSSL) and written 0600. Files are
reused while valid: a certificate is remade only when missing, near expiry, for other names,
or no longer signed by the current CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..state import state_root

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def lab_dir() -> Path:
    """``$CSDEPLOY_HOME/lab``: the lab's own files (CA, registry secrets, build cache)."""
    return state_root() / "lab"


def ensure_ca(ca_dir: Path | None = None) -> CertPair:
    """The lab CA (``ca.crt``, ``ca.key`` 0600), made on first use."""
    ca_dir = ca_dir or lab_dir() / "ca"
    pair = CertPair(ca_dir / "ca.crt", ca_dir / "ca.key")
    if pair.cert.exists() and pair.key.exists():
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        if cert.not_valid_after_utc - RENEW_BEFORE > _now():
            return pair
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csdeploy lab CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "csdeploy lab")])
    cert = (
        _builder(name, name, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(pair, cert, key)
    return pair


def ensure_server_cert(ca: CertPair, out_dir: Path, dns_names: list[str], ips: list[str],
                       stem: str = "server") -> CertPair:
    """A server certificate for ``dns_names`` and ``ips``, signed by ``ca``."""
    pair = CertPair(out_dir / f"{stem}.crt", out_dir / f"{stem}.key")
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    want = {*dns_names, *ips}
    if pair.cert.exists() and pair.key.exists() and _still_good(pair, ca_cert, want):
        return pair
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]),
                 ca_cert.subject, key.public_key(), SERVER_DAYS)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(pair, cert, key)
    return pair


def _still_good(pair: CertPair, ca_cert: x509.Certificate, want: set[str]) -> bool:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # another CA, or a broken file: make a new one
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {*san.get_values_for_type(x509.DNSName),
            *(str(i) for i in san.get_values_for_type(x509.IPAddress))}
    return have == want and cert.not_valid_after_utc - RENEW_BEFORE > _now()


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = _now()
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def _write(pair: CertPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    pair.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(pair.key, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (no readable window)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
