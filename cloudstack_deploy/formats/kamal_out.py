"""`csdeploy export kamal`: a blueprint and an environment's hosts as Kamal 2's
config/deploy.yml and .kamal/secrets.

Hosts are the environment's public addresses (from the typed inventory); accessories on
their own VM get that VM's address, those sharing a role's VM get `role:`; an accessory's
port is published on the VM's private address, as csdeploy's rollout does. .kamal/secrets
holds references only (`NAME=$NAME`): Kamal reads each value from the environment when it
runs. What Kamal has no words for (CloudStack sizes and disks) travels as `csdeploy.*` labels,
so `csdeploy init --from-kamal` gets the same blueprint back; what it cannot carry at all is
listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..blueprint_schema import (
    Blueprint,
    Buffering,
    ContainerSettings,
    Disk,
    EnvSpec,
    Healthcheck,
    Proxy,
    Role,
    RolloutSettings,
)
from ..errors import InvalidInput
from ..inventory import Inventory
from ..rollout.contract import volume_name
from .kinds import compact
from .writer import relative

LABEL_OFFERING = "csdeploy.service-offering"
LABEL_DISK = "csdeploy.disk"
LABEL_VM = "csdeploy.vm"
#: Kamal's defaults, which are csdeploy's too (the records' defaults): unwritten when equal.
KAMAL_PROXY_DEFAULTS = {"deploy_timeout": Proxy().deploy_timeout, "drain_timeout": Proxy().drain_timeout,
                        "readiness_delay": Healthcheck().readiness_delay}


@dataclass
class ExportResult:
    deploy_yml: Path
    secrets: Path
    hosts: int
    notes: list[str] = field(default_factory=list)


def disk_label(disk: Disk) -> str:
    return f"{disk.size}:{disk.mount}:{disk.disk_offering}"


def _env(spec: EnvSpec, base: EnvSpec | None = None) -> dict[str, Any]:
    clear = {k: v for k, v in spec.clear.items() if base is None or base.clear.get(k) != v}
    secret = [s for s in spec.secret if base is None or s not in base.secret]
    out: dict[str, Any] = {}
    if clear:
        out["clear"] = clear
    if secret:
        out["secret"] = secret
    return out


def _proxy(proxy: Proxy) -> dict[str, Any]:
    out: dict[str, Any] = {"app_port": proxy.app_port}
    if len(proxy.hosts) == 1:
        out["host"] = proxy.hosts[0]
    elif proxy.hosts:
        out["hosts"] = list(proxy.hosts)
    if proxy.certificate is not None:
        out["ssl"] = {"certificate_pem": proxy.certificate.certificate_pem,
                      "private_key_pem": proxy.certificate.private_key_pem}
    elif proxy.ssl:
        out["ssl"] = True
    hc = proxy.healthcheck
    out["healthcheck"] = {"path": hc.path, "interval": compact(hc.interval), "timeout": compact(hc.timeout)}
    if proxy.response_timeout != 30:
        out["response_timeout"] = compact(proxy.response_timeout)
    if proxy.path_prefix:
        out["path_prefix"] = proxy.path_prefix[0] if len(proxy.path_prefix) == 1 else list(proxy.path_prefix)
        if not proxy.strip_path_prefix:
            out["strip_path_prefix"] = False
    if proxy.forward_headers is not None:
        out["forward_headers"] = proxy.forward_headers
    if proxy.ssl and not proxy.ssl_redirect:
        out["ssl_redirect"] = False
    b, default = proxy.buffering, Buffering()
    if b != default:
        out["buffering"] = {"requests": b.requests, "responses": b.responses,
                            **({"max_request_body": b.max_request_body} if b.max_request_body else {}),
                            **({"max_response_body": b.max_response_body} if b.max_response_body else {}),
                            **({"memory": b.memory} if b.memory is not None else {})}
    return out


def _container(settings: ContainerSettings, volumes: list[str], what: str, notes: list[str]) -> dict[str, Any]:
    """A role's or accessory's resources, options and volumes as Kamal's `options` (docker run
    flags; a list repeats the flag), and its logging as Kamal's `logging`."""
    out: dict[str, Any] = {}
    options: dict[str, Any] = {}
    res = settings.resources
    if res is not None:
        for key, flag in (("cpus", "cpus"), ("memory", "memory"), ("memory_reservation", "memory-reservation")):
            value = getattr(res, key)
            if value is not None:
                options[flag] = compact(value) if key == "cpus" else f"{value}b"
    for flag, value in settings.options:
        if value is None:
            options[flag] = True
        elif flag in options:
            options[flag] = [*([options[flag]] if not isinstance(options[flag], list) else options[flag]), value]
        else:
            options[flag] = value
    if volumes:
        options["volume"] = volumes if len(volumes) > 1 else volumes[0]
    if options:
        out["options"] = options
    if settings.restart != "unless-stopped":
        notes.append(f"{what}: restart {settings.restart}: Kamal always runs containers with unless-stopped")
    if settings.logging is not None:
        out["logging"] = {**({"driver": settings.logging.driver} if settings.logging.driver else {}),
                          **({"options": dict(settings.logging.options)} if settings.logging.options else {})}
    return out


