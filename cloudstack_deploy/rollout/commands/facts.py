"""What is on a host already, read in one round trip before anything changes.

The rollout decides from these facts what each host needs: no registry login or pull when
the images are there, no accessory work when it runs with the same configuration, nothing
at all on a host whose part did not change. The script only reads; its output is one
``kind|field|...`` line per fact, parsed by `parse` below (the format lives here, once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import docker as d
from . import proxy as p
from .script import Pipe, Script, Var, succeeds

SEP = "|"
CONFIG_LABEL = "csdeploy.config"   # a container's configuration hash (accessories and app versions)


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
    proxy_mounts: tuple[str, ...] = ()                     # kamal-proxy's mount points

    def has_image(self, ref: str) -> bool:
        return bool(self.images.get(ref))


def script(*, images: Sequence[str], accessories: Sequence[str], containers: Sequence[str],
           mounts: Sequence[str], label_of: Sequence[str] = (),
           roles: Mapping[str, Mapping[str, str]] | None = None) -> Script:
    """Read the facts about ``images``, accessory containers, app ``containers``, ``mounts``;
    ``label_of``: images whose ``service`` label to report; ``roles``: app role -> its
    containers' labels, whose running containers to list (what a switch back returns to)."""
    s = Script()
    v, w = Var("v"), Var("w")
    with s.when(succeeds(d.version())):
        s.emit("docker", SEP, "ok")
    with s.when(succeeds(["docker", "network", "inspect", d.NETWORK])):
        s.emit("network", SEP, "ok")
    for ref in images:
        s.capture(v, d.image_exists(ref))
        s.emit("image", SEP, ref, SEP, v)
    for ref in label_of:
        s.capture(v, d.image_label(ref, "service"))
        s.emit("label", SEP, ref, SEP, v)
    for name in accessories:
        s.capture(v, d.inspect(name, d.label_format(CONFIG_LABEL)))
        s.capture(w, d.inspect(name, d.STATE))
        s.emit("accessory", SEP, name, SEP, v, SEP, w)
    for name in containers:
        s.capture(v, d.inspect(name, d.STATE))
        s.capture(w, d.inspect(name, d.label_format(CONFIG_LABEL)))
        s.emit("container", SEP, name, SEP, v, SEP, w)
    for role, labels in (roles or {}).items():
        s.capture(v, Pipe(d.ps_names(labels), ["tr", "\n", " "]))
        s.emit("running", SEP, role, SEP, v)
    s.capture(v, d.inspect(p.CONTAINER, d.STATE))
    s.emit("proxy", SEP, v)
    s.capture(v, p.has_apps_mount())
    s.emit("proxymounts", SEP, v)
    for mount in mounts:
        with s.when(succeeds(["mountpoint", "-q", mount])):
            s.emit("mount", SEP, mount, SEP, "ok")
    return s


def parse(stdout: str) -> HostFacts:
    f = HostFacts()
    for line in stdout.splitlines():
        kind, _, rest = line.partition(SEP)
        parts = rest.split(SEP)
        if kind == "docker":
            f.docker = True
        elif kind == "network":
            f.network = True
        elif kind == "image" and len(parts) == 2:
            f.images[parts[0]] = parts[1].strip()
        elif kind == "label" and len(parts) == 2:
            f.service_label[parts[0]] = parts[1].strip()
        elif kind == "accessory" and len(parts) == 3:
            f.accessories[parts[0]] = (parts[1].strip(), parts[2].strip())
        elif kind == "container" and len(parts) == 3:
            f.containers[parts[0]] = (parts[1].strip(), parts[2].strip())
        elif kind == "running" and len(parts) == 2:
            f.running[parts[0]] = parts[1].split()
        elif kind == "proxy":
            f.proxy = rest.strip()
        elif kind == "proxymounts":
            f.proxy_mounts = tuple(rest.split())
        elif kind == "mount" and len(parts) == 2:
            f.mounts[parts[0]] = True
    return f
