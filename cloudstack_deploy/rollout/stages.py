"""The script each stage runs on a host: blueprint + inventory facts in, a `Script` out.

Pure composition of the builders in `commands/` (which hold every word of shell); nothing
here runs anything, so `deploy --dry-run` prints exactly what these return.
"""

from __future__ import annotations

import hashlib
import json

from ..blueprint_schema import Accessory, Blueprint, ContainerSettings, Healthcheck, Role
from ..inventory import Host
from .commands import docker as d
from .commands import facts, hardening, jobs
from .commands import host as h
from .commands import proxy as p
from .commands.script import Script, Var, differs, empty, equals, nonempty
from .contract import (
    ContainerEnv,
    accessory_container,
    container_name,
    image_ref,
    image_repository,
    labels,
    proxy_service,
    volume_directory,
    volume_name,
)

IMAGE_LABEL_EXIT = 65
ACCESSORY_MARK = "accessory|"
CONFIG_LABEL = facts.CONFIG_LABEL
TLS_LABEL = facts.TLS_LABEL


# ---- prepare: Docker, registry, network, pulls, proxy (only what the host's facts lack) -----

def prepare_script(bp: Blueprint, host: Host, *, user: str, install: str | None, network: bool,
                   registry_password: str | None, pulls: list[str], check_images: list[str],
                   accessory_envs: dict[str, ContainerEnv], proxy: bool) -> Script:
    """``install``: Docker's install method when it is missing; ``network``: create the shared
    network; ``registry_password``: log in first (only when something is pulled); ``check_images``:
    app images pulled now whose service label must match; ``proxy``: boot/start kamal-proxy."""
    s = Script()
    if accessory_envs:
        s.extend(h.require_mounts([(disk.label, disk.mount) for disk in host.disks]))
    if install is not None:
        s.step("docker")
        s.extend(d.ensure_installed(install, user))
    if network:
        s.extend(d.ensure_network())
    s.extend(h.ensure_dirs(bp.service))
    if bp.registry is not None and registry_password is not None and pulls:
        s.step("registry-login")
        s.stdin_to(d.login(bp.registry.server, bp.registry.username), registry_password)
    if pulls:
        s.step("pull " + ", ".join(pulls))
        s.extend(d.pull_all(pulls))
    for image in check_images:
        s.step("check-image")
        s.extend(d.require_label(image, "service", bp.service, IMAGE_LABEL_EXIT))
    for name, env in accessory_envs.items():
        s.write_file(h.env_file(bp.service, name), env.env_file())
    if proxy:
        s.step("proxy")
        s.extend(p.ensure_running(bp.rollout.proxy_image))
    return s


# ---- the host's operating system (the blueprint's `hosts:` section) ----------------------------

def host_setup_script(bp: Blueprint, slot: int, slots: int) -> Script:
    """sshd hardening, unattended upgrades (this VM's reboot slot: ``slot`` of ``slots`` in the
    window) and fail2ban as the blueprint asks; run before anything else in prepare."""
    s = Script()
    s.step("host-setup")
    return s.extend(hardening.harden(bp.hosts, slot, slots))


# ---- accessories ------------------------------------------------------------------------------

