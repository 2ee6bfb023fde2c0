"""What a loaded blueprint is: typed, frozen records with every default filled in.

Everything downstream (plan, provision, rollout) reads these records and never the YAML, so
a default lives in exactly one place (here) and a typo in the file can never reach the cloud.
Loading and validation live in `blueprint.py`; this module has no I/O.

The vocabulary is Kamal's (service, image, roles, accessories, registry, env clear/secret,
proxy) plus CloudStack's own names for what it provisions (zone, template, service and
disk offerings, network offering).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # blueprint_dns builds on blueprint_rules, which imports this module
    from .blueprint_dns import DnsSpec

#: Names that end up in CloudStack VM names `<env>-<role>-<n>` and container names: a DNS
#: label's rules, lower case only (CloudStack lower-cases host names anyway).
NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
SERVICE_NAME_MAX = 30
ROLE_NAME_MAX = 20
#: Secret names are environment variable names in UPPER_SNAKE_CASE. Requiring the case is
#: what lets validation tell a secret *name* from a pasted secret *value*.
SECRET_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

DEFAULT_NETWORK_OFFERING = "DefaultIsolatedNetworkOfferingWithSourceNatService"
DEFAULT_DISK_OFFERING = "Custom"
PUBLIC_ACCESS_MODES = ("static_nat", "port_forwarding")

#: Upper bounds that keep a typo (or `--set roles.web.count=100000000000`) from turning into
#: a hang, an overflow or a bill; each message states its bound.
MAX_ROLE_COUNT = 1000
MAX_DISK_GB = 65536
MIN_ROOT_DISK_GB = 1
#: roles.X.placement: spread (a host anti-affinity group per role of 2+ VMs) or any.
PLACEMENTS = ("spread", "any")
MAX_SECONDS = 86400
MAX_DURATION_DAYS = 3650

#: Data disk mount points: plain path segments only, so a mount can be written into the
#: disk unit's ExecStart, /etc/fstab and shell scripts without any quoting to get wrong.
_MOUNT_RE = re.compile(r"(/[A-Za-z0-9._-]+)+")
MOUNT_MAX = 200
#: Mounting a data disk over these would hide the system; a blueprint typo must not do that.
SYSTEM_DIRS = frozenset({"/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc",
                         "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib",
                         "/var/lib/docker"})
#: Kernel and runtime filesystems: nothing can be mounted (or stays mounted) below them.
_VIRTUAL_DIRS = ("/proc/", "/sys/", "/dev/", "/run/")


def mount_point_problem(mount: str) -> str | None:
    """Why ``mount`` cannot be a data disk's mount point, or None if it can.

    The one rule for both sides: blueprint validation refuses what the provisioner would
    refuse, so a bad mount is an exit-2 error before anything exists in the cloud.
    """
    if not _MOUNT_RE.fullmatch(mount):
        return "use an absolute path made of letters, digits, '.', '_', '-' and '/' (e.g. /data/db)"
    if len(mount) > MOUNT_MAX:
        return f"the path is {len(mount)} characters; at most {MOUNT_MAX}"
    if posixpath.normpath(mount) != mount or "/." in mount:
        return "the path must be normalized: no '.', '..', '//' or hidden (dot) directories"
    if mount in SYSTEM_DIRS:
        return f"{mount} is a system directory: a disk mounted there would hide it"
    if mount.startswith(_VIRTUAL_DIRS):
        return f"{mount} is inside a kernel or runtime filesystem"
    return None


_DURATION_PART = re.compile(r"(\d+)([wdhm])")
_DURATION_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60}


def parse_duration(text: str) -> timedelta:
    """Parse a TTL such as `30m`, `12h`, `2d` or `1d12h` (units w, d, h, m).

    Shared by the blueprint's `ttl` and the `--ttl` flag so both accept the same words.
    Raises ValueError for anything else, including a zero duration and one longer than
    MAX_DURATION_DAYS (an expiry must stay a date: `99999999999999w` is none).
    """
    compact = text.strip().lower()
    shown = text if len(text) <= 40 else text[:37] + "..."
    parts = _DURATION_PART.findall(compact) if len(compact) <= 40 else []
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"expected a duration like 30m, 12h or 2d, got {shown!r}")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"a duration must be longer than zero, got {shown!r}")
    if seconds > MAX_DURATION_DAYS * 86400:
        raise ValueError(f"a duration may be at most {MAX_DURATION_DAYS}d (10 years), got {shown!r}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The compact form `parse_duration` reads back, e.g. 36 hours -> `1d12h`."""
    remaining = int(delta.total_seconds()) // 60 * 60
    out = []
    for unit, size in _DURATION_UNITS.items():
        if unit != "w" and remaining >= size:
            out.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(out) or "0m"


