"""Where the cloud is: read the way `cs` reads it, falling back to the local lab.

Order: CLOUDSTACK_ENDPOINT/KEY/SECRET in the environment; then cloudstack.ini files
(~/.cloudstack.ini, ./cloudstack.ini, $CLOUDSTACK_CONFIG; section from CLOUDSTACK_REGION,
default ``cloudstack``) exactly as ``cs.read_config()`` does; then the lab's profile written by
``csdeploy lab`` ($CSDEPLOY_HOME/lab/cloudstack.ini). The lab is the embedded default.
"""

from __future__ import annotations

import configparser
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import InvalidInput
from ..secrets import register_derived
from ..state import ensure_home, state_root

INI_PATHS = ("~/.cloudstack.ini", "cloudstack.ini")
DEFAULT_IN_FLIGHT = 32
"""API calls one session keeps in flight at most (``--max-api``)."""



@dataclass(frozen=True)
class CloudConfig:
    endpoint: str
    key: str
    secret: str
    #: Where this came from, for messages: "environment", "~/.cloudstack.ini [region]", "lab".
    source: str
    verify: bool | str = True
    timeout: float = 30.0
    poll_interval: float = 2.0
    job_timeout: float = 900.0
    is_lab: bool = False
    #: A dotenv file of secret values that goes with this cloud (the lab writes one for its
    #: demo): read after the environment, before the blueprint's own secrets_file.
    secrets_file: Path | None = None
    #: Where this machine pushes images for a registry the hosts pull from, when the two
    #: differ (the lab: hosts pull from registry.lab:5000, this machine pushes to
    #: localhost:5000). Profile key ``registry_push = PULL=PUSH[, PULL=PUSH...]``.
    registry_push: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never show the secret
        return f"CloudConfig(endpoint={self.shown_endpoint!r}, key={self.key[:4]}..., source={self.source!r})"

    @property
    def shown_endpoint(self) -> str:
        """The endpoint as messages and files show it: a password in it (user:pass@host, for a
        proxy with basic auth in front of the API) is replaced by `***`."""
        return shown_endpoint(self.endpoint)


def shown_endpoint(endpoint: str) -> str:
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return "(an endpoint that is not a URL)"
    if parts.password is None:
        return endpoint
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def _protect(config: CloudConfig) -> CloudConfig:
    """Register what in the configuration is secret, so no message or log line shows it:
    the API secret key, and a password written into the endpoint (as typed and decoded)."""
    try:
        password = urlsplit(config.endpoint).password
    except ValueError:
        password = None
    register_derived([config.secret, password or "", unquote(password) if password else ""])
    return config


#: Bounds on the timing settings: a typo must not make every poll wait a day.
_SECONDS_MAX = {"timeout": 3600.0, "poll_interval": 600.0, "job_timeout": 7 * 86400.0}