def accessory_hash(acc: Accessory, env: ContainerEnv, private_ip: str) -> str:
    settings = d.settings_flags(acc.container) if acc.container != ContainerSettings() else []
    data = json.dumps([acc.image, acc.cmd, acc.volumes, acc.port, private_ip, env.fingerprint(),
                       *([settings] if settings else [])]).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def accessory_script(bp: Blueprint, env: str, acc: Accessory, acc_env: ContainerEnv, private_ip: str,
                     *, force: bool = False) -> Script:
    """Start the accessory, or keep it when its configuration is unchanged; prints
    ``accessory|NAME|started`` (or ``unchanged``, ``rebooted``)."""
    name = accessory_container(bp.service, acc.name)
    want = accessory_hash(acc, acc_env, private_ip)
    run = d.run(
        name=name, image=acc.image, env=acc_env.clear, env_file=h.env_file(bp.service, acc.name),
        labels={"service": bp.service, "accessory": acc.name, "destination": env, CONFIG_LABEL: want},
        publish=[f"{private_ip}:{acc.port}:{acc.port}"] if acc.port else [],
        volumes=acc.volumes, cmd=acc.cmd, settings=acc.container,
    )
    s = Script()
    s.step(f"accessory {acc.name}")
    s.extend(h.make_dirs([src for src in (v.split(":", 1)[0] for v in acc.volumes) if src.startswith("/")]))
    have, outcome = Var("have"), Var("outcome")
    s.capture(have, d.inspect(name, d.label_format(CONFIG_LABEL)))
    s.set(outcome, "started")
    changed = nonempty(have) if force else nonempty(have) & differs(have, want)
    with s.when(changed):
        s.say(f"accessory {acc.name}: configuration changed, rebooting it")
        s.run(d.remove([name]), quiet=True)
        s.set(have, "")
        s.set(outcome, "rebooted")
    with s.when(empty(have)):
        s.run(run, quiet=True)
    with s.otherwise():
        s.run(d.start(name), quiet=True)
        s.set(outcome, "unchanged")
    s.emit(ACCESSORY_MARK, acc.name, "|", outcome)
    s.extend(d.wait_ready(name, timeout=60, readiness=2))
    return s


# ---- app roles -------------------------------------------------------------------------------

def app_config(run_argv: list[str | Var], env: ContainerEnv) -> str:
    """What makes a stopped container of this version reusable: its docker run words (no
    secrets there) and its env (what `docker inspect` shows anyway)."""
    data = json.dumps([[str(w) for w in run_argv], env.fingerprint()]).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _app_start(bp: Blueprint, env: str, role: Role, version: str, app_env: ContainerEnv,
               image: str | None) -> tuple[Script, str]:
    """Start the role's container of ``version`` (``image``: what it runs, by default the role's
    image at that version), with its env file and volumes in place."""
    name = container_name(bp.service, role.name, version)
    image = image or image_ref(role.image, version)
    hc = role.healthcheck

    # which hosts serve HTTPS is read back from this label: a switch that turns TLS on or off
    # takes the role's hosts together (served behind one balancer, they must agree)
    tls_label = {TLS_LABEL: "true"} if role.proxy is not None and role.proxy.ssl else {}
    mounts = [d.Mount(volume_name(bp.service, v), v.path, v.readonly) for v in role.volumes]

    def run_argv(extra_labels: dict[str, str]) -> list[str | Var]:
        return list(d.run(name=name, image=image, env=app_env.clear,
                          env_file=h.env_file(bp.service, role.name),
                          labels={**labels(bp.service, env, role.name, version), **tls_label, **extra_labels},
                          mounts=mounts, cmd=role.cmd, settings=role.container,
                          health_cmd=hc.cmd if hc else None, health_interval=hc.interval if hc else None))

    config = app_config(run_argv({}), app_env)
    s = h.ensure_dirs(bp.service)
    s.write_file(h.env_file(bp.service, role.name), app_env.env_file())
    if role.volumes:
        s.step("volumes")
        vms = bp.roles.get(role.vm_role, role)   # a role placed on another's VMs keeps its files on their disk
        if vms.disk is not None:
            s.extend(h.require_mounts([(vms.name, vms.disk.mount)]))
        s.extend(d.ensure_volumes([(volume_name(bp.service, v), volume_directory(vms, v)) for v in role.volumes],
                                  {"service": bp.service, "destination": env, "role": role.name}))
    s.step(f"start {name}")
    s.extend(d.start_version(name, run_argv({CONFIG_LABEL: config}), config=config, config_label=CONFIG_LABEL,
                             fresh=FRESH))
    return s, name


FRESH = Var("fresh")


def tls_files(bp: Blueprint, role: Role) -> p.TLSFiles | None:
    """Where the role's given certificate lives (None: no certificate of its own)."""
    if role.proxy is None or role.proxy.certificate is None:
        return None
    return p.TLSFiles(proxy_service(bp.service, role.name))


