"""The rollout's plan, as provisioning has one: built by one pure function from what the run
is given (`Context`: blueprint, inventory, secrets, the selection, a rollback's images,
certificates), its options and version, and every host's facts; then carried out by the
executor (`apps.converge`), or printed by `deploy --dry-run`.

`build` decides, per host: the prepare steps (OS set-up, Docker, network, pulls, accessories
to (re)start, kamal-proxy), and the app steps (which proxy roles switch in which batches,
which workers start, what a switch back returns to, the stopping of the old containers, a
percentage canary's split), each with the script it runs (`stages`). No I/O, no clock, no
randomness: a canary's cookie is passed in. What only the run can know (a refused switch, the
watch's verdict, a host that stops answering) stays with the executor, which then runs the
plan's `on_failure` steps.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import accessories, hostdumps
from ..blueprint_schema import Accessory, Blueprint, Role, Watch
from ..errors import InvalidInput, OperationFailed
from ..inventory import Host, Inventory
from . import strategy
from . import watch as watching
from .canary import CanaryState
from .commands import hardening as hardening_cmds
from .commands import proxy as proxy_cmds
from .commands.facts import HostFacts
from .commands.script import Script
from .contract import (
    ContainerEnv,
    accessory_container,
    accessory_env,
    container_name,
    image_ref,
    role_env,
)
from .stages import (
    accessory_hash,
    accessory_script,
    canary_split_script,
    canary_unsplit_script,
    host_setup_script,
    prepare_script,
    proxy_commit_script,
    proxy_switch_back_script,
    proxy_switch_script,
    schedule_script,
    worker_abort_script,
    worker_start_parts,
    worker_start_script,
)

DEPLOY, ROLLBACK, PROMOTE, ABORT = "deploy", "rollback", "promote", "abort"


@dataclass
class RolloutOptions:
    version: str
    break_lock: bool = False
    concurrency: int = 20
    reboot_accessories: tuple[str, ...] = ()
    kind: str = DEPLOY              # deploy | rollback | promote | abort (recorded in the history)
    roles: tuple[str, ...] = ()     # only these roles' hosts (Kamal's -r); accessories elsewhere untouched
    hosts: tuple[str, ...] = ()     # only these hosts (Kamal's -h)
    canary: strategy.CanarySpec | None = None   # deploy --canary
    continue_on_error: bool = False  # keep the hosts that switched before a refused switch
    paused: CanaryState | None = None    # promote/abort: the canary they finish


# the stages of a host's steps, in the order a run takes them
PREPARE, SWITCH, SPLIT, START, COMMIT, SWITCH_BACK, UNSPLIT, REMOVE = (
    "prepare", "switch", "split", "start", "stop old", "switch back", "end split", "remove new")


@dataclass(frozen=True)
class Context:
    """What a run is given, besides its options and the facts (`Rollout.context()`)."""

    bp: Blueprint
    inv: Inventory
    secrets: Mapping[str, str] = field(repr=False)
    selected: frozenset[str] = frozenset()
    images: Mapping[str, str] = field(default_factory=dict)       # role -> image a rollback returns to
    certificates: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    roles: frozenset[str] | None = None                            # --roles (None: every role)

    @property
    def env(self) -> str:
        return self.inv.env

    def role_hosts(self, role: str) -> list[Host]:
        if self.roles is not None and role not in self.roles:
            return []
        return [h for h in self.inv.role_hosts(role) if h.name in self.selected]

    def host_roles(self, host: Host) -> list[str]:
        """The app roles this run works on at ``host``: its own and those placed on it."""
        return [r for r in host.app_roles if r in self.bp.roles and (self.roles is None or r in self.roles)]

    def role_image(self, role: str, version: str) -> str:
        return self.images.get(role) or image_ref(self.bp.roles[role].image, version)

    def app_env(self, role: str, version: str) -> ContainerEnv:
        return role_env(self.bp, role, self.inv, dict(self.secrets), version)

    def proxy_roles(self) -> list[str]:
        return [role.name for role in self.bp.roles.values() if role.proxy is not None and self.role_hosts(role.name)]


@dataclass(frozen=True)
class HostWork:
    """What one host needs before its app can start (decided from its facts)."""

    host: Host
    install: str | None = None
    network: bool = False
    pulls: tuple[str, ...] = ()
    check_images: tuple[str, ...] = ()   # pulled app images whose `service` label is checked
    accessories: tuple[str, ...] = ()
    proxy: bool = False
    harden: bool = False           # the OS set-up of the blueprint's `hosts:` section differs
    tuned: Mapping[str, Accessory] = field(default_factory=dict)   # accessories as run here (tuned to the VM)
    backups: Script | None = field(default=None, repr=False)   # its accessories' backup timers (hostdumps), when they differ

    @property
    def needed(self) -> bool:
        return bool(self.install or self.network or self.pulls or self.accessories or self.proxy or self.harden
                    or self.backups is not None)

    def describe(self) -> str:
        return ", ".join(filter(None, ["set up the OS" if self.harden else "",
                                       "install docker" if self.install else "",
                                       f"pull {len(self.pulls)}" if self.pulls else "",
                                       "boot proxy" if self.proxy else "",
                                       ", ".join(self.accessories),
                                       "backup schedules" if self.backups is not None else ""]))


@dataclass(frozen=True)
class Step:
    """One exec a host would get, with the script it runs."""

    host: str
    stage: str                     # PREPARE, SWITCH, ... (above)
    what: str                      # as progress and errors name it: "switch web v2"
    script: Script = field(default_factory=Script, repr=False)
    role: str | None = None
    batch: int = 0                 # the role's batch it belongs to (1-based), 0 outside batches
    batches: int = 0
    on_failure: bool = False       # run only when the rollout is judged bad
    # a worker's start as two execs (the start, then the wait for readiness), for a host that
    # may start it while accessories elsewhere are still starting: `stages.worker_start_parts`
    parts: tuple[Script, Script] | None = field(default=None, repr=False)

    def to_dict(self, scripts: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage, "what": self.what, "role": self.role}
        if self.batch:
            out |= {"batch": self.batch, "batches": self.batches}
        out["on_failure"] = self.on_failure
        if scripts:
            out["script"] = self.script.text()
        return out


@dataclass(frozen=True)
class HostPlan:
    work: HostWork
    steps: tuple[Step, ...] = ()

    @property
    def name(self) -> str:
        return self.work.host.name

    def step(self, stage: str, role: str | None = None) -> Step:
        for s in self.steps:
            if s.stage == stage and (role is None or s.role == role):
                return s
        raise KeyError(f"{self.name}: no {stage} step" + (f" for {role}" if role else ""))


@dataclass(frozen=True)
class AppPlan:
    """What the apps step does with ``version``, from the facts."""

    version: str
    switch: dict[str, list[Host]]                 # proxy role -> hosts that switch now, in order
    batch: dict[str, int]                         # proxy role -> hosts switched at once
    previous: dict[tuple[str, str], str | None]   # (proxy role, host) -> the container it served before
    already: dict[str, list[Host]] = field(default_factory=dict)   # proxy role -> hosts a canary switched
    commit: bool = True                           # stop the old containers once judged good
    split: tuple[int, str] | None = None          # (percent, cookie): a percentage canary
    stop_split: bool = False                      # the promotion of a percentage canary
    watch: Watch | None = None
    cookie: str | None = None                     # sent by the watch's probes (percentage canary)
    continue_on_error: bool = False
    workers: bool = True
    reboot_proxy: frozenset[tuple[str, str]] = frozenset()  # (role, host): its proxy lacks the certificates' mount
    unlike: frozenset[str] = frozenset()          # hosts serving nothing yet, or not as the new version (TLS)
    maintenance: str | None = None                # maintenance mode's message: each switch keeps it on
    groups: dict[str, list[list[Host]]] = field(default_factory=dict)          # proxy role -> its batches
    fresh: frozenset[str] = frozenset()           # proxy roles whose first batch serves nothing yet
    worker_groups: dict[str, list[list[Host]]] = field(default_factory=dict)   # worker role -> its batches


@dataclass(frozen=True)
class RolloutPlan:
    """Everything a run does, per host and stage; `apps` is None for a prepare-only run."""

    kind: str
    version: str | None
    hosts: tuple[HostPlan, ...]
    apps: AppPlan | None = None
    reboot: tuple[str, ...] = ()                  # accessories restarted on request
    notes: tuple[str, ...] = ()                   # said as warnings before anything runs
    probes: tuple[str, ...] = ()                  # what the watch would probe (every planned host switched)

    def host(self, name: str) -> HostPlan:
        for hp in self.hosts:
            if hp.name == name:
                return hp
        raise KeyError(name)

    def work(self, name: str) -> HostWork:
        return self.host(name).work

    def steps(self) -> list[Step]:
        """Every step, in the order a run takes them: prepare, switches and worker starts
        batch by batch, the stopping of old containers; then what a failure would run."""
        every = [s for hp in self.hosts for s in hp.steps]
        order = {PREPARE: 0, SWITCH: 1, SPLIT: 1, START: 1, COMMIT: 2, SWITCH_BACK: 3, UNSPLIT: 3, REMOVE: 3}
        return sorted(every, key=lambda s: (order[s.stage], s.batch))

    def to_dict(self, scripts: bool = False) -> dict[str, Any]:
        """The plan as JSON (keys documented in the README, "deploy --dry-run --json")."""
        apps = self.apps
        out: dict[str, Any] = {"kind": self.kind, "version": self.version, "hosts": []}
        for hp in self.hosts:
            w = hp.work
            out["hosts"].append({
                "name": hp.name, "role": w.host.app_role or w.host.role, "roles": list(w.host.app_roles),
                "prepare": None if not w.needed else {
                    "os_setup": w.harden, "install_docker": w.install, "network": w.network,
                    "pull": list(w.pulls), "accessories": list(w.accessories), "proxy": w.proxy},
                "previous": apps.previous.get((w.host.role, hp.name)) if apps else None,
                "serving": {role: before for (role, name), before in apps.previous.items() if name == hp.name}
                if apps else {},
                "steps": [s.to_dict(scripts) for s in hp.steps]})
        if apps is not None:
            out["switch"] = {role: [[h.name for h in g] for g in groups] for role, groups in apps.groups.items()}
            out["already"] = {role: [h.name for h in hs] for role, hs in apps.already.items()}
            out["workers"] = {role: [[h.name for h in g] for g in groups]
                              for role, groups in apps.worker_groups.items()}
            out["watch"] = None if apps.watch is None else {
                "seconds": apps.watch.duration, "interval": apps.watch.interval, "probes": list(self.probes),
                "containers": apps.watch.containers}
            out["commit"] = apps.commit
            out["canary"] = None if apps.split is None else {"percent": apps.split[0]}
        out["reboot"] = list(self.reboot)
        out["notes"] = list(self.notes)
        return out


# ---- what each host needs before its app ---------------------------------------------------------
def decide(ctx: Context, host: Host, f: HostFacts, version: str | None, reboot: Collection[str] = (),
           user: str = "root") -> tuple[HostWork, str | None]:
    """What ``host`` needs, from its facts; and a note when the `hosts:` section cannot be
    applied (csdeploy does not log in as root)."""
    bp = ctx.bp
    app_images = list(dict.fromkeys(ctx.role_image(role, version) for role in ctx.host_roles(host))) if version \
        else []
    needed = app_images + [bp.accessories[a].image for a in host.accessories]
    if host.proxy:
        needed.append(bp.rollout.proxy_image)
    pulls = tuple(image for image in dict.fromkeys(needed) if not f.has_image(image))
    for app_image in app_images:
        if app_image not in pulls and f.label(app_image) not in ("", bp.service):
            raise OperationFailed(
                f"{host.name}: image {app_image} has label service={f.label(app_image)}, "
                f"not {bp.service}: refusing to deploy it",
                hint="an image built for another service; build this one with LABEL service=" + bp.service
                     + " (or none)")
    check_images = tuple(image for image in app_images if image in pulls)
    tuned: dict[str, Accessory] = {}
    restart: list[str] = []
    for name in host.accessories:
        acc = tuned[name] = tuned_accessory(bp, name, f)
        want = accessory_hash(acc, accessory_env(acc, dict(ctx.secrets)), host.private_ip)
        have, state = f.accessories.get(accessory_container(bp.service, name), ("", ""))
        if name in reboot or have != want or state != "running":
            restart.append(name)
    harden = hardening_cmds.needed(bp.hosts, f.hardening, *host_slot(ctx.inv, host))
    note = None
    if harden and user != "root":  # its files are root's: said, not failed
        harden = False
        note = (f"hosts: section not applied: it needs root on the hosts and csdeploy logs in as {user} (set "
                "cloud.ssh.user: root, or hosts.ssh_hardening: false to silence this)")
    backups = hostdumps.install_script(bp, ctx.env, host, user, f.backups) if host.accessories else None
    work = HostWork(host, install=None if f.docker else bp.rollout.docker_install, network=not f.network,
                    pulls=pulls, check_images=check_images, accessories=tuple(restart),
                    proxy=host.proxy and f.proxy != "running", harden=harden, tuned=tuned, backups=backups)
    return work, note


def tuned_accessory(bp: Blueprint, name: str, f: HostFacts) -> Accessory:
    """Accessory ``name`` as it runs on a host with these facts: a PostgreSQL one gets `-c`
    settings from the VM's memory and CPUs, except those its own command sets."""
    acc = bp.accessories[name]
    limit = acc.container.resources.memory if acc.container.resources else None
    extra = accessories.tuning_args(acc.image, acc.cmd, f.memory, f.cpus, limit)
    return replace(acc, cmd=(*(acc.cmd or ()), *extra)) if extra else acc


