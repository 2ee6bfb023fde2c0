"""The lab's secret values and where the product finds them: ``secrets_file`` in its profile.

`csdeploy lab cert HOST` adds a certificate from the lab CA (and its key) to those values.

Product code never imports the lab. The lab writes its secret values (registry password, a
PostgreSQL password) to ``$CSDEPLOY_HOME/lab/secrets.env`` (0600) and names that file in the
cloud profile it writes (``$CSDEPLOY_HOME/lab/cloudstack.ini``), as ``secrets_file``: the
product reads secret values from there after the environment, as from any profile.
"""

from __future__ import annotations

import configparser
import io
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from ..blueprint_schema import SECRET_NAME_RE
from ..errors import InvalidInput
from ..secrets import read_dotenv
from .ca import ensure_ca, ensure_server_cert, lab_dir, write_private


def secrets_path() -> Path:
    """``$CSDEPLOY_HOME/lab/secrets.env``: the lab's secret values, 0600."""
    return lab_dir() / "secrets.env"


def read_secrets(path: Path | None = None) -> dict[str, str]:
    """NAME=value lines of the lab's secrets file ({} when there is none), read as the product
    reads them (quoted values, escapes: a PEM certificate is one double-quoted line)."""
    target = path or secrets_path()
    if not target.is_file():
        return {}
    return read_dotenv(target)


def _dotenv_line(name: str, value: str) -> str:
    if value and all(c.isalnum() or c in "@:/%._-+=~^,!?*&()[]{}<>|;" for c in value):
        return f"{name}={value}\n"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n")
    return f'{name}="{escaped}"\n'


def update_secrets(values: dict[str, str]) -> bool:
    """Set ``values`` in the lab's secrets file (0600), keeping every other entry; returns
    whether anything changed."""
    have = read_secrets()
    if all(have.get(k) == v for k, v in values.items()):
        return False
    merged = {**have, **values}
    body = "# written by `csdeploy lab up` and `csdeploy lab cert`: secret values for the lab's blueprints\n"
    write_private(secrets_path(), (body + "".join(_dotenv_line(k, v) for k, v in merged.items())).encode())
    return True


def add_secrets_file(profile: Path) -> bool:
    """Name the lab's secrets file in every section of ``profile`` when that file exists.

    Rewrites the profile atomically, 0600 (it holds the API secret); returns whether it
    changed. A profile without sections, or no secrets file yet, is left alone.
    """
    secrets = secrets_path()
    if not secrets.is_file() or not profile.is_file():
        return False
    parser = configparser.ConfigParser()
    parser.read(profile)
    value = str(secrets.resolve())
    sections = [s for s in parser.sections() if parser[s].get("secrets_file") != value]
    if not sections:
        return False
    for section in sections:
        parser[section]["secrets_file"] = value
    text = io.StringIO()
    parser.write(text)
    write_private(profile, text.getvalue().encode())
    return True


@dataclass(frozen=True)
class IssuedCertificate:
    host: str
    cert: Path
    key: Path
    ca: Path
    cert_secret: str
    key_secret: str


_DNS = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def issue_certificate(host: str, *, ips: tuple[str, ...] = (), cert_secret: str = "TLS_CERTIFICATE",
                      key_secret: str = "TLS_PRIVATE_KEY") -> IssuedCertificate:
    """A certificate for ``host`` (and ``ips``) signed by the lab CA, its PEM and its key's put
    in the lab's secrets file under ``cert_secret`` and ``key_secret``: what a blueprint's
    `proxy.ssl: {certificate_pem: ..., private_key_pem: ...}` names."""
    if not _DNS.fullmatch(host):
        raise InvalidInput(f"{host!r} is not a host name", hint="e.g. csdeploy lab cert demo.lab")
    for name in (cert_secret, key_secret):
        if not SECRET_NAME_RE.fullmatch(name):
            raise InvalidInput(f"{name!r} is not a secret name", hint="use UPPER_SNAKE_CASE, e.g. TLS_CERTIFICATE")
    try:
        addresses = [str(ipaddress.ip_address(i)) for i in ips]
    except ValueError as exc:
        raise InvalidInput(f"--ip: {exc}") from None
    ca = ensure_ca()
    pair = ensure_server_cert(ca, lab_dir() / "certs", [host], addresses, stem=host)
    update_secrets({cert_secret: pair.cert.read_text(), key_secret: pair.key.read_text()})
    return IssuedCertificate(host, pair.cert, pair.key, ca.cert, cert_secret, key_secret)