def proxy_switch_script(bp: Blueprint, env: str, role: Role, version: str, app_env: ContainerEnv, *,
                        image: str | None = None, certificate: tuple[str, str] | None = None, stop_split: bool = False,
                        reboot_proxy: bool = False, maintenance: str | None = None) -> Script:
    """A proxy role on one host: start the new version (with the role's certificate in place)
    and switch kamal-proxy to it once healthy. The old container keeps running until the whole
    rollout is judged (`proxy_commit_script`), so a switch back is one more kamal-proxy deploy.
    A refused switch removes the new container; the old keeps serving. ``stop_split``: the
    version was a percentage canary on this host; every request goes to it now. ``reboot_proxy``:
    first replace a proxy booted without the certificates' directory. ``maintenance``: the
    environment is in maintenance mode (this message): the service is stopped again after the
    switch, so a host's first deploy does not open it."""
    assert role.proxy is not None
    # proxy.deploy_timeout covers the container's start too: a version that never turns healthy
    # is refused in about that time, however slow the host is to start it (not after it)
    started = Var("switch_t0")
    s = d.clock(started)
    app, name = _app_start(bp, env, role, version, app_env, image)
    s.extend(app)
    if reboot_proxy:
        s.step("proxy-reboot")
        s.extend(p.reboot(bp.rollout.proxy_image))
        s.extend(d.clock(started))  # a proxy replaced once: not the app's boot
    tls = tls_files(bp, role)
    if tls is not None and certificate is not None:
        s.extend(p.install_certificate(tls, *certificate))
    s.step("proxy-deploy")
    s.extend(p.switch(proxy_service(bp.service, role.name), name, role.proxy, tls=tls, started=started))
    if stop_split:
        s.run(p.rollout_stop(proxy_service(bp.service, role.name)), quiet=True, may_fail=True)
    if maintenance is not None:
        s.extend(p.keep_maintenance(bp.service, proxy_service(bp.service, role.name), maintenance,
                                    role.proxy.drain_timeout))
    return s


def proxy_commit_script(bp: Blueprint, env: str, role: Role, version: str, *, retain: int,
                        schedule: Script | None = None) -> Script:
    """After the rollout was judged good: on the role's first host, ``schedule``
    (`schedule_script`) sets its scheduled jobs; then the host is handed the stopping of the
    role's old containers and the prune (`host.finish_later`): the command does not wait for
    them, the next command's facts (or `status`) finish what is left. A proxy role's host ends
    with kamal-proxy running (`p.revive`), now and again after the hand-off: killed once the
    switch was done, it left a deploy that said done serving nothing (the rollout fault
    matrix, stop old/proxy)."""
    s = Script()
    if schedule is not None:
        s.extend(schedule)
    work = _stop_old_and_prune(Script(), bp, env, role, container_name(bp.service, role.name, version), retain)
    if role.proxy is not None:
        s.extend(p.revive())
        work.extend(p.revive())
    return s.extend(h.finish_later(bp.service, finishing_name(role.name), work))


def finishing_name(role: str) -> str:
    """The name of the role's hand-off file on a host (`host.finish_later`)."""
    return f"stop-old-{role}"


def schedule_script(bp: Blueprint, env: str, role: Role, version: str, app_env: ContainerEnv, *,
                    image: str | None = None, user: str = "root") -> Script:
    """The role's scheduled jobs at ``version`` (on its first host): each runs the role's image
    with its env, volumes and container settings; jobs no longer in the blueprint are removed."""
    image = image or image_ref(role.image, version)
    mounts = [d.Mount(volume_name(bp.service, v), v.path, v.readonly) for v in role.volumes]
    scripts = {
        job.name: jobs.job_script(bp.service, role.name, job.name, job.cron, jobs.run_argv(
            service=bp.service, env=env, role=role.name, job=job.name, image=image, clear=app_env.clear,
            env_file=h.env_file(bp.service, role.name), mounts=mounts, cmd=job.cmd or role.cmd,
            settings=role.container))
        for job in role.schedules}
    return jobs.install(bp.service, role.name, scripts, user)


def proxy_switch_back_script(bp: Blueprint, role: Role, version: str, previous: str | None) -> Script:
    """Back to ``previous`` (what the host served before) and the new version's container gone."""
    assert role.proxy is not None
    return p.switch_back(proxy_service(bp.service, role.name), container_name(bp.service, role.name, version),
                         previous, role.proxy, tls=tls_files(bp, role))