@dataclass(frozen=True, kw_only=True)
class Healthcheck:
    """How to tell a new container is ready.

    Proxy roles use `path` (kamal-proxy GETs it until 2xx); other roles use `cmd` (a shell
    command run inside the container) or, without one, "still running after readiness_delay".
    Times are seconds.
    """

    path: str | None = None
    cmd: str | None = None
    interval: float = 1
    timeout: float = 5
    readiness_delay: float = 7


DEFAULT_HEALTH_PATH = "/up"
"""What kamal-proxy GETs on a proxy role unless the blueprint says otherwise (Kamal's default)."""


def _proxy_healthcheck() -> Healthcheck:
    return Healthcheck(path=DEFAULT_HEALTH_PATH)


@dataclass(frozen=True, kw_only=True)
class Certificate:
    """A TLS certificate and its private key for kamal-proxy, as the NAMES of two secrets
    holding PEM text (Kamal's `proxy.ssl.certificate_pem` / `private_key_pem`)."""

    certificate_pem: str
    private_key_pem: str


@dataclass(frozen=True, kw_only=True)
class Proxy:
    """kamal-proxy settings for a role that serves HTTP; the defaults are Kamal's.

    `ssl` without `certificate`: kamal-proxy asks Let's Encrypt for one (needs the internet);
    with one: the given certificate is served on every host of the role.
    """

    app_port: int = 80
    hosts: tuple[str, ...] = ()
    ssl: bool = False
    certificate: Certificate | None = None
    healthcheck: Healthcheck = field(default_factory=_proxy_healthcheck)
    deploy_timeout: float = 30
    drain_timeout: float = 30
    response_timeout: float = 30
    #: One public address with a CloudStack load-balancer rule per port across the role's VMs:
    #: None (the default) means "when the role has more than one VM"; True/False force it.
    load_balancer: bool | None = None
    lb_algorithm: str = "roundrobin"  # CloudStack's names: roundrobin | leastconn | source
    #: Kamal's proxy options, passed to `kamal-proxy deploy` as its flags of the same meaning.
    path_prefix: tuple[str, ...] = ()        # serve below these paths only (--path-prefix)
    strip_path_prefix: bool = True           # the app sees paths without the prefix
    forward_headers: bool | None = None      # X-Forwarded-*: None = kamal-proxy's default (on without TLS)
    ssl_redirect: bool = True                # with ssl: HTTP answers 301 to HTTPS
    buffering: Buffering = field(default_factory=lambda: Buffering())

    def public_path(self, path: str) -> str:
        """The path a request through kamal-proxy takes to reach the app's ``path``: below the
        first path_prefix when kamal-proxy strips it (the app sees ``path``), else ``path``."""
        if not self.path_prefix or not self.strip_path_prefix:
            return path
        return self.path_prefix[0].rstrip("/") + path


@dataclass(frozen=True, kw_only=True)
class Buffering:
    """kamal-proxy's request/response buffering (Kamal's `proxy.buffering`); sizes in bytes,
    0 = no limit. A request body over `max_request_body` is answered 413."""

    requests: bool = True
    responses: bool = True
    max_request_body: int = 0
    max_response_body: int = 0
    memory: int | None = None