def host_slot(inv: Inventory, host: Host) -> tuple[int, int]:
    """(this host's place among the VMs of its role, how many there are): its own slot in
    the reboot window, so two VMs of one role never reboot at once."""
    group = sorted((h for h in inv.hosts if h.role == host.role), key=lambda h: h.index)
    names = [h.name for h in group]
    return (names.index(host.name) if host.name in names else 0), max(1, len(group))


def proxy_needs_reboot(ctx: Context, host: Host, f: HostFacts) -> bool:
    """A proxy booted before csdeploy mounted the certificates' directory, on a host whose
    role now has a certificate: replaced once, in that host's batch."""
    return bool(host.proxy and f.proxy and any(role in ctx.certificates for role in host.app_roles)
                and proxy_cmds.APPS_MOUNT not in f.proxy_mounts)


def prepare_step(ctx: Context, work: HostWork, reboot: Collection[str], user: str) -> Step:
    bp, host = ctx.bp, work.host
    registry_password = ctx.secrets.get(bp.registry.password) if bp.registry else None
    acc_envs = {a: accessory_env(bp.accessories[a], dict(ctx.secrets)) for a in work.accessories}
    script = host_setup_script(bp, *host_slot(ctx.inv, host)) if work.harden else Script()
    script.extend(prepare_script(bp, host, user=user, install=work.install, network=work.network,
                                 registry_password=registry_password, pulls=list(work.pulls),
                                 check_images=list(work.check_images), accessory_envs=acc_envs, proxy=work.proxy))
    for name in work.accessories:
        script.extend(accessory_script(bp, ctx.env, work.tuned.get(name) or bp.accessories[name], acc_envs[name],
                                       host.private_ip, force=name in reboot))
    if work.backups is not None:
        script.extend(work.backups)
    return Step(host.name, PREPARE, "prepare (" + (work.describe() or "nothing") + ")", script)