def canary_split_script(bp: Blueprint, env: str, role: Role, version: str, app_env: ContainerEnv, *,
                        image: str | None = None, percent: int, cookie: str,
                        maintenance: str | None = None) -> Script:
    """A percentage canary on one host: the new version beside the old one, as kamal-proxy's
    rollout target (health-checked), taking ``percent`` % of the requests (by cookie)."""
    assert role.proxy is not None
    s, name = _app_start(bp, env, role, version, app_env, image)
    service = proxy_service(bp.service, role.name)
    s.step("rollout-deploy")
    s.run(p.rollout_deploy(service, f"{name}:{role.proxy.app_port}", role.proxy), quiet=True)
    s.run(p.rollout_set(service, percent, cookie), quiet=True)
    if maintenance is not None:
        s.extend(p.keep_maintenance(bp.service, service, maintenance, role.proxy.drain_timeout))
    return s


def canary_unsplit_script(bp: Blueprint, role: Role, version: str) -> Script:
    """End a percentage canary on one host: every request to the old version, the new one removed."""
    return p.unsplit(proxy_service(bp.service, role.name), container_name(bp.service, role.name, version))


def worker_start_script(bp: Blueprint, env: str, role: Role, version: str, app_env: ContainerEnv, *,
                        image: str | None = None) -> Script:
    """A non-proxy role on one host: start the new version beside the old one and wait until it
    is ready (its `readiness.cmd` exits 0 inside it; else its HEALTHCHECK, the image's or
    healthcheck.cmd, says healthy; else it still runs after readiness_delay). Prints ``fresh`` when the
    container started now (``abort`` may remove it), ``kept`` when it already ran."""
    launch, ready = worker_start_parts(bp, env, role, version, app_env, image=image, again=False)
    return launch.extend(ready)


def worker_start_parts(bp: Blueprint, env: str, role: Role, version: str, app_env: ContainerEnv, *,
                       image: str | None = None, again: bool = True) -> tuple[Script, Script]:
    """`worker_start_script` in two execs: the start (prints ``fresh`` or ``kept``), and the
    wait for readiness, counted from that start. Between them the rollout waits for the
    accessories still starting elsewhere (a first deploy's database), so the worker's
    readiness_delay runs meanwhile instead of after. With ``again``, a container that exited
    or was restarted by Docker before that wait began (it needed an accessory that was not
    ready yet) is started again, and judged from then."""
    launch, name = _app_start(bp, env, role, version, app_env, image)
    started = h.started_file(bp.service, name)
    launch.extend(d.note_start(started, FRESH))
    with launch.when(equals(FRESH, "1")):
        launch.emit("fresh")
    with launch.otherwise():
        launch.emit("kept")
    hc = role.healthcheck
    readiness = (hc or Healthcheck()).readiness_delay
    probe = role.readiness
    timeout = probe.timeout if probe is not None else max(30.0, readiness * 3)
    since = Var("since")
    ready = Script()
    ready.step("wait-ready")
    ready.extend(d.resume_start(name, started, since, again=again))
    with ready.when(nonempty(since)):
        ready.extend(d.wait_ready(name, timeout=timeout, readiness=readiness, remove_on_fail=True,
                                  probe=probe.cmd if probe is not None else None, since=since))
    return launch, ready


def worker_commit_script(bp: Blueprint, env: str, role: Role, version: str, *, retain: int,
                         schedule: Script | None = None) -> Script:
    """After every proxy role switched (and the watch passed): stop the role's old containers, prune."""
    return proxy_commit_script(bp, env, role, version, retain=retain, schedule=schedule)


def worker_abort_script(bp: Blueprint, role: Role, version: str) -> Script:
    """A proxy role refused the new version: remove the worker started for it (the old runs on)."""
    return Script().run(d.remove([container_name(bp.service, role.name, version)]), quiet=True, may_fail=True)


def _stop_old_and_prune(s: Script, bp: Blueprint, env: str, role: Role, keep: str, retain: int) -> Script:
    role_labels = labels(bp.service, env, role.name)
    s.step("stop-old")
    s.extend(d.stop_others(role_labels, keep=keep))
    s.step("prune")
    s.extend(d.prune(role_labels, keep=keep, retain=retain, repository=image_repository(role.image),
                     service_label={"service": bp.service}))
    return s