def _seconds(value: str, key: str, where: str) -> float:
    """A timing setting: a finite number of seconds within its bound, else an error naming it."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= _SECONDS_MAX[key]):
        raise InvalidInput(f"{where}: expected a number of seconds, more than 0 and at most "
                                f"{_SECONDS_MAX[key]:g}, got {value!r}")
    return seconds


def lab_profile_path() -> Path:
    return state_root() / "lab" / "cloudstack.ini"


def _ini_paths() -> list[Path]:
    paths = [Path(p).expanduser() for p in INI_PATHS]
    if os.environ.get("CLOUDSTACK_CONFIG"):
        paths.append(Path(os.environ["CLOUDSTACK_CONFIG"]).expanduser())
    return paths


def _verify(value: str, dangerous_no_tls_verify: str, source: str) -> bool | str:
    """How to check the endpoint's TLS certificate, as `cs` reads ``verify`` and
    ``dangerous_no_tls_verify``: True (the system's CAs), False (not at all), or the path of a CA
    bundle (a file, or a directory of hashed certificates) to trust instead. A bundle that is not
    there is refused here, naming where it was set, rather than at the first call."""
    if dangerous_no_tls_verify.strip().lower() in ("true", "yes", "1"):
        return False
    word = value.strip()
    if word.lower() in ("", "true", "yes", "1"):
        return True
    if word.lower() in ("false", "no", "0"):
        return False
    path = Path(word).expanduser()
    if not path.exists():
        raise InvalidInput(f"{source}: no CA bundle at {path}",
                           hint="give the PEM file (or directory) of the CA that signed the API's certificate, "
                                "or true for the system's CAs")
    return str(path)


def _from_section(section: configparser.SectionProxy, source: str, is_lab: bool) -> CloudConfig:
    missing = [k for k in ("endpoint", "key", "secret") if not section.get(k)]
    if missing:
        raise InvalidInput(f"{source}: missing {', '.join(missing)}")
    verify = _verify(section.get("verify", ""), section.get("dangerous_no_tls_verify", ""), f"{source}: verify")
    return _protect(CloudConfig(
        endpoint=section["endpoint"], key=section["key"], secret=section["secret"], source=source,
        verify=verify, timeout=_seconds(section.get("timeout", "30"), "timeout", f"{source}: timeout"),
        poll_interval=_seconds(section.get("poll_interval", "0.25" if is_lab else "2.0"), "poll_interval",
                               f"{source}: poll_interval"),
        job_timeout=_seconds(section.get("job_timeout", "900"), "job_timeout", f"{source}: job_timeout"),
        is_lab=is_lab,
        secrets_file=Path(section["secrets_file"]).expanduser() if section.get("secrets_file") else None,
        registry_push=parse_registry_push(section.get("registry_push", ""), source),
    ))


def read_cloud_config(region: str | None = None) -> CloudConfig:
    env = os.environ
    if env.get("CLOUDSTACK_ENDPOINT") and not env.get("CLOUDSTACK_OVERRIDES"):
        missing = [k for k in ("CLOUDSTACK_KEY", "CLOUDSTACK_SECRET") if not env.get(k)]
        if missing:
            raise InvalidInput(
                f"CLOUDSTACK_ENDPOINT is set but {' and '.join(missing)} is not",
                hint="export the API key and secret key of your CloudStack user",
            )
        return _protect(CloudConfig(
            endpoint=env["CLOUDSTACK_ENDPOINT"], key=env["CLOUDSTACK_KEY"], secret=env["CLOUDSTACK_SECRET"],
            source="environment (CLOUDSTACK_ENDPOINT)",
            verify=_verify(env.get("CLOUDSTACK_VERIFY", ""), env.get("CLOUDSTACK_DANGEROUS_NO_TLS_VERIFY", ""),
                           "CLOUDSTACK_VERIFY"),
            poll_interval=_seconds(env.get("CLOUDSTACK_POLL_INTERVAL", "2.0"), "poll_interval",
                                   "CLOUDSTACK_POLL_INTERVAL"),
            job_timeout=_seconds(env.get("CLOUDSTACK_JOB_TIMEOUT", "900"), "job_timeout", "CLOUDSTACK_JOB_TIMEOUT"),
        ))
    ini = [p for p in _ini_paths() if p.exists()]
    if ini:
        parser = configparser.ConfigParser()
        parser.read(ini)  # later files win, as in cs
        name = region or env.get("CLOUDSTACK_REGION", "cloudstack")
        if not parser.has_section(name):
            raise InvalidInput(
                f"no [{name}] section in {', '.join(str(p) for p in ini)}",
                hint="set CLOUDSTACK_REGION to one of: " + ", ".join(parser.sections()),
            )
        config = _from_section(parser[name], f"{ini[-1]} [{name}]", is_lab=False)
        return _apply_overrides(config, env.get("CLOUDSTACK_OVERRIDES", ""))
    lab = lab_profile_path()
    if lab.exists():
        parser = configparser.ConfigParser()
        parser.read(lab)
        if parser.has_section("lab"):
            return _from_section(parser["lab"], f"the lab ({lab})", is_lab=True)
    tried = ", ".join(["CLOUDSTACK_ENDPOINT", *(str(p) for p in _ini_paths()), str(lab)])
    raise InvalidInput(
        f"no CloudStack configured (looked at {tried})",
        hint="export CLOUDSTACK_ENDPOINT, CLOUDSTACK_KEY and CLOUDSTACK_SECRET, write ~/.cloudstack.ini, "
             "or start the local lab with `csdeploy lab simulator --write-profile`",
    )


def _apply_overrides(config: CloudConfig, overrides: str) -> CloudConfig:
    """cs's CLOUDSTACK_OVERRIDES: the listed keys come from CLOUDSTACK_<KEY> over the ini file."""
    import re

    changes: dict[str, object] = {}
    for key in {k.lower() for k in re.split(r"\W+", overrides) if k}:
        value = os.environ.get(f"CLOUDSTACK_{key.upper()}")
        if value is None:
            continue
        if key in ("endpoint", "key", "secret"):
            changes[key] = value
        elif key in ("timeout", "poll_interval", "job_timeout"):
            changes[key] = _seconds(value, key, f"CLOUDSTACK_{key.upper()}")
        elif key == "verify":
            changes[key] = _verify(value, "", "CLOUDSTACK_VERIFY")
        elif key == "dangerous_no_tls_verify" and _verify("", value, key) is False:
            changes["verify"] = False
    if changes:
        changes["source"] = config.source + " + CLOUDSTACK_OVERRIDES"
    return _protect(dataclasses.replace(config, **changes)) if changes else config  # type: ignore[arg-type]


def write_lab_profile(endpoint: str, key: str, secret: str, poll_interval: float = 0.25) -> Path:
    """Make the lab the default cloud for csdeploy (used when nothing else is configured).
    The lab adds its ``secrets_file`` to it (lab/profile.py): the product never imports the lab."""
    path = lab_profile_path()
    ensure_home()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    parser = configparser.ConfigParser()
    parser["lab"] = {"endpoint": endpoint, "key": key, "secret": secret, "poll_interval": str(poll_interval),
                     "timeout": "30"}
    old = configparser.ConfigParser()
    old.read(path)
    if old.has_section("lab") and old["lab"].get("registry_push"):  # the lab's `lab up` wrote it
        parser["lab"]["registry_push"] = old["lab"]["registry_push"]
    _write_private(path, parser)
    return path


REGISTRY_PUSH_ENV = "CSDEPLOY_REGISTRY_PUSH"


def parse_registry_push(text: str, source: str) -> tuple[tuple[str, str], ...]:
    """``registry.lab:5000=localhost:5000, ...`` -> pairs (pull address, push address)."""
    pairs = []
    for item in (i.strip() for i in text.split(",")):
        pull, eq, push = item.partition("=")
        if not item:
            continue
        if not eq or not pull.strip() or not push.strip():
            raise InvalidInput(f"{source}: registry_push: expected PULL_REGISTRY=PUSH_REGISTRY, got {item!r}",
                               hint="e.g. registry_push = registry.lab:5000=localhost:5000")
        pairs.append((pull.strip(), push.strip()))
    return tuple(pairs)


def registry_push_map(config: CloudConfig | None) -> dict[str, str]:
    """Push addresses by registry: the cloud profile's, then ``$CSDEPLOY_REGISTRY_PUSH`` (which wins)."""
    out = dict(config.registry_push) if config is not None else {}
    out.update(parse_registry_push(os.environ.get(REGISTRY_PUSH_ENV, ""), REGISTRY_PUSH_ENV))
    return out


def record_lab_registry_push(pull: str, push: str) -> None:
    """The lab says where this machine pushes for its registry (kept when the profile is rewritten)."""
    path = lab_profile_path()
    parser = configparser.ConfigParser()
    parser.read(path)
    if not parser.has_section("lab"):
        return
    if parser["lab"].get("registry_push") == f"{pull}={push}":
        return
    parser["lab"]["registry_push"] = f"{pull}={push}"
    _write_private(path, parser)


def _write_private(path: Path, parser: configparser.ConfigParser) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        parser.write(fh)
    os.replace(tmp, path)