# ---- the apps ----------------------------------------------------------------------------------
def app_plan(ctx: Context, opts: RolloutOptions, version: str, facts: Mapping[str, HostFacts],
             cookie: str) -> AppPlan:
    """Who switches in which batches, what each host goes back to, the watch. ``cookie``: a
    percentage canary's rollout cookie. InvalidInput when such a canary has nothing to split
    against on a host."""
    bp = ctx.bp
    switch: dict[str, list[Host]] = {}
    already: dict[str, list[Host]] = {}
    previous: dict[str, str | None] = {}
    batch: dict[str, int] = {}
    unlike: set[str] = set()
    unlike_in: dict[str, set[str]] = {}     # proxy role -> its hosts in `unlike`
    paused = opts.paused
    for name in ctx.proxy_roles():
        hosts = ctx.role_hosts(name)
        new = container_name(bp.service, name, version)
        proxy = bp.roles[name].proxy
        tls = bool(proxy is not None and proxy.ssl)
        for h in hosts:
            previous[(name, h.name)] = before = strategy.previous_container(facts[h.name].running.get(name, []), new)
            if before is None or (before in facts[h.name].tls) != tls:
                unlike.add(h.name)
                unlike_in.setdefault(name, set()).add(h.name)
        if paused is not None and paused.mode == "hosts":
            already[name] = [h for h in hosts if h.name in paused.hosts]
        switch[name] = [h for h in hosts if h not in already.get(name, [])]
        batch[name] = strategy.batch_size(bp, ctx.inv, name, len(hosts))
    spec = opts.canary
    split = None
    if spec is not None and spec.percent is not None:
        missing = [h for name, hs in switch.items() for h in hs if previous[(name, h.name)] is None]
        if missing:
            raise InvalidInput(f"--canary {spec}: {', '.join(h.name for h in missing)} serve no other version of "
                               f"the role to split against (first deploy, or {version} runs there already)",
                               hint="deploy normally first; a canary splits traffic between two versions")
        split = (spec.percent, cookie)
    groups: dict[str, list[list[Host]]] = {}
    fresh: set[str] = set()
    for name, hosts in switch.items():
        if split is None:  # hosts serving nothing yet (or not so) first, all at once; the watch waits
            groups[name], first_fresh = strategy.switch_groups(hosts, unlike_in.get(name, set()), batch[name])
            if first_fresh:
                fresh.add(name)
        else:
            groups[name] = strategy.batches(hosts, batch[name])
    workers = spec is None
    worker_groups = {}
    if workers:
        for role in bp.roles.values():
            hosts = ctx.role_hosts(role.name)
            if role.proxy is None and hosts:
                worker_groups[role.name] = strategy.batches(
                    hosts, strategy.batch_size(bp, ctx.inv, role.name, len(hosts)))
    # a proxy lacking the certificates' mount is replaced once per host: in its first proxy role's switch
    reboot = {(name, h.name) for name, hs in switch.items() for h in hs if proxy_needs_reboot(ctx, h, facts[h.name])
              and name == next(r for r in switch if h in switch[r])}
    return AppPlan(version=version, switch=switch, batch=batch, previous=previous, already=already,
                   commit=spec is None, split=split, stop_split=paused is not None and paused.mode == "percent",
                   watch=bp.rollout.watch or (Watch() if spec is not None else None),
                   cookie=split[1] if split else None, continue_on_error=opts.continue_on_error,
                   workers=workers, reboot_proxy=frozenset(reboot), unlike=frozenset(unlike),
                   maintenance=next((f.maintenance for f in facts.values() if f.maintenance is not None), None),
                   groups=groups, fresh=frozenset(fresh), worker_groups=worker_groups)


