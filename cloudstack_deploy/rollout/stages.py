"""The script each stage runs on a host: blueprint + inventory facts in, a `Script` out.

Pure composition of the builders in `commands/` (which hold every word of shell); nothing
here runs anything, so `deploy --dry-run` prints exactly what these return.
"""

from __future__ import annotations

import hashlib
import json

from ..blueprint_schema import Accessory, Blueprint, Role
from ..inventory import Host
from .commands import docker as d
from .commands import host as h
from .commands import proxy as p
from .commands.script import Script, Var, differs, empty, nonempty
from .contract import (
    ContainerEnv,
    accessory_container,
    container_name,
    image_ref,
    labels,
    proxy_service,
)

IMAGE_LABEL_EXIT = 65


# ---- prepare: Docker, registry, network, env files, pulls -------------------------------------

def prepare_script(bp: Blueprint, host: Host, *, user: str, registry_password: str | None,
                   app_image: str | None, app_env: ContainerEnv | None, accessory_envs: dict[str, ContainerEnv],
                   install: str) -> Script:
    s = Script()
    s.extend(h.require_mounts([(disk.label, disk.mount) for disk in host.disks]))
    s.step("docker")
    s.extend(d.ensure_installed(install, user))
    s.extend(d.ensure_network())
    s.extend(h.ensure_dirs(bp.service))
    if bp.registry is not None and registry_password is not None:
        s.step("registry-login")
        s.stdin_to(d.login(bp.registry.server, bp.registry.username), registry_password)
    images = [app_image] if app_image else []
    images += [bp.accessories[a].image for a in host.accessories]
    if host.proxy:
        images.append(bp.rollout.proxy_image)
    for image in images:
        s.step(f"pull {image}")
        s.run(d.pull(image))
    if app_image:
        s.step("check-image")
        s.extend(d.require_label(app_image, "service", bp.service, IMAGE_LABEL_EXIT))
    if app_env is not None and host.app_role:
        s.write_file(h.env_file(bp.service, host.app_role), app_env.env_file())
    for name, env in accessory_envs.items():
        s.write_file(h.env_file(bp.service, name), env.env_file())
    if host.proxy:
        s.step("proxy")
        s.extend(p.ensure_running(bp.rollout.proxy_image))
    return s


# ---- accessories ------------------------------------------------------------------------------

def accessory_hash(acc: Accessory, env: ContainerEnv, private_ip: str) -> str:
    data = json.dumps([acc.image, acc.cmd, acc.volumes, acc.port, private_ip, env.fingerprint()]).encode()
    return hashlib.sha256(data).hexdigest()[:16]


CONFIG_LABEL = "csdeploy.config"


def accessory_script(bp: Blueprint, env: str, acc: Accessory, acc_env: ContainerEnv, private_ip: str,
                     *, force: bool = False) -> Script:
    """Start the accessory, or keep it when its configuration is unchanged; prints
    ``started``, ``unchanged`` or ``rebooted`` on its first line."""
    name = accessory_container(bp.service, acc.name)
    want = accessory_hash(acc, acc_env, private_ip)
    run = d.run(
        name=name, image=acc.image, env=acc_env.clear, env_file=h.env_file(bp.service, acc.name),
        labels={"service": bp.service, "accessory": acc.name, "destination": env, CONFIG_LABEL: want},
        publish=[f"{private_ip}:{acc.port}:{acc.port}"] if acc.port else [],
        volumes=acc.volumes, cmd=acc.cmd,
    )
    s = Script()
    s.step(f"accessory {acc.name}")
    s.extend(h.make_dirs([src for src in (v.split(":", 1)[0] for v in acc.volumes) if src.startswith("/")]))
    have = Var("have")
    s.capture(have, d.inspect(name, d.label_format(CONFIG_LABEL)))
    changed = nonempty(have) if force else nonempty(have) & differs(have, want)
    with s.when(changed):
        s.say(f"accessory {acc.name}: configuration changed, rebooting it")
        s.emit("rebooted")
        s.run(d.remove([name]), quiet=True)
        s.set(have, "")
    with s.when(empty(have)):
        s.run(run, quiet=True)
        s.emit("started")
    with s.otherwise():
        s.run(d.start(name), quiet=True)
        s.emit("unchanged")
    s.extend(d.wait_ready(name, timeout=60, readiness=2))
    return s


# ---- app roles -------------------------------------------------------------------------------

def app_script(bp: Blueprint, env: str, role: Role, version: str, app_env: ContainerEnv, *,
               retain: int) -> Script:
    """Start the new version, switch (proxy) or wait ready (workers), stop old ones, prune."""
    name = container_name(bp.service, role.name, version)
    hc = role.healthcheck
    run = d.run(name=name, image=image_ref(bp.image, version), env=app_env.clear,
                env_file=h.env_file(bp.service, role.name), labels=labels(bp.service, env, role.name, version),
                cmd=role.cmd, health_cmd=hc.cmd if hc else None, health_interval=hc.interval if hc else None)
    role_labels = labels(bp.service, env, role.name)
    fresh = Var("fresh")
    s = Script()
    s.step(f"start {name}")
    s.extend(d.replace_unless_running(name, run, fresh))
    if role.proxy is not None:
        s.step("proxy-deploy")
        s.extend(p.switch(proxy_service(bp.service, role.name), name, role.proxy))
    else:
        s.step("wait-ready")
        readiness = hc.readiness_delay if hc else 7
        # A container of this version already running (a re-run) was proven ready before.
        with s.when(differs(fresh, "0")):
            s.extend(d.wait_ready(name, timeout=max(30.0, readiness * 3), readiness=readiness, remove_on_fail=True))
    s.step("stop-old")
    s.extend(d.stop_others(role_labels, keep=name))
    s.step("prune")
    s.extend(d.prune(role_labels, keep=name, retain=retain, repository=bp.image,
                     service_label={"service": bp.service}))
    return s
