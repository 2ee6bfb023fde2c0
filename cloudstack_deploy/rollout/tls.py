"""The certificates a blueprint gives kamal-proxy, checked here before any host changes.

A certificate that does not match its key would make kamal-proxy refuse the deploy on the
first host (or, worse, after a restart); a PEM that does not parse would do the same. Both are
invalid input (exit 2), named by their secret names, never their values. A certificate that
does not name the proxy's host, or has expired, still deploys (a test setup may want exactly
that) but is reported as a warning.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..blueprint_schema import Blueprint
from ..errors import InvalidInput


@dataclass(frozen=True)
class RoleCertificate:
    role: str
    certificate_pem: str
    private_key_pem: str
    warnings: tuple[str, ...] = field(default=())


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
                if isinstance(a.value, str)]
    return [*san.get_values_for_type(x509.DNSName), *(str(i) for i in san.get_values_for_type(x509.IPAddress))]


def check(bp: Blueprint, secrets: dict[str, str], now: dt.datetime | None = None) -> list[RoleCertificate]:
    """Every proxy role's certificate and key, parsed and matched; InvalidInput otherwise."""
    out = []
    for role in bp.roles.values():
        if role.proxy is None or role.proxy.certificate is None:
            continue
        names = role.proxy.certificate
        where = f"roles.{role.name}.proxy.ssl"
        cert_pem, key_pem = secrets.get(names.certificate_pem, ""), secrets.get(names.private_key_pem, "")
        try:
            certs = x509.load_pem_x509_certificates(cert_pem.encode())
        except ValueError:
            raise InvalidInput(f"{where}: secret {names.certificate_pem} is not a PEM certificate",
                               hint="put the certificate (and its chain) in PEM form, -----BEGIN CERTIFICATE-----") from None
        try:
            key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        except (ValueError, TypeError):
            raise InvalidInput(f"{where}: secret {names.private_key_pem} is not an unencrypted PEM private key",
                               hint="kamal-proxy reads the key without a passphrase: "
                                    "openssl pkey -in KEY -out PLAIN") from None
        leaf = certs[0]
        if leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
                != key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo):
            raise InvalidInput(f"{where}: the certificate in {names.certificate_pem} does not match the private key "
                               f"in {names.private_key_pem}; nothing was changed on the hosts",
                               hint="give the key the certificate was issued for (or the certificate of this key)")
        warnings = []
        have = _names(leaf)
        for host in role.proxy.hosts:
            if not any(fnmatch.fnmatchcase(host, n) if n.startswith("*.") else host == n for n in have):
                warnings.append(f"{where}: the certificate names {', '.join(have) or 'no host'}, not {host}: "
                                "clients that verify it will refuse")
        moment = now or dt.datetime.now(dt.UTC)
        if leaf.not_valid_after_utc < moment:
            warnings.append(f"{where}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
        out.append(RoleCertificate(role.name, cert_pem, key_pem, tuple(warnings)))
    return out
