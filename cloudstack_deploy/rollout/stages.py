"""The scripts each stage runs on a host (pure: blueprint + inventory facts in, Script out).

Paths on hosts live under `~/.csdeploy/<service>` of the deploy user: env files (0600),
the deploy lock and the deploy history.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..blueprint_schema import Accessory, Blueprint, Role
from .commands import docker as d
from .commands import proxy as p
from .commands.script import Script, q
from .contract import ContainerEnv, accessory_container, container_name, image_ref, proxy_service

LOCK_EXIT = 75  # EX_TEMPFAIL: the lock is held


def base_dir(service: str) -> str:
    return f".csdeploy/{service}"


def env_file(service: str, name: str) -> str:
    return f"{base_dir(service)}/env/{name}.env"


def labels(bp: Blueprint, env: str, role: str, version: str) -> dict[str, str]:
    return {"service": bp.service, "role": role, "destination": env, "version": version}


@dataclass(frozen=True)
class HostPlan:
    """What one host runs: its role (app), its accessories, whether it proxies."""

    name: str
    role: str | None        # None for an accessory-only VM
    accessories: tuple[str, ...]
    proxy: bool
    private_ip: str
    disks: tuple[tuple[str, str], ...] = ()   # (filesystem label, mount point)


# ---- lock -----------------------------------------------------------------------------------

def lock_script(service: str, owner: dict[str, object], ttl_seconds: int, break_lock: bool) -> Script:
    base = base_dir(service)
    s = Script()
    s.run(["mkdir", "-p", base])
    if break_lock:
        s.run(["rm", "-rf", f"{base}/lock"])
    info = json.dumps(owner)
    s.raw(f"if mkdir {q([f'{base}/lock'])} 2>/dev/null; then")
    s.write_file(f"{base}/lock/owner.json", info)
    s.raw("else")
    s.raw(f"  cat {q([f'{base}/lock/owner.json'])} 2>/dev/null || echo '{{}}'")
    s.raw(f"  exit {LOCK_EXIT}")
    s.raw("fi")
    return s


def unlock_script(service: str, history_line: dict[str, object] | None) -> Script:
    base = base_dir(service)
    s = Script()
    if history_line is not None:
        s.raw(f"printf '%s\\n' {q([json.dumps(history_line, sort_keys=True)])} >> {q([f'{base}/history.jsonl'])}")
    s.run(["rm", "-rf", f"{base}/lock"])
    return s


def history_script(service: str) -> Script:
    s = Script()
    s.raw(f"cat {q([f'{base_dir(service)}/history.jsonl'])} 2>/dev/null || true")
    return s


# ---- prepare: Docker, registry, network, env files, pulls -------------------------------------

def prepare_script(bp: Blueprint, host: HostPlan, *, user: str, registry_password: str | None,
                   app_image: str | None, app_env: ContainerEnv | None, accessory_envs: dict[str, ContainerEnv],
                   install: str) -> Script:
    s = Script()
    for label, mount in host.disks:
        # Accessories keep their data there: never write into the root disk's empty directory.
        s.step(f"disk {label}")
        s.raw(f"mountpoint -q {q([mount])} || systemctl restart csdeploy-disks.service 2>/dev/null || true")
        s.raw(f"mountpoint -q {q([mount])} || {{ echo 'data disk {label} is not mounted at {mount}: "
              f"is the volume attached? (journalctl -u csdeploy-disks)' >&2; exit 68; }}")
    s.step("docker")
    if install != "none":
        for line in d.install_lines(install, user):
            s.raw(line)
    s.raw("command -v docker >/dev/null 2>&1 || { echo 'docker is not installed on this host "
          "(rollout.docker_install: none)' >&2; exit 69; }")
    s.raw(d.network_create())
    s.run(["mkdir", "-p", f"{base_dir(bp.service)}/env"])
    if bp.registry is not None and registry_password is not None:
        s.step("registry-login")
        s.stdin_to(d.login(bp.registry.server, bp.registry.username), registry_password)
    images = []
    if app_image:
        images.append(app_image)
    images += [bp.accessories[a].image for a in host.accessories]
    if host.proxy:
        images.append(bp.rollout.proxy_image)
    for image in images:
        s.step(f"pull {image}")
        s.run(d.pull(image))
    if app_image:
        s.step("check-image")
        s.raw(f'got=$({q(d.image_label(app_image, "service"))})')
        s.raw(f'[ "$got" = {q([bp.service])} ] || {{ echo "image {app_image} has label service=$got, '
              f'not {bp.service}: refusing to deploy it" >&2; exit 65; }}')
    if app_env is not None and host.role:
        s.write_file(env_file(bp.service, host.role), app_env.env_file())
    for name, env in accessory_envs.items():
        s.write_file(env_file(bp.service, name), env.env_file())
    if host.proxy:
        s.step("proxy")
        s.raw(f"if ! docker container inspect {p.CONTAINER} >/dev/null 2>&1; then {q(p.boot(bp.rollout.proxy_image))}"
              f" >/dev/null; else docker start {p.CONTAINER} >/dev/null; fi")
    return s


# ---- accessories ------------------------------------------------------------------------------

def accessory_hash(acc: Accessory, env: ContainerEnv, private_ip: str) -> str:
    data = json.dumps([acc.image, acc.cmd, acc.volumes, acc.port, private_ip, env.fingerprint()]).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def accessory_script(bp: Blueprint, env: str, acc: Accessory, acc_env: ContainerEnv, private_ip: str,
                     *, force: bool = False) -> Script:
    name = accessory_container(bp.service, acc.name)
    want = accessory_hash(acc, acc_env, private_ip)
    run = d.run(
        name=name, image=acc.image, env=acc_env.clear, env_file=env_file(bp.service, acc.name),
        labels={"service": bp.service, "accessory": acc.name, "destination": env, "csdeploy.config": want},
        publish=[f"{private_ip}:{acc.port}:{acc.port}"] if acc.port else [],
        volumes=acc.volumes, cmd=acc.cmd,
    )
    s = Script()
    s.step(f"accessory {acc.name}")
    for vol in acc.volumes:
        src = vol.split(":", 1)[0]
        if src.startswith("/"):
            s.run(["mkdir", "-p", src])
    s.raw(f"have=$(docker inspect --format '{{{{index .Config.Labels \"csdeploy.config\"}}}}' {q([name])} 2>/dev/null || true)")
    cond = "true" if force else f'[ -n "$have" ] && [ "$have" != {q([want])} ]'
    s.raw(f"if {cond}; then echo 'accessory {acc.name}: configuration changed, rebooting it' >&2; "
          f"echo 'rebooted'; {q(d.remove([name]))} >/dev/null; have=; fi")
    s.raw(f'if [ -z "$have" ]; then {q(run)} >/dev/null; echo "started"; '
          f"else docker start {q([name])} >/dev/null; echo 'unchanged'; fi")
    s.raw(wait_ready_lines(name, timeout=60, readiness=2))
    return s


def wait_ready_lines(name: str, *, timeout: float, readiness: float, remove_on_fail: bool = False) -> str:
    """Shell: wait until ``name`` is healthy (HEALTHCHECK) or still running after ``readiness`` s.

    On failure print the container's state and last logs; ``remove_on_fail`` then removes it
    (a new app version that never became ready must not linger beside the old one).
    """
    n = q([name])
    fail = (f"docker rm -f {n} >/dev/null 2>&1 || true; exit 66;" if remove_on_fail else "exit 66;")
    return (
        f"i=0; while :; do st=$(docker inspect --format '{{{{if .State.Health}}}}{{{{.State.Health.Status}}}}"
        f"{{{{else}}}}none{{{{end}}}} {{{{.State.Status}}}}' {n}); "
        f'case "$st" in "healthy running") break;; "none running") [ $i -ge {int(readiness * 2)} ] && break;; '
        f'*exited*|*dead*|"unhealthy "*) echo "container {name} is $st" >&2; '
        f"docker logs --tail 30 {n} >&2 2>&1 || true; {fail}; esac; "
        f"i=$((i+1)); [ $i -gt {int(timeout * 2)} ] && {{ echo \"container {name} not ready after {timeout:g}s ($st)\" >&2; "
        f"docker logs --tail 30 {n} >&2 2>&1 || true; {fail} }}; sleep 0.5; done"
    )


# ---- app roles -------------------------------------------------------------------------------

def app_script(bp: Blueprint, env: str, role: Role, version: str, app_env: ContainerEnv, *,
               retain: int) -> Script:
    """Start the new version, switch (proxy) or wait ready (workers), stop old ones, prune."""
    name = container_name(bp.service, role.name, version)
    image = image_ref(bp.image, version)
    hc_cmd = role.healthcheck.cmd if role.healthcheck else None
    run = d.run(name=name, image=image, env=app_env.clear, env_file=env_file(bp.service, role.name),
                labels=labels(bp, env, role.name, version), cmd=role.cmd, health_cmd=hc_cmd,
                health_interval=role.healthcheck.interval if role.healthcheck else None)
    n = q([name])
    filt = ["--filter", f"label=service={bp.service}", "--filter", f"label=role={role.name}",
            "--filter", f"label=destination={env}"]
    s = Script()
    s.step(f"start {name}")
    s.raw(f"state=$(docker inspect --format '{{{{.State.Status}}}}' {n} 2>/dev/null || true)")
    s.raw("fresh=0")
    s.raw(f'if [ "$state" != running ]; then [ -n "$state" ] && docker rm -f {n} >/dev/null; '
          f"{q(run)} >/dev/null; fresh=1; fi")
    if role.proxy is not None:
        s.step("proxy-deploy")
        deploy = p.deploy(proxy_service(bp.service, role.name), f"{name}:{role.proxy.app_port}", role.proxy)
        path = role.proxy.healthcheck.path or "/up"
        # The path comes from the blueprint: it is only ever used shell-quoted.
        url = f'"http://$ip:{role.proxy.app_port}"{q([path])}'
        probe = (f"ip=$(docker inspect --format '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}} "
                 f"{{{{end}}}}' {n} 2>/dev/null | cut -d' ' -f1); "
                 f"echo '--- health check on {name}:' GET {q([path])} \"(container $(docker inspect --format "
                 f"'{{{{.State.Status}}}}' {n} 2>/dev/null))\" >&2; "
                 f"{{ curl -s -m 3 -w '(HTTP %{{http_code}})' {url} 2>&1 || wget -q -S -O- -T 3 {url} 2>&1; }} "
                 f"| tail -c 600 >&2 || true; echo >&2; ")
        s.raw(f"if ! out=$({q(deploy)} 2>&1); then echo \"kamal-proxy refused {name}: $out\" >&2; "
              + probe +
              f"echo '--- last logs of {name}:' >&2; docker logs --tail 30 {n} >&2 2>&1 || true; "
              f"docker rm -f {n} >/dev/null 2>&1 || true; exit 67; fi")
    else:
        hc = role.healthcheck
        s.step("wait-ready")
        # A container of this version already running (a re-run) was proven ready before.
        s.raw('if [ "$fresh" = 1 ]; then ' + wait_ready_lines(
            name, timeout=max(30.0, (hc.readiness_delay if hc else 7) * 3),
            readiness=hc.readiness_delay if hc else 7, remove_on_fail=True) + "; fi")
    s.step("stop-old")
    s.raw(f"old=$(docker ps --format '{{{{.Names}}}}' {q(filt)} | grep -vx {n} || true)")
    s.raw('[ -z "$old" ] || docker stop --time 30 $old >/dev/null')
    s.step("prune")
    s.raw(prune_lines(bp, env, role.name, name, retain))
    return s


def prune_lines(bp: Blueprint, env: str, role: str, current: str, retain: int) -> str:
    """Keep the newest ``retain`` stopped containers of this service/role/env; drop their unused images."""
    filt = q(["--filter", f"label=service={bp.service}", "--filter", f"label=role={role}",
              "--filter", f"label=destination={env}", "--filter", "status=exited"])
    return (f"stale=$(docker ps -a --format '{{{{.Names}}}}' {filt} | grep -vx {q([current])} | "
            f"tail -n +{retain + 1} || true); "
            f'[ -z "$stale" ] || docker rm $stale >/dev/null; '
            f"keep=$(docker ps -a --format '{{{{.Image}}}}' --filter {q(['label=service=' + bp.service])}); "
            f"for img in $(docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' {q([bp.image])}); do "
            f'echo "$keep" | grep -qx "$img" || docker image rm "$img" >/dev/null 2>&1 || true; done')
