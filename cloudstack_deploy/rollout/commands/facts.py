"""What is on a host already, read in one round trip before anything changes.

The rollout decides from these facts what each host needs: no registry login or pull when
the images are there, no accessory work when it runs with the same configuration, nothing
at all on a host whose part did not change. The script only reads; its output is one
``kind|field|...`` line per fact, parsed by `parse` below (the format lives here, once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ... import images
from . import docker as d
from . import hardening as hardening_cmds
from . import host as h
from . import proxy as p
from .script import Cond, Pipe, Script, Var, q, succeeds

SEP = "|"
CONFIG_LABEL = "csdeploy.config"   # a container's configuration hash (accessories and app versions)
TLS_LABEL = "csdeploy.tls"         # "true" on a proxy role's container served over HTTPS


@dataclass
class HostFacts:
    docker: bool = False                                   # the engine answers
    network: bool = False                                  # the shared `kamal` network exists
    images: dict[str, str] = field(default_factory=dict)   # image ref -> its id ("" = missing)
    service_label: dict[str, str] = field(default_factory=dict)   # image ref -> its `service` label
    accessories: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (config hash, state)
    proxy: str = ""                                        # kamal-proxy's container state ("" = none)
    containers: dict[str, tuple[str, str]] = field(default_factory=dict)   # name -> (state, config hash)
    mounts: dict[str, bool] = field(default_factory=dict)  # mount point -> mounted
    running: dict[str, list[str]] = field(default_factory=dict)  # app role -> its running containers, newest first
    tls: set[str] = field(default_factory=set)             # running app containers served over HTTPS
    proxy_mounts: tuple[str, ...] = ()                     # kamal-proxy's mount points
    maintenance: str | None = None                         # maintenance mode's message (None: off)
    hardening: str = ""                                    # the host's `hardening.MARKER` ("" = never set up)
    memory: int = 0                                        # the VM's memory in bytes (0: not read)
    cpus: int = 0                                          # its CPUs (0: not read)
    backups: str = ""                                      # its backup timers' marker (hostdump.MARKER)

    def has_image(self, ref: str) -> bool:
        return bool(self.images.get(_lookup(ref)))

    def label(self, ref: str) -> str:
        """The image's `service` label ("" without one)."""
        return self.service_label.get(_lookup(ref), "")


def _lookup(ref: str) -> str:
    """How an image is listed once present: by ``repo:tag``, or by ``repo@digest`` (RepoDigests)."""
    try:
        return images.parse(ref).lookup
    except ValueError:
        return ref


def script(*, images: Sequence[str], accessories: Sequence[str], containers: Sequence[str],
           mounts: Sequence[str], roles: Mapping[str, Mapping[str, str]] | None = None,
           maintenance: str | None = None, hardening: bool = False, machine: bool = False,
           backups: str | None = None) -> Script:
    """Read the facts about ``images`` (with their ``service`` label), accessory containers, app
    ``containers`` (kamal-proxy's with its mount points) and ``mounts`` with three docker calls,
    whatever their number (each docker call costs a client start: in the lab, about a tenth of
    a second); ``roles``: app role -> its containers' labels, whose running containers to list,
    newest first (what a switch back returns to), one more call per role; ``maintenance``: the
    marker file of maintenance mode, whose message to read when it is there; ``hardening``: read
    what the host's operating system was set up with (`hardening.MARKER`); ``machine``: its memory
    and CPUs (what a database accessory is tuned from); ``backups``: the marker file of the
    host's scheduled-backup timers, whose content to read."""
    s = Script()
    out = Var("out")
    # the engine answers (and the shared network exists): one call
    s.raw(f"if {out.name}=$({q(['docker', 'network', 'ls', '--format', '{{.Name}}', '--filter', 'name=' + d.NETWORK])}"
          " 2>/dev/null); then")
    s.emit("docker", SEP, "ok")
    with s.when(equals_any_line(out, d.NETWORK)):
        s.emit("network", SEP, "ok")
    s.raw("fi")
    if images:  # the ones present, with their ids and service labels (missing ones are skipped)
        fmt = "image" + SEP + "{{range .RepoTags}}{{.}} {{end}}{{range .RepoDigests}}{{.}} {{end}}" + SEP + "{{.Id}}" + SEP + d.label_format("service")
        s.run(["docker", "image", "inspect", "--format", fmt, *dict.fromkeys(images)], may_fail=True)
    names = [*accessories, *containers, p.CONTAINER]
    fmt = "container" + SEP + "{{.Name}}" + SEP + d.STATE + SEP + d.label_format(CONFIG_LABEL) + SEP + p.MOUNTS
    s.run(["docker", "inspect", "--type", "container", "--format", fmt, *names], may_fail=True)
    for role, labels in (roles or {}).items():
        s.run(d.ps_names(labels, fmt="running" + SEP + role + SEP + d.NAMES + SEP + d.ps_label(TLS_LABEL)),
              may_fail=True)
    for mount in mounts:
        with s.when(succeeds(["mountpoint", "-q", mount])):
            s.emit("mount", SEP, mount, SEP, "ok")
    if maintenance is not None:
        message = Var("message")
        with s.when(succeeds(["test", "-f", maintenance])):
            s.capture(message, ["head", "-n", "1", maintenance])
            s.emit("maintenance", SEP, message)
    if hardening:
        marker = Var("hardening")
        s.capture(marker, hardening_cmds.read_marker())
        s.emit("hardening", SEP, marker)
    if machine:
        mem, cpus = Var("mem"), Var("cpus")
        s.capture(mem, ["awk", "/^MemTotal:/ {print $2}", "/proc/meminfo"])
        s.capture(cpus, ["nproc"])
        s.emit("machine", SEP, mem, SEP, cpus)
    if backups is not None:
        have = Var("backups")
        s.capture(have, ["cat", backups])
        s.emit("backups", SEP, have)
    return s


