"""What each container gets: names, labels and the environment (the app's env contract).

Apps find their accessories through variables, with CloudStack's private addresses:
POSTGRES_HOST/PORT/DB/USER/PASSWORD and a URL-encoded DATABASE_URL for a PostgreSQL
accessory, REDIS_URL for a Redis one, plus the blueprint's clear env and secrets. Anything
derived from a secret is itself secret: it only ever goes into a 0600 env file.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from .. import images
from ..accessories import kind_of
from ..blueprint_schema import Accessory, Blueprint, EnvSpec, Role, Volume
from ..errors import InvalidInput
from ..inventory import Inventory

VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_version(version: str) -> str:
    if not VERSION_RE.fullmatch(version):
        raise InvalidInput(f"version {version!r} is not usable as an image tag and container name",
                           hint="use letters, digits, '.', '_' and '-' (at most 64), e.g. a git SHA")
    return version


def container_name(service: str, role: str, version: str) -> str:
    return f"{service}-{role}-{version}"


def accessory_container(service: str, accessory: str) -> str:
    return f"{service}-{accessory}"


def proxy_service(service: str, role: str) -> str:
    return f"{service}-{role}"


def labels(service: str, env: str, role: str, version: str | None = None) -> dict[str, str]:
    """The labels of an app container (Kamal's names); without ``version``: the role's filter."""
    out = {"service": service, "role": role, "destination": env}
    if version is not None:
        out["version"] = version
    return out


def image_ref(image: str, version: str) -> str:
    """What ``image`` runs at ``version``: pinned (tag or digest) as written, else tagged with it.
    (A reference the blueprint's rules would refuse is only tagged: builders never guess.)"""
    try:
        return images.at_version(image, version)
    except ValueError:
        return f"{image}:{version}"


def image_repository(image: str) -> str:
    """``image`` without tag or digest (what prune looks for on a host)."""
    try:
        return images.repository(image)
    except ValueError:
        return image


def volume_name(service: str, volume: Volume) -> str:
    """The Docker volume of a role's kept files (a host directory is its own path)."""
    return volume.source if volume.source is not None else f"{service}-{volume.name}"


def volume_directory(role: Role, volume: Volume) -> str | None:
    """Where a named volume keeps its files on the host: on the role's data disk when it has one."""
    if volume.source is not None or role.disk is None:
        return None
    return f"{role.disk.mount}/volumes/{volume.name}"


@dataclass
class ContainerEnv:
    clear: dict[str, str] = field(default_factory=dict)
    secret: dict[str, str] = field(default_factory=dict)

    def env_file(self) -> str:
        """Docker --env-file content (one KEY=VALUE per line; values cannot hold newlines)."""
        lines = []
        for k, v in sorted(self.secret.items()):
            if "\n" in v:
                raise InvalidInput(f"secret {k} contains a newline, which docker env files cannot carry")
            lines.append(f"{k}={v}")
        return "\n".join(lines) + ("\n" if lines else "")

    def fingerprint(self) -> str:
        """A hash of the whole env (secrets included) that reveals nothing: for change detection."""
        data = json.dumps([sorted(self.clear.items()), sorted(self.secret.items())]).encode()
        return hashlib.sha256(data).hexdigest()[:16]


def _resolve(spec: EnvSpec, secrets: dict[str, str]) -> ContainerEnv:
    return ContainerEnv(clear=dict(spec.clear), secret={name: secrets[name] for name in spec.secret})


def accessory_env(acc: Accessory, secrets: dict[str, str]) -> ContainerEnv:
    return _resolve(acc.env, secrets)


def links(bp: Blueprint, inventory: Inventory, secrets: dict[str, str]) -> ContainerEnv:
    """The variables that point apps at their accessories (private addresses)."""
    out = ContainerEnv()
    for acc in bp.accessories.values():
        host = inventory.accessory_host(acc.name)
        if host is None or acc.port is None:
            continue
        address = host.private_ip
        kind = kind_of(acc.image)
        if kind is not None and kind.name == "postgres":
            env = accessory_env(acc, secrets)
            user = env.clear.get("POSTGRES_USER", "postgres")
            db = env.clear.get("POSTGRES_DB", user)
            password = env.secret.get("POSTGRES_PASSWORD") or env.clear.get("POSTGRES_PASSWORD", "")
            out.clear.update(POSTGRES_HOST=address, POSTGRES_PORT=str(acc.port), POSTGRES_DB=db, POSTGRES_USER=user)
            auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
            out.secret["POSTGRES_PASSWORD"] = password
            out.secret["DATABASE_URL"] = f"postgresql://{auth}@{address}:{acc.port}/{quote(db, safe='')}"
        elif kind is not None and "REDIS_URL" in kind.provides:
            out.clear["REDIS_URL"] = f"redis://{address}:{acc.port}/0"
    return out


def role_env(bp: Blueprint, role: str, inventory: Inventory, secrets: dict[str, str],
             version: str) -> ContainerEnv:
    """The role's environment: links to accessories, then the blueprint's env (which wins)."""
    env = links(bp, inventory, secrets)
    own = _resolve(bp.roles[role].env, secrets)
    env.clear.update(own.clear)
    env.secret.update(own.secret)
    for k in own.clear:
        env.secret.pop(k, None)
    for k in own.secret:
        env.clear.pop(k, None)
    env.clear.setdefault("CSDEPLOY_VERSION", version)
    env.clear.setdefault("CSDEPLOY_ROLE", role)
    return env