def abort_plan(ctx: Context, paused: CanaryState, facts: Mapping[str, HostFacts]) -> AppPlan:
    """A paused canary's abort: every canary host back to what it served before (a split: ended)."""
    already: dict[str, list[Host]] = {}
    previous: dict[str, str | None] = {}
    for name in ctx.proxy_roles():
        hosts = [h for h in ctx.role_hosts(name) if paused.mode == "percent" or h.name in paused.hosts]
        new = container_name(ctx.bp.service, name, paused.version)
        already[name] = hosts
        for h in hosts:
            previous[(name, h.name)] = strategy.previous_container(facts[h.name].running.get(name, []), new)
    return AppPlan(version=paused.version, switch={}, batch={}, previous=previous, already=already, commit=False,
                   split=(paused.percent or 0, "") if paused.mode == "percent" else None, workers=False)


def watch_targets(ctx: Context, apps: AppPlan, judged: Sequence[tuple[str, Host]],
                  skip: Collection[str] = ()) -> list[watching.Target]:
    """Where the watch probes: each proxy role through its entry point, or every judged host
    (``judged``: (role, host) on the new version; ``skip``: roles whose hosts still 404)."""
    out: list[watching.Target] = []
    spec = apps.watch
    if spec is None or apps.maintenance is not None:  # kamal-proxy answers 503 to everyone: only the containers tell
        return out
    for role_name in dict.fromkeys([*apps.switch, *apps.already]):
        role = ctx.bp.roles[role_name]
        hosts = [h for r, h in judged if r == role_name]
        if role.proxy is None or not hosts or role_name in skip:
            continue
        for address in strategy.watch_targets(ctx.inv, role_name, hosts):
            health = role.proxy.healthcheck.path
            out.append(watching.Target(role_name, address, role.proxy.public_path(health) if health else None,
                                       spec.paths,
                                       host=role.proxy.hosts[0] if role.proxy.hosts else None,
                                       tls=role.proxy.ssl, cookie=apps.cookie,
                                       timeout=role.proxy.healthcheck.timeout))
    return out