def _labels(bp: Blueprint, offering: str, disk: Disk | None) -> dict[str, str]:
    out = {}
    if offering != bp.cloud.service_offering:
        out[LABEL_OFFERING] = offering
    if disk is not None:
        out[LABEL_DISK] = disk_label(disk)
    return out


def kamal_config(bp: Blueprint, inv: Inventory, out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """(deploy.yml as data, notes on what Kamal cannot carry). A blueprint whose roles run
    several images is refused: a Kamal service runs one image in every role, so its deploy
    would run the wrong thing."""
    own = [f"{r.name} ({r.image})" for r in bp.roles.values() if r.image != bp.image]
    if own:
        raise InvalidInput(f"roles {', '.join(own)} run images of their own: a Kamal config runs the one "
                           f"image {bp.image} in every role, so that export would deploy the wrong thing",
                           hint="export a blueprint whose roles share the app's image (run the others as "
                                "Kamal accessories by hand)")
    notes: list[str] = []
    proxy_roles = [r for r in bp.roles.values() if r.proxy is not None]
    # the primary role owns its VMs (a role placed on them is not the one Kamal's root proxy is for)
    primary = next((r for r in proxy_roles if r.run_on is None), proxy_roles[0]) if proxy_roles \
        else next(iter(bp.roles.values()))
    server = bp.registry.server if bp.registry else None
    image = bp.image[len(server) + 1:] if server and bp.image.startswith(server + "/") else bp.image
    config: dict[str, Any] = {"service": bp.service, "image": image}
    servers: dict[str, Any] = {}
    for role in bp.roles.values():
        servers[role.name] = _role(bp, role, inv, primary, notes)
    config["servers"] = servers
    if primary.name != "web":
        config["primary_role"] = primary.name
    if primary.proxy is not None:
        config["proxy"] = _proxy(primary.proxy)
        for key in ("deploy_timeout", "drain_timeout"):
            value = getattr(primary.proxy, key)
            if value != KAMAL_PROXY_DEFAULTS[key]:
                config[key] = compact(value)
    workers = [r for r in bp.roles.values() if r.healthcheck is not None]
    delay = (workers[0].healthcheck if workers and workers[0].healthcheck else Healthcheck()).readiness_delay
    if delay != KAMAL_PROXY_DEFAULTS["readiness_delay"]:
        config["readiness_delay"] = compact(delay)
    if bp.registry:
        config["registry"] = {"server": bp.registry.server, "username": bp.registry.username,
                              "password": [bp.registry.password]}
    config["builder"] = _builder(bp, out_dir)
    if _env(bp.env):
        config["env"] = _env(bp.env)
    accessories = {name: _accessory(bp, name, inv, notes) for name in bp.accessories}
    if accessories:
        config["accessories"] = accessories
    ssh: dict[str, Any] = {"user": inv.ssh.user, "keys": [str(inv.ssh.key)], "keys_only": True}
    ports = {h.ssh_port for h in inv.hosts}
    if len(ports) == 1 and ports != {22}:
        ssh["port"] = ports.pop()
    elif len(ports) > 1:
        notes.append("hosts answer SSH on different ports (port forwarding): Kamal takes one ssh.port; "
                     "use public_access: static_nat for a Kamal export")
    config["ssh"] = ssh
    if bp.retain_versions != 5:
        config["retain_containers"] = bp.retain_versions
    if bp.rollout.batch is not None:
        config["boot"] = {"limit": bp.rollout.batch}
    notes += _lost(bp)
    return config, notes


def _role(bp: Blueprint, role: Role, inv: Inventory, primary: Role, notes: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": [h.public_ip for h in inv.role_hosts(role.name)]}
    if len(spec["hosts"]) != role.count:
        notes.append(f"role {role.name}: the environment has {len(spec['hosts'])} hosts, the blueprint "
                     f"asks for {role.count}: create-env first to match")
    if role.cmd:
        spec["cmd"] = " ".join(role.cmd) if all(" " not in w for w in role.cmd) else list(role.cmd)
    env = _env(role.env, bp.env)
    if env:
        spec["env"] = env
    if role.proxy is not None and role is not primary:
        spec["proxy"] = _proxy(role.proxy)
    elif role.proxy is None and role.name in ("web", primary.name):
        spec["proxy"] = False
    spec.update(_container(role.container, [f"{volume_name(bp.service, v)}:{v.path}" + (":ro" if v.readonly else "")
                                             for v in role.volumes], f"role {role.name}", notes))
    if role.healthcheck is not None and role.healthcheck.cmd:
        hc = role.healthcheck
        spec["options"] = {**spec.get("options", {}), "health-cmd": hc.cmd,
                           "health-interval": f"{compact(hc.interval)}s", "health-timeout": f"{compact(hc.timeout)}s"}
    if any(v.source is None for v in role.volumes) and role.disk is not None:
        notes.append(f"role {role.name}: its volumes are Docker's own under Kamal, not on the data disk")
    for job in role.schedules:
        notes.append(f"role {role.name}: scheduled job {job.name} ({job.cron}): Kamal has no scheduled jobs")
    labels = _labels(bp, role.service_offering, role.disk) if role.run_on is None else {}  # the VMs' role has them
    if labels:
        spec["labels"] = labels
    return spec


def _accessory(bp: Blueprint, name: str, inv: Inventory, notes: list[str]) -> dict[str, Any]:
    acc = bp.accessories[name]
    spec: dict[str, Any] = {"image": acc.image}
    host = inv.accessory_host(name)
    if acc.role is not None:
        spec["role"] = acc.role
    elif host is not None:
        spec["host"] = host.public_ip
    else:
        notes.append(f"accessory {name}: no host in the environment yet: create-env first")
        spec["host"] = "CHANGE-ME"
    if acc.port is not None:
        spec["port"] = f"{host.private_ip}:{acc.port}:{acc.port}" if host else str(acc.port)
    env = _env(acc.env)
    if env:
        spec["env"] = env
    if acc.cmd:
        spec["cmd"] = " ".join(acc.cmd)
    if acc.volumes:
        spec["volumes"] = list(acc.volumes)
    spec.update(_container(acc.container, [], f"accessory {name}", notes))
    labels = _labels(bp, acc.vm.service_offering if acc.vm else bp.cloud.service_offering, acc.disk)
    if acc.vm is not None:
        labels[LABEL_VM] = acc.vm.service_offering
    labels.pop(LABEL_OFFERING, None)
    if labels:
        spec["labels"] = labels
    return spec


def _builder(bp: Blueprint, out_dir: Path) -> dict[str, Any]:
    builder: dict[str, Any] = {"arch": "amd64"}
    if bp.build is None:
        return builder
    context = bp.build_context()
    assert context is not None
    builder["context"] = relative(context, out_dir)
    builder["dockerfile"] = relative(context / bp.build.dockerfile, out_dir)
    if bp.build.args:
        builder["args"] = dict(bp.build.args)
    if bp.build.secrets:
        builder["secrets"] = list(bp.build.secrets)
    if bp.build.target:
        builder["target"] = bp.build.target
    return builder


def _lost(bp: Blueprint) -> list[str]:
    notes = ["cloud (zone, template, offerings, SSH firewall): Kamal deploys to hosts that exist"]
    if bp.ttl:
        notes.append("ttl: Kamal does not expire environments")
    if bp.secrets_file:
        notes.append(f"secrets_file {bp.secrets_file}: Kamal reads .kamal/secrets (references to the environment)")
    defaults = RolloutSettings()
    if bp.rollout.proxy_image != defaults.proxy_image:
        notes.append(f"rollout.proxy_image {bp.rollout.proxy_image}: set it with `kamal proxy boot_config set`")
    if bp.rollout.docker_install != defaults.docker_install:
        notes.append("rollout.docker_install: Kamal installs Docker with get.docker.com")
    if bp.rollout.lock_ttl != defaults.lock_ttl:
        notes.append("rollout.lock_ttl: Kamal's deploy lock never expires")
    return notes


def secrets_text(bp: Blueprint) -> str:
    lines = ["# Written by `csdeploy export kamal`: references only, never values. Kamal reads each",
             "# value from the environment it runs in; replace a line with another source if you like",
             "# (a command that reads config/master.key, or `kamal secrets fetch`)."]
    lines += [f"{name}=${name}" for name in bp.secrets]
    return "\n".join(lines) + "\n"


def export_kamal(bp: Blueprint, inv: Inventory, out_dir: Path, *, force: bool = False) -> ExportResult:
    deploy = out_dir / "config" / "deploy.yml"
    secrets = out_dir / ".kamal" / "secrets"
    for path in (deploy, secrets):
        if path.exists() and not force:
            raise InvalidInput(f"{path} already exists; nothing was written", hint="pass --force to replace it")
    config, notes = kamal_config(bp, inv, out_dir)
    header = (f"# Written by `csdeploy export kamal` for environment {inv.env} of service {bp.service}.\n"
              "# Secret values are not here: .kamal/secrets names them, the environment holds them.\n")
    text = header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100)
    for path, content in ((deploy, text), (secrets, secrets_text(bp))):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)
    return ExportResult(deploy, secrets, len(inv.hosts), notes)