def equals_any_line(var: Var, value: str) -> Cond:
    """True when one line of ``var`` is exactly ``value``."""
    return succeeds(Pipe(["printf", "%s\\n", var], ["grep", "-qx", value]))


def parse(stdout: str, *, accessories: Sequence[str] = (), proxy: str = p.CONTAINER) -> HostFacts:
    f = HostFacts()
    for line in stdout.splitlines():
        kind, _, rest = line.partition(SEP)
        parts = rest.split(SEP)
        if kind == "docker":
            f.docker = True
        elif kind == "network":
            f.network = True
        elif kind == "image" and len(parts) == 3:
            for tag in parts[0].split():
                f.images[tag] = parts[1].strip()
                f.service_label[tag] = "" if parts[2].strip() == "<no value>" else parts[2].strip()
        elif kind == "container" and len(parts) >= 3:
            name, state = parts[0].strip().lstrip("/"), parts[1].strip()
            config = "" if parts[2].strip() == "<no value>" else parts[2].strip()
            if name == proxy:
                f.proxy = state
                f.proxy_mounts = tuple(parts[3].split()) if len(parts) > 3 else ()
            elif name in accessories:
                f.accessories[name] = (config, state)
            else:
                f.containers[name] = (state, config)
        elif kind == "running" and len(parts) >= 2:
            f.running.setdefault(parts[0], []).append(parts[1].strip())
            if len(parts) > 2 and parts[2].strip() == "true":
                f.tls.add(parts[1].strip())
        elif kind == "mount" and len(parts) == 2:
            f.mounts[parts[0]] = True
        elif kind == "maintenance":
            f.maintenance = rest
        elif kind == "hardening":
            f.hardening = rest.strip()
        elif kind == "backups":
            f.backups = rest.strip()
        elif kind == "machine" and len(parts) == 2:
            kib, cpus = parts[0].strip(), parts[1].strip()
            f.memory = int(kib) * 1024 if kib.isdigit() else 0
            f.cpus = int(cpus) if cpus.isdigit() else 0
    return f


LOCKED_MARK = "::locked"
HISTORY_MARK = "::history"


def deploy_state(service: str) -> Script:
    """On the primary host: when a deploy holds the lock, ``::locked`` and its holder (the owner
    JSON and ``lease-age N``, as a refused lock prints them), then ``::history`` and the deploy
    history."""
    s = Script()
    with s.when(succeeds(["test", "-d", h.lock_dir(service)])):
        s.emit(LOCKED_MARK)
        h.print_holder(s, service)
    s.emit(HISTORY_MARK)
    s.run(["cat", h.history_file(service)], may_fail=True)
    return s