def _app_steps(ctx: Context, apps: AppPlan, user: str, abort: bool) -> dict[str, list[Step]]:
    bp, v = ctx.bp, apps.version
    steps: dict[str, list[Step]] = {}

    def add(step: Step) -> None:
        steps.setdefault(step.host, []).append(step)

    def commit(role_name: str, host: Host) -> Step:
        role = bp.roles[role_name]
        first = ctx.inv.role_hosts(role_name)[:1]
        schedule = None
        if first and first[0].name == host.name:  # the role's scheduled jobs live on its first host
            schedule = schedule_script(bp, ctx.env, role, v, ctx.app_env(role_name, v),
                                       image=ctx.role_image(role_name, v), user=user)
        return Step(host.name, COMMIT, f"stop old (handed to the host) {role_name} {v}",
                    proxy_commit_script(bp, ctx.env, role, v, retain=bp.retain_versions, schedule=schedule),
                    role=role_name)

    for name, groups in apps.groups.items():
        role = bp.roles[name]
        for n, group in enumerate(groups, start=1):
            for h in group:
                if apps.split is not None:
                    percent, cookie = apps.split
                    script = canary_split_script(bp, ctx.env, role, v, ctx.app_env(name, v),
                                                 image=ctx.role_image(name, v), percent=percent, cookie=cookie,
                                                 maintenance=apps.maintenance)
                    add(Step(h.name, SPLIT, f"split {percent}% {name} {v}", script, name, n, len(groups)))
                else:
                    script = proxy_switch_script(bp, ctx.env, role, v, ctx.app_env(name, v),
                                                 image=ctx.role_image(name, v),
                                                 certificate=ctx.certificates.get(name),
                                                 stop_split=apps.stop_split,
                                                 reboot_proxy=(name, h.name) in apps.reboot_proxy,
                                                 maintenance=apps.maintenance)
                    add(Step(h.name, SWITCH, f"switch {name} {v}", script, name, n, len(groups)))
    for name, groups in apps.worker_groups.items():
        role = bp.roles[name]
        for n, group in enumerate(groups, start=1):
            for h in group:
                app_env, image = ctx.app_env(name, v), ctx.role_image(name, v)
                add(Step(h.name, START, f"start {name} {v}",
                         worker_start_script(bp, ctx.env, role, v, app_env, image=image), name, n, len(groups),
                         parts=worker_start_parts(bp, ctx.env, role, v, app_env, image=image)))
    judged = [(name, h) for name, hosts in [*apps.switch.items(), *apps.already.items()] for h in hosts]
    if apps.commit:
        for name, h in judged:
            add(commit(name, h))
        for name, groups in apps.worker_groups.items():
            for h in (h for g in groups for h in g):
                add(commit(name, h))
    for name, h in judged:
        role = bp.roles[name]
        before = apps.previous.get((name, h.name))
        if apps.split is not None:
            add(Step(h.name, UNSPLIT, f"switch {name} back to {before or 'nothing'}",
                     canary_unsplit_script(bp, role, v), name, on_failure=not abort))
        else:
            add(Step(h.name, SWITCH_BACK, f"switch {name} back to {before or 'nothing'}",
                     proxy_switch_back_script(bp, role, v, before), name, on_failure=not abort))
    for name, groups in apps.worker_groups.items():
        for h in (h for g in groups for h in g):
            add(Step(h.name, REMOVE, f"remove {name} {v}", worker_abort_script(bp, bp.roles[name], v), name,
                     on_failure=True))
    return steps