@dataclass(frozen=True, kw_only=True)
class Volume:
    """A named Docker volume mounted at `path` in every container of a role (its kept files).

    It lives on the role's data disk when the role has one (else on the VM's own disk), so
    deploys, rollbacks and proxy reboots keep it. `source` is a directory below the role's
    disk mount instead of a named volume (bind mount). `per_host`: the role has several VMs
    and each is meant to keep its own copy.
    """

    name: str
    path: str
    readonly: bool = False
    source: str | None = None
    per_host: bool = False


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Container limits: `cpus` (fraction of CPUs), memory sizes in bytes."""

    cpus: float | None = None
    memory: int | None = None
    memory_reservation: int | None = None


@dataclass(frozen=True, kw_only=True)
class Logging:
    """Docker's log driver and its options (`--log-driver`, `--log-opt`)."""

    driver: str | None = None
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ContainerSettings:
    """How each container of a role or accessory is run, beyond image, env and command.

    `options` are allow-listed `docker run` flags, normalised to (flag, value) pairs
    (value None for a flag without one, e.g. `init`).
    """

    resources: Resources | None = None
    options: tuple[tuple[str, str | None], ...] = ()
    restart: str = "unless-stopped"
    logging: Logging | None = None


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A scheduled job of a role: `cron` (five fields), the command (the role's when None)."""

    name: str
    cron: str
    cmd: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Readiness:
    """How a non-proxy role's new container is judged ready: ``cmd`` run inside it (docker exec)
    until it exits 0, for at most ``timeout`` seconds. Instead of healthcheck.readiness_delay
    (a fixed wait): ready as soon as the app says so, refused when it never does."""

    cmd: tuple[str, ...]
    timeout: float = 30


#: A snapshot schedule's `every`, in CloudStack's interval names (DateUtil.IntervalType).
SNAPSHOT_INTERVALS = ("hourly", "daily", "weekly", "monthly")
#: Days of the week as CloudStack numbers them in a WEEKLY schedule (java.util.Calendar: 1 is Sunday).
WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
#: snapshot.max.hourly/daily/weekly/monthly: CloudStack's default limit of kept snapshots.
MAX_KEEP_SNAPSHOTS = 8
DEFAULT_SNAPSHOT_TIMEZONE = "Etc/UTC"


@dataclass(frozen=True, kw_only=True)
class SnapshotSchedule:
    """A recurring snapshot of a data disk (a CloudStack snapshot policy): `every` interval at
    `hour`:`minute` (`day`: of the week 1-7, Sunday 1, or of the month 1-28), in `timezone`;
    the cloud keeps the `keep` newest."""

    every: str
    keep: int
    minute: int = 0
    hour: int = 0
    day: int = 1
    timezone: str = DEFAULT_SNAPSHOT_TIMEZONE

    @property
    def interval(self) -> str:
        """CloudStack's `intervaltype`."""
        return self.every.upper()

    @property
    def schedule(self) -> str:
        """CloudStack's `schedule`: MM (hourly), MM:HH (daily), MM:HH:DD (weekly, monthly)."""
        parts = [self.minute, self.hour, self.day][:{"hourly": 1, "daily": 2}.get(self.every, 3)]
        return ":".join(f"{p:02d}" if i < 2 else str(p) for i, p in enumerate(parts))

    def describe(self) -> str:
        at = f"{self.hour:02d}:{self.minute:02d}"
        if self.every == "hourly":
            when = f"at minute {self.minute}"
        elif self.every == "weekly":
            when = f"on {WEEKDAYS[self.day - 1]} at {at}"
        elif self.every == "monthly":
            when = f"on day {self.day} at {at}"
        else:
            when = f"at {at}"
        return f"{self.every} {when} {self.timezone}, keep {self.keep}"


@dataclass(frozen=True, kw_only=True)
class Disk:
    """A CloudStack data volume attached to the VM and mounted at `mount`; size in GB;
    `snapshots`: its recurring snapshot schedules (at most one per interval)."""

    size: int
    mount: str
    disk_offering: str = DEFAULT_DISK_OFFERING
    snapshots: tuple[SnapshotSchedule, ...] = ()


@dataclass(frozen=True, kw_only=True)
class EnvSpec:
    """Container environment: `clear` values are written as-is, `secret` lists secret names
    whose values are only ever put in 0600 env files on the host."""

    clear: dict[str, str] = field(default_factory=dict)
    secret: tuple[str, ...] = ()

    def merged_over(self, base: EnvSpec) -> EnvSpec:
        """This env layered on `base` (the blueprint-wide env): our values win."""
        secret = base.secret + tuple(s for s in self.secret if s not in base.secret)
        return EnvSpec(clear={**base.clear, **self.clear}, secret=secret)


@dataclass(frozen=True, kw_only=True)
class Role:
    """A group of identical VMs running the same app container (`web`, `worker`, ...).

    `image` and `service_offering` are already resolved from the blueprint-wide defaults;
    `env` already includes the blueprint-wide env. `healthcheck` is set for non-proxy roles
    only (proxy roles are checked by kamal-proxy through `proxy.healthcheck`).
    """

    name: str
    count: int = 1
    image: str
    service_offering: str
    cmd: tuple[str, ...] | None = None
    env: EnvSpec = field(default_factory=EnvSpec)
    proxy: Proxy | None = None
    disk: Disk | None = None
    healthcheck: Healthcheck | None = None
    volumes: tuple[Volume, ...] = ()
    container: ContainerSettings = field(default_factory=ContainerSettings)
    #: How `csdeploy build` makes this role's own image (None: the blueprint's `build`, when
    #: the role runs the blueprint's image).
    build: Build | None = None
    schedules: tuple[Schedule, ...] = ()
    #: A non-proxy role's readiness probe (None: its image's HEALTHCHECK or healthcheck.cmd
    #: when it has one, else healthcheck.readiness_delay).
    readiness: Readiness | None = None
    #: "spread": a role of 2+ VMs gets a host anti-affinity group (its VMs on different hosts).
    placement: str = "spread"
    #: The VMs' root disk in GB (deployVirtualMachine rootdisksize); None: the template's size.
    root_disk_gb: int | None = None
    #: Another role whose VMs this one runs on (no VMs of its own; a proxy role shares their
    #: kamal-proxy, told apart by proxy.host/path_prefix). Its count, offering, disk and
    #: placement are that role's.
    run_on: str | None = None

    @property
    def vm_role(self) -> str:
        """The role that owns the VMs this role runs on (itself, unless `run_on`)."""
        return self.run_on or self.name

    @property
    def load_balanced(self) -> bool:
        """Served through one load-balanced address (see `Proxy.load_balancer`)."""
        if self.proxy is None:
            return False
        return self.count > 1 if self.proxy.load_balancer is None else self.proxy.load_balancer


@dataclass(frozen=True, kw_only=True)
class AccessoryVM:
    """An accessory's own VM (as opposed to sharing a role's first VM)."""

    service_offering: str


@dataclass(frozen=True, kw_only=True)
class BackupPolicy:
    """`accessories.NAME.backups`: where `csdeploy backup` writes (``to``; default
    $CSDEPLOY_HOME/backups), how many it keeps (``keep``), and when (``schedule``, a cron line)
    a scheduled backup is due. A schedule with no ``to`` (or ``to: host``) is run on the
    accessory's host, its dumps kept there (`hostdumps`); one with ``to`` by `csdeploy serve`."""

    schedule: str | None = None
    keep: int | None = None
    to: str | None = None


@dataclass(frozen=True, kw_only=True)
class Accessory:
    """A long-lived companion container (database, cache) that deploys do not replace.

    Exactly one of `role` (run on that role's first VM) and `vm` (its own VM) is set.
    """

    name: str
    image: str
    role: str | None = None
    vm: AccessoryVM | None = None
    port: int | None = None
    env: EnvSpec = field(default_factory=EnvSpec)
    disk: Disk | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    container: ContainerSettings = field(default_factory=ContainerSettings)
    backups: BackupPolicy | None = None


@dataclass(frozen=True, kw_only=True)
class SSHAccess:
    """How csdeploy reaches the VMs, and who else may: `allow_from` becomes firewall rules."""

    user: str = "root"
    port: int = 22
    allow_from: tuple[str, ...]
    key: str | None = None


@dataclass(frozen=True, kw_only=True)
class Cloud:
    """Where and from what the VMs are made, in CloudStack's own names."""

    zone: str
    template: str
    service_offering: str
    network_offering: str = DEFAULT_NETWORK_OFFERING
    public_access: str = "static_nat"
    ssh: SSHAccess

    def matches_template(self, name: str) -> bool:
        """True if a template called `name` satisfies `template` (exact name or glob)."""
        return fnmatch.fnmatchcase(name, self.template)


@dataclass(frozen=True, kw_only=True)
class Registry:
    """The image registry; `password` is the NAME of a secret, never the value."""

    server: str
    username: str
    password: str


@dataclass(frozen=True, kw_only=True)
class PathCheck:
    """A path the watch GETs through the role's entry point, and the status it must answer."""

    path: str
    status: int = 200


@dataclass(frozen=True, kw_only=True)
class Watch:
    """What a deploy watches after the switch, before it calls the new version good.

    Every `interval` seconds for `duration` seconds: the health path (2xx) and `paths`
    through each proxy role's entry point, and (`containers`) that no new container
    restarted or stopped. More than `max_failures` failed probes roll the deploy back.
    """

    duration: float = 30
    interval: float = 2
    health: bool = True
    containers: bool = True
    paths: tuple[PathCheck, ...] = ()
    max_failures: int = 0


@dataclass(frozen=True, kw_only=True)
class RolloutSettings:
    """How the rollout treats hosts: Docker's install method, the proxy image, batches, lock,
    and the watch after a switch."""

    docker_install: str = "apt"      # apt (the distribution's docker.io) | script (get.docker.com) | none
    proxy_image: str = "basecamp/kamal-proxy:v0.9.2"
    #: Hosts of a role switched (proxy roles) or replaced (others) at once. Unset: one at a
    #: time for a proxy role behind a load balancer, all at once for other proxy roles, and
    #: one at a time for the rest.
    batch: int | None = None
    lock_ttl: timedelta = timedelta(minutes=30)
    watch: Watch | None = None


@dataclass(frozen=True, kw_only=True)
class Hooks:
    """Local commands (`sh -c`, in the blueprint's directory) around deploys, rollbacks and
    canary promotions: a failing `pre_deploy` stops the run before any host changes."""

    pre_deploy: str | None = None
    post_deploy: str | None = None
    timeout: float = 300


DOCKER_INSTALL_METHODS = ("apt", "script", "none")
LB_ALGORITHMS = ("roundrobin", "leastconn", "source")


@dataclass(frozen=True, kw_only=True)
class Build:
    """How `csdeploy build` makes the app image with the local Docker engine (BuildKit).

    `context` is relative to the blueprint's directory, `dockerfile` to the context. `args`
    are plain build arguments; `secrets` are secret NAMES handed to BuildKit as build secrets
    (`RUN --mount=type=secret,id=NAME`), never as arguments, so no value lands in the image's
    history.
    """

    context: str = "."
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    target: str | None = None
    #: The image's platform (`linux/amd64`, `linux/arm64`): what the VMs run, when it is not
    #: this machine's (Kamal's `builder.arch`). None: the Docker engine's own platform.
    platform: str | None = None


#: `build.platform`: OS/ARCH[/VARIANT], as `docker build --platform` takes it.
PLATFORM_RE = re.compile(r"[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?")


#: The adapters of `secrets_source` (Kamal's names, plus HashiCorp `vault` and `command`).
VAULT_ADAPTERS = ("1password", "bitwarden", "bitwarden-sm", "lastpass", "aws_secrets_manager",
                  "gcp_secret_manager", "doppler", "vault", "command")


@dataclass(frozen=True, kw_only=True)
class SecretsSource:
    """Where secrets not in the environment or the secrets file come from: a vault, read with
    its own CLI (Kamal's `kamal secrets fetch` adapters and words: `adapter`, `account`, `from`).

    A secret NAME is looked up at `<from>/<NAME>`, or at its own reference in `paths`;
    `command` (the `command` adapter) prints dotenv lines or a JSON object of NAME: value.
    """

    adapter: str
    account: str | None = None
    from_: str | None = None
    paths: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    timeout: float = 30.0


@dataclass(frozen=True, kw_only=True)
class Upgrades:
    """Unattended security upgrades, and when a VM may reboot for them (`blueprint_hosts`)."""

    reboot_window: tuple[int, int]      # minutes after midnight: start, end (end < start: past midnight)
    timezone: str = "UTC"

    @property
    def minutes(self) -> int:
        start, end = self.reboot_window
        return (end - start) % (24 * 60)


@dataclass(frozen=True, kw_only=True)
class HostsSpec:
    """The `hosts:` section: how csdeploy looks after its VMs' operating system."""

    ssh_hardening: bool = True
    fail2ban: bool = False
    upgrades: Upgrades | None = None
    #: What `csdeploy hosts upgrade` runs on each host (None: `hardening.DEFAULT_UPGRADE`).
    upgrade_command: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Blueprint:
    """A validated blueprint. Build one with `blueprint.load_blueprint`."""

    service: str
    image: str
    cloud: Cloud
    roles: dict[str, Role]
    accessories: dict[str, Accessory] = field(default_factory=dict)
    registry: Registry | None = None
    env: EnvSpec = field(default_factory=EnvSpec)
    secrets: tuple[str, ...] = ()
    secrets_file: str | None = None
    secrets_source: SecretsSource | None = None
    ttl: timedelta | None = None
    retain_versions: int = 5
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    build: Build | None = None
    hooks: Hooks = field(default_factory=Hooks)
    dns: DnsSpec | None = None     # A records for the proxy roles' entry points (`blueprint_dns`)
    #: Kamal's `aliases`: a name -> the csdeploy command line it stands for (`csdeploy alias NAME`).
    aliases: dict[str, str] = field(default_factory=dict)
    #: The `hosts:` section (`blueprint_hosts`): sshd hardening, unattended upgrades, fail2ban.
    hosts: HostsSpec = field(default_factory=lambda: HostsSpec())
    #: Where the blueprint was read from; not part of `to_dict` (moving a file must not
    #: change a plan's fingerprint).
    source: Path | None = field(default=None, compare=False)

    def summary(self) -> str:
        """One line for humans, e.g. `service demo: roles web×1, worker×1; accessories db`."""
        roles = ", ".join(f"{r.name} on {r.run_on}" if r.run_on else f"{r.name}×{r.count}"
                          for r in self.roles.values())
        text = f"service {self.service}: roles {roles}"
        if self.accessories:
            text += "; accessories " + ", ".join(self.accessories)
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, str, int, float, bool, None) for JSON, plans and hashing."""
        plain = _plain(self)
        assert isinstance(plain, dict)
        return plain

    def resolve_path(self, value: str) -> Path:
        """A path from the blueprint, relative to the blueprint's directory (`~` expanded)."""
        path = Path(value).expanduser()
        if path.is_absolute() or self.source is None:
            return path
        return self.source.parent / path

    def build_context(self) -> Path | None:
        """The build context directory, if the blueprint has a `build` section."""
        return self.resolve_path(self.build.context) if self.build else None

    def secrets_file_path(self) -> Path | None:
        """The dotenv file to read secrets from, if the blueprint names one."""
        return self.resolve_path(self.secrets_file) if self.secrets_file else None

    def ssh_key_path(self) -> Path | None:
        """The existing private key to use, if the blueprint names one."""
        return self.resolve_path(self.cloud.ssh.key) if self.cloud.ssh.key else None


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if f.name != "source"}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    return value