def unplaced_note(ctx: Context, role: Role) -> str:
    """A role the blueprint puts on another's VMs that the inventory (written by an older
    create-env) does not place yet: said, not guessed at."""
    if role.run_on is None or ctx.inv.role_hosts(role.name) or not ctx.inv.role_hosts(role.run_on) \
            or (ctx.roles is not None and role.name not in ctx.roles):
        return ""
    return (f"role {role.name} runs on role {role.run_on}'s VMs (run_on), which this environment's inventory does "
            f"not show yet: it is not deployed; run `csdeploy create-env` again to place it")


def build(ctx: Context, facts: Mapping[str, HostFacts], targets: Sequence[Host], *, kind: str = "deploy",
          apps: AppPlan | None = None, reboot: Collection[str] = (), user: str = "root",
          prepare: bool = True) -> RolloutPlan:
    """The whole run's plan: each target's preparation (from its facts), then ``apps``' steps.
    ``prepare`` False: no host is prepared (an abort only switches back)."""
    version = apps.version if apps is not None else None
    app_steps = _app_steps(ctx, apps, user, kind == ABORT) if apps is not None else {}
    notes: list[str] = [note for note in map(lambda role: unplaced_note(ctx, role), ctx.bp.roles.values()) if note]
    hosts: list[HostPlan] = []
    for h in targets:
        if prepare:
            work, note = decide(ctx, h, facts[h.name], version, reboot, user)
        else:
            work, note = HostWork(h), None
        if note and note not in notes:
            notes.append(note)
        steps = [prepare_step(ctx, work, reboot, user)] if work.needed else []
        hosts.append(HostPlan(work, tuple(steps + app_steps.pop(h.name, []))))
    assert not app_steps, f"app steps for hosts outside the run: {sorted(app_steps)}"
    probes: tuple[str, ...] = ()
    if apps is not None and apps.watch is not None and kind != ABORT:
        judged = [(name, h) for name, hs in [*apps.switch.items(), *apps.already.items()] for h in hs]
        spec = apps.watch
        probes = tuple(t.url(p) for t in watch_targets(ctx, apps, judged)
                       for p in ([t.health] if spec.health and t.health else []) + [c.path for c in t.paths])
    return RolloutPlan(kind=kind, version=version, hosts=tuple(hosts), apps=apps, reboot=tuple(reboot),
                       notes=tuple(notes), probes=probes)
