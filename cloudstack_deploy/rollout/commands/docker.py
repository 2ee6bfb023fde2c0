"""Docker engine commands: detect, install, log in, pull, networks, containers, waits, prune.

Argv builders return lists of words; fragment builders return a `Script` piece that a stage
extends. Formats and label filters are defined here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ...blueprint_schema import ContainerSettings
from .script import (
    Argv,
    Cond,
    Pipe,
    Script,
    Var,
    Word,
    at_least,
    differs,
    empty,
    equals,
    matches,
    nonempty,
    q,
    succeeds,
)

NETWORK = "kamal"
LOG_OPTS = ("--log-opt", "max-size=10m")

#: `docker inspect` formats, each written once.
STATE = "{{.State.Status}}"
HEALTH_STATE = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.Status}}"
HEALTH_STATE_STARTED = HEALTH_STATE + " {{.State.StartedAt}}"
#: The container's own HEALTHCHECK, one word a line, its kind first (`CMD` or `CMD-SHELL`);
#: nothing when it has none.
HEALTH_TEST = "{{with .Config.Healthcheck}}{{range .Test}}{{println .}}{{end}}{{end}}"
#: How long one early run of a container's own HEALTHCHECK may take (`own_check`).
OWN_CHECK_TIMEOUT = 5
NAMES = "{{.Names}}"
IMAGE = "{{.Image}}"
REPO_TAG = "{{.Repository}}:{{.Tag}}"
FIRST_IP = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
RESTARTS = "{{.RestartCount}} {{.State.Status}} {{.State.StartedAt}}"


def label_format(label: str) -> str:
    return f'{{{{index .Config.Labels "{label}"}}}}'


def ps_label(label: str) -> str:
    """`docker ps --format` of one label's value (empty when the container has none)."""
    return f'{{{{.Label "{label}"}}}}'


def label_filters(labels: Mapping[str, str]) -> list[str]:
    """``--filter label=k=v`` for each label: how csdeploy finds its containers."""
    out: list[str] = []
    for k, v in labels.items():
        out += ["--filter", f"label={k}={v}"]
    return out


# ---- engine -------------------------------------------------------------------------------------

def version() -> Argv:
    return ["docker", "version", "--format", "{{.Server.Version}}"]


def ensure_installed(method: str, user: str) -> Script:
    """Install Docker when it is missing (``method``), start it, let ``user`` use it.

    ``apt``: the distribution's docker.io (templates that ship Debian's packages), with pigz:
    dockerd decompresses pulled layers with ``unpigz`` when it finds one, as Docker's own
    packages recommend (Debian's docker.io does not): a pull of the lab's four images took 5.5 s
    instead of 6.7 s with it (the decompression beside the download), for the same CPU;
    ``script``: Docker's convenience script (real clouds, any distribution);
    ``none``: only check, and say what to do.
    """
    s = Script()
    missing = ~succeeds(["command", "-v", "docker"])
    if method == "none":
        with s.when(missing):
            s.fail(69, "docker is not installed on this host (rollout.docker_install: none)")
        return s
    with s.when(missing):
        s.step("install-docker")
        if method == "apt":
            s.raw("export DEBIAN_FRONTEND=noninteractive")
            s.run(["apt-get", "update", "-qq"])
            s.run(["apt-get", "install", "-y", "-qq", "docker.io", "pigz"], quiet=True)
        elif method == "script":
            s.run(Pipe(["curl", "-fsSL", "https://get.docker.com"], ["sh"]))
        else:
            raise ValueError(f"unknown Docker install method {method!r}")
    with s.when(~succeeds(version())):
        s.raw("(systemctl enable --now docker || service docker start) >/dev/null 2>&1 || true")
        i = Var("i")
        s.set(i, "0")
        with s.loop():
            with s.when(succeeds(version())):
                s.break_()
            s.increment(i)
            with s.when(at_least(i, 61)):
                s.fail(70, "docker did not start")
            s.sleep(1)
    if user != "root":
        s.run(["usermod", "-aG", "docker", user], may_fail=True)
    return s


def ensure_network(name: str = NETWORK) -> Script:
    """Create the shared network unless it exists."""
    s = Script()
    with s.when(~succeeds(["docker", "network", "inspect", name])):
        s.run(["docker", "network", "create", name], quiet=True)
    return s


# ---- registry and images ----------------------------------------------------------------------

def login(server: str, username: str) -> Argv:
    """The password comes on stdin (``Script.stdin_to``), never in argv."""
    return ["docker", "login", server, "--username", username, "--password-stdin"]


def pull(image: str) -> Argv:
    return ["docker", "pull", "--quiet", image]


def pull_all(images: Sequence[str]) -> Script:
    """Pull ``images`` at once (the engine fetches and unpacks them side by side); stop, naming
    the image, if any pull failed."""
    s = Script()
    if len(images) == 1:
        return s.run(pull(images[0]))
    for n, image in enumerate(images):
        s.raw(f"{q(pull(image))} >/dev/null & pull_{n}=$!")
    for n, image in enumerate(images):
        s.raw(f"wait $pull_{n} || {{ {q(['echo', f'docker pull {image} failed'])} >&2; exit 1; }}")
    return s


def image_exists(image: str) -> Argv:
    return ["docker", "image", "inspect", "--format", "{{.Id}}", image]


def image_label(image: str, label: str) -> Argv:
    return ["docker", "image", "inspect", "--format", label_format(label), image]


def images(repository: str) -> Argv:
    return ["docker", "images", "--format", REPO_TAG, repository]


def image_remove(image: str | Var) -> Argv:
    return ["docker", "image", "rm", image]


def require_label(image: str, label: str, want: str, code: int) -> Script:
    """Stop with ``code`` when ``image`` carries ``label`` naming something other than ``want``
    (an image built for another service is never run); an image without the label (any public
    image) passes: csdeploy labels the containers it starts itself."""
    s = Script()
    got = Var("got")
    s.capture(got, image_label(image, label), may_fail=False)
    with s.when(nonempty(got) & differs(got, want) & differs(got, "<no value>")):
        s.fail(code, f"image {image} has label {label}=", got, f", not {want}: refusing to deploy it")
    return s


# ---- containers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mount:
    """A volume in a container: a named volume (``source`` is its name) or a host directory
    (``source`` starts with /)."""

    source: str
    target: str
    readonly: bool = False

    def word(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.readonly else "")


def settings_flags(settings: ContainerSettings | None) -> list[str]:
    """`docker run` flags for a role's or accessory's resources, options, restart policy and logging."""
    if settings is None:
        return ["--restart", "unless-stopped", *LOG_OPTS]
    out = ["--restart", settings.restart]
    res = settings.resources
    if res is not None:
        if res.cpus is not None:
            out.append(f"--cpus={res.cpus:g}")
        if res.memory is not None:
            out.append(f"--memory={res.memory}b")
        if res.memory_reservation is not None:
            out.append(f"--memory-reservation={res.memory_reservation}b")
    for flag, value in settings.options:
        out.append(f"--{flag}" if value is None else f"--{flag}={value}")
    logging = settings.logging
    if logging is None:
        out += LOG_OPTS
    else:
        if logging.driver:
            out.append(f"--log-driver={logging.driver}")
        opts = logging.options if logging.options or logging.driver else {"max-size": "10m"}
        for k, v in opts.items():
            out += ["--log-opt", f"{k}={v}"]
    return out


def run(*, name: str, image: str, env: Mapping[str, str] = {}, env_file: str | None = None,
        labels: Mapping[str, str] = {}, network: str = NETWORK, publish: Sequence[str] = (),
        volumes: Sequence[str] = (), mounts: Sequence[Mount] = (), cmd: Sequence[str] | None = None,
        settings: ContainerSettings | None = None, health_cmd: str | None = None,
        health_interval: float | None = None, extra: Sequence[str] = (), restart: str | None = None) -> Argv:
    flags = settings_flags(settings)
    if restart is not None:
        flags[1] = restart
    argv = ["docker", "run", "--detach", *flags[:2], "--name", name, "--network", network, *flags[2:]]
    for k, v in env.items():
        argv += ["--env", f"{k}={v}"]
    if env_file:
        argv += ["--env-file", env_file]
    for k, v in labels.items():
        argv += ["--label", f"{k}={v}"]
    for p in publish:
        argv += ["--publish", p]
    for v in volumes:
        argv += ["--volume", v]
    for m in mounts:
        argv += ["--volume", m.word()]
    if health_cmd:
        argv += ["--health-cmd", health_cmd]
        if health_interval:
            argv += ["--health-interval", f"{health_interval:g}s"]
    argv += list(extra)
    argv.append(image)
    if cmd:
        argv += list(cmd)
    return argv


def ensure_volumes(volumes: Sequence[tuple[str, str | None]], labels: Mapping[str, str]) -> Script:
    """Create each named volume unless it exists: ``(name, directory)`` keeps its files in that
    directory (on a data disk: Docker's local driver bind-mounts it, and still fills an empty
    volume from the image's content, owner and mode, as for any named volume); ``(name, None)``
    in Docker's own place. A host directory source is made if missing."""
    s = Script()
    for name, directory in volumes:
        if name.startswith("/"):
            s.run(["mkdir", "-p", name])
            continue
        create: list[str] = ["docker", "volume", "create"]
        for k, v in labels.items():
            create += ["--label", f"{k}={v}"]
        if directory is not None:
            create += ["--driver", "local", "--opt", "type=none", "--opt", "o=bind", "--opt", f"device={directory}"]
        with s.when(~succeeds(["docker", "volume", "inspect", name])):
            if directory is not None:
                s.run(["mkdir", "-p", directory])
            s.run([*create, name], quiet=True)
    return s


def inspect(name: str | Var, fmt: str) -> Argv:
    return ["docker", "inspect", "--format", fmt, name]


def start(name: str) -> Argv:
    return ["docker", "start", name]


def stop(names: Sequence[str], timeout: int = 30) -> Argv:
    return ["docker", "stop", "--time", str(timeout), *names]


def remove(names: Sequence[str | Var]) -> Argv:
    return ["docker", "rm", "--force", *names]


def logs(name: str | Var, tail: int = 50, follow: bool = False, timestamps: bool = False,
         since_seconds: int | None = None) -> Argv:
    """``docker logs``: the last ``tail`` lines, of the last ``since_seconds`` only when given."""
    argv: list[str | Var] = ["docker", "logs", "--tail", str(int(tail))]
    if since_seconds is not None:
        argv += ["--since", f"{int(since_seconds)}s"]
    if follow:
        argv.append("--follow")
    if timestamps:
        argv.append("--timestamps")
    return [*argv, name]


def ps_json(labels: Mapping[str, str]) -> Argv:
    return ["docker", "ps", "--all", "--no-trunc", "--format", "{{json .}}", *label_filters(labels)]


def ps_names(labels: Mapping[str, str], *, all_: bool = False, exited: bool = False, fmt: str = NAMES) -> Argv:
    """Names of the containers carrying ``labels`` (or ``fmt`` of each), newest first (docker's order)."""
    argv = ["docker", "ps", *(["--all"] if all_ or exited else []), "--format", fmt, *label_filters(labels)]
    return argv + (["--filter", "status=exited"] if exited else [])


def ps_images(labels: Mapping[str, str]) -> Argv:
    return ["docker", "ps", "--all", "--format", IMAGE, *label_filters(labels)]


def health(name: str) -> Argv:
    """`healthy`, `unhealthy`, `starting`, or `none` (no HEALTHCHECK), then the state."""
    return inspect(name, HEALTH_STATE_STARTED)


def exec_(name: str | Var, cmd: Sequence[str], interactive: bool = False, tty: bool = False) -> Argv:
    return ["docker", "exec", *(["--interactive"] if interactive else []), *(["--tty"] if tty else []), name, *cmd]


def run_once(*, image: str | Var, cmd: Sequence[str], env: Mapping[str, str] = {}, env_file: str | None = None,
             mounts: Sequence[Mount] = (), network: str = NETWORK, labels: Mapping[str, str] = {},
             interactive: bool = False, tty: bool = False) -> Argv:
    """`docker run --rm` in the foreground: a one-off container (removed when ``cmd`` ends) with a
    role's env and volumes; ``interactive``/``tty`` attach stdin and a terminal."""
    argv: list[str | Var] = ["docker", "run", "--rm", *(["--interactive"] if interactive else []),
                             *(["--tty"] if tty else []), "--network", network]
    for k, v in env.items():
        argv += ["--env", f"{k}={v}"]
    if env_file:
        argv += ["--env-file", env_file]
    for k, v in labels.items():
        argv += ["--label", f"{k}={v}"]
    for m in mounts:
        argv += ["--volume", m.word()]
    return [*argv, image, *cmd]


def current(labels: Mapping[str, str], into: Var) -> Script:
    """``into`` = the newest running container with ``labels`` (empty when none)."""
    s = Script()
    s.capture(into, Pipe(ps_names(labels), ["head", "-n", "1"]))
    return s


def restart_states(names: Sequence[str]) -> Script:
    """One line per container: ``NAME|RESTARTS STATE STARTED_AT`` (``NAME|`` when it is gone)."""
    s = Script()
    v = Var("v")
    for name in names:
        s.capture(v, inspect(name, RESTARTS))
        s.emit(name, "|", v)
    return s


def show_logs(name: str | Var, tail: int = 30) -> Script:
    """The container's last log lines on stderr (for a failure report)."""
    s = Script()
    s.raw(f"{q(logs(name, tail))} >&2 2>&1 || true")
    return s


def clock(into: Var) -> Script:
    """``into`` = the host's monotonic clock in hundredths of a second (/proc/uptime; whole
    seconds from `date` where there is none)."""
    s = Script()
    s.raw(f"{into.name}=$(cut -d' ' -f1 /proc/uptime 2>/dev/null || date +%s.00); "
          f"{into.name}=${{{into.name}%.*}}${{{into.name}#*.}}")
    return s


def elapsed_at_least(start: Var, now: Var, seconds: float) -> Cond:
    return Cond(f"[ $(( ${now.name} - ${start.name} )) -ge {int(seconds * 100)} ]")


WAIT_STEP = 0.5
PROBE_STEP = 0.2   # between two runs of a readiness probe (each is a docker exec: ~0.1 s itself)
HEALTH_STEP = 0.1  # between two reads of a HEALTHCHECK still `starting` (a docker inspect: cheap)


def own_check(name: str | Var, test: Var) -> Cond:
    """True when container ``name``'s own HEALTHCHECK (``test``, as `HEALTH_TEST` reads it)
    passes now, run as Docker runs it: `docker exec` in the container (its user, env and
    working directory), a `CMD-SHELL` test through `/bin/sh -c`, a `CMD` test word for word.

    Docker runs the check only once an interval (30 s unless the image says otherwise) has
    passed since the start, and says `healthy` after one passing run; running that same check
    at once tells the same thing without waiting for Docker's turn. A check that fails, takes
    more than OWN_CHECK_TIMEOUT seconds, or cannot run (no `timeout` on the host) is simply
    not an early answer: Docker's own verdict still decides."""
    run = q(["timeout", str(OWN_CHECK_TIMEOUT), *exec_(name, [])])
    return Cond(
        f"( IFS=$(printf '\\n_'); IFS=${{IFS%_}}; set -f; set -- ${test.name}; "
        '[ $# -ge 2 ] || exit 1; kind=$1; shift; case $kind in '
        f'CMD-SHELL) exec {run} /bin/sh -c "$*";; CMD) exec {run} "$@";; '
        "esac; exit 1 ) >/dev/null 2>&1")


def wait_ready(name: str, *, timeout: float, readiness: float, remove_on_fail: bool = False,
               code: int = 66, probe: Sequence[str] | None = None, since: Var | None = None) -> Script:
    """Wait until ``name`` is healthy (a HEALTHCHECK: Docker's verdict, or, while Docker still
    says `starting`, the same check passing when run at once: `own_check`) or, without one,
    still running ``readiness`` s after the wait began (measured on the host's clock, not by counting polls: each `docker inspect`
    takes time too). With ``probe`` (a blueprint's `readiness.cmd`), ready is when that
    command, run inside the running container, exits 0 (no fixed wait); unhealthy is still
    refused.

    On failure print the container's state and last logs; ``remove_on_fail`` then removes it
    (a new app version that never became ready must not linger beside the old one).

    ``since``: when the container started (`clock`, e.g. read back by `resume_start`), if that
    was before this wait: the readiness delay counts from then; ``timeout`` still counts from
    the wait's own start.
    """
    s = Script()
    st, now, test = Var("st"), Var("now"), Var("hc_test")
    t0 = since or Var("t0")
    waited = Var("wait_t0") if since is not None else t0

    def give_up(*why: str | Var) -> None:
        s.say(*why)
        s.extend(show_logs(name))
        if remove_on_fail:
            s.run(remove([name]), quiet=True, may_fail=True)
        s.exit(code)

    s.extend(clock(waited))
    if probe is None:
        s.capture(test, inspect(name, HEALTH_TEST))
    with s.loop():
        s.capture(st, inspect(name, HEALTH_STATE))
        s.extend(clock(now))
        if probe is not None:
            with s.when(matches(st, "none running", "starting running", "healthy running")
                        & succeeds(exec_(name, probe))):
                s.break_()
        else:
            with s.when(equals(st, "healthy running")):
                s.break_()
            with s.when(equals(st, "none running") & elapsed_at_least(t0, now, readiness)):
                s.break_()
            # Docker has not run the check yet (it waits an interval): its own check, run now
            with s.when(equals(st, "starting running") & own_check(name, test)):
                s.break_()
        with s.when(matches(st, "*exited*", "*dead*", "unhealthy *") | empty(st)):
            give_up(f"container {name} is ", st)
        with s.when(elapsed_at_least(waited, now, timeout)):
            give_up(f"container {name} not ready after {timeout:g}s (", st,
                    ")" if probe is None else f"; readiness.cmd never exited 0: {' '.join(probe)})")
        if probe is None:
            # a HEALTHCHECK turns healthy between two of Docker's checks: seen within 0.1 s of
            # it (not up to half a second later); without one, the readiness delay's end
            with s.when(equals(st, "starting running")):
                s.sleep(HEALTH_STEP)
            with s.otherwise():
                s.extend(sleep_until_or_step(t0, now, readiness))
        else:
            s.sleep(PROBE_STEP)
    return s


def note_start(path: str, fresh: Var) -> Script:
    """Write down on the host when a container started (``fresh`` = 1: now; `clock`), for
    `resume_start` in a later exec; a container kept from before leaves nothing written."""
    s = Script()
    at = Var("started_at")
    s.run(["rm", "-f", path])
    with s.when(equals(fresh, "1")):
        s.extend(clock(at))
        s.raw(f"printf '%s\\n' \"${at.name}\" > {q([path])}")
    return s


def resume_start(name: str, path: str, since: Var, *, again: bool) -> Script:
    """``since`` = when `note_start` saw ``name`` start (empty: it was kept, nothing to judge).
    With ``again``, a container that stopped or was restarted by Docker since then (it ran
    while what it needs, its accessories, was still starting) is started again now, and
    ``since`` is now: its readiness is judged from that start, not from the one that failed."""
    s = Script()
    rs = Var("restarts")
    s.capture(since, ["cat", path])
    s.run(["rm", "-f", path])
    if again:
        s.capture(rs, inspect(name, RESTARTS))
        with s.when(nonempty(since) & nonempty(rs) & ~matches(rs, "0 running *")):
            with s.when(matches(rs, "* running *", "* restarting *")):
                s.say(f"container {name} was restarted by Docker before its accessories were ready "
                      "(restarts, state, start: ", rs, "): judged from that start")
            with s.otherwise():
                s.say(f"container {name} stopped before its accessories were ready "
                      "(restarts, state, start: ", rs, "): starting it again")
                s.run(start(name), quiet=True)
            s.extend(clock(since))
    return s


def sleep_until_or_step(t0: Var, now: Var, seconds: float) -> Script:
    """Sleep one WAIT_STEP, or less when ``seconds`` after ``t0`` comes sooner (so a readiness
    delay ends on time, with a docker inspect every half second rather than constantly)."""
    s = Script()
    rem = Var("rem")
    step = int(WAIT_STEP * 100)
    s.raw(f"{rem.name}=$(( {int(seconds * 100)} - ${now.name} + ${t0.name} ))")
    s.raw(f"if [ ${rem.name} -gt 0 ] && [ ${rem.name} -lt {step} ]; then "
          f"sleep $(printf '%d.%02d' $(( ${rem.name} / 100 )) $(( ${rem.name} % 100 ))); "
          f"else sleep {WAIT_STEP:g}; fi")
    return s


def start_version(name: str, run_argv: Argv, *, config: str, config_label: str, fresh: Var) -> Script:
    """Have container ``name`` running: keep it when it runs; start it again when it stopped
    with the same configuration (a rollback to a version still on the host: no registry, no
    new container); else (re)create it with ``run_argv``. ``fresh`` = 1 when it started now,
    so its readiness must be proven."""
    s = Script()
    state, have = Var("state"), Var("have")
    s.capture(state, inspect(name, STATE))
    s.capture(have, inspect(name, label_format(config_label)))
    s.set(fresh, "1")
    with s.when(equals(state, "running")):
        s.set(fresh, "0")
    with s.otherwise():
        with s.when(nonempty(state) & equals(have, config)):
            s.run(start(name), quiet=True)
        with s.otherwise():
            with s.when(nonempty(state)):
                s.run(remove([name]), quiet=True)
            s.run(run_argv, quiet=True)
    return s


STOP_SETTLE_SECONDS = 30


def stop_others(labels: Mapping[str, str], keep: str, timeout: int = 30,
                settle: int = STOP_SETTLE_SECONDS) -> Script:
    """Stop every running container with ``labels`` except ``keep``, then make sure, once the
    daemon answers, that none runs: a dockerd restart during the stop cuts it short and starts
    the container again (its restart policy), which left two versions of a role running after
    a deploy that said done (the rollout fault matrix, cell stop old/dockerd). Stopped again
    until none runs, for at most ``settle`` s; then the script fails naming them. One whose
    process is gone while docker still lists it running is removed (`end_ghosts`)."""
    s = Script()
    old, i = Var("old"), Var("i")
    stop = f"{q(['docker', 'stop', '--time', str(timeout)])} $old >/dev/null"
    s.capture(old, Pipe(ps_names(labels), ["grep", "-vx", keep]))
    with s.when(nonempty(old)):
        s.raw(stop + " 2>&1 || true")
        s.set(i, "0")
        with s.loop():
            with s.when(succeeds(["docker", "version"])):
                s.capture(old, Pipe(ps_names(labels), ["grep", "-vx", keep]))
                with s.when(empty(old)):
                    s.break_()
                s.extend(end_ghosts(old))
                s.raw(stop + " 2>&1 || true")
            s.increment(i)
            with s.when(at_least(i, settle)):
                s.fail(1, "still running after ", str(settle), " s of stopping: ", old)
            s.sleep(1)
    return s


def end_ghosts(names: Var) -> Script:
    """Remove each of ``names`` (listed running by ``docker ps``) that is not running: its
    process is gone, or ``docker inspect`` says it ended. On a full disk the daemon kills a
    stopped container but cannot write down that it ended, so ``docker ps`` lists it running for
    good (``docker stop`` then does nothing, even once there is room again) until dockerd
    restarts. It left a deploy that said done with the old version listed beside the new one,
    and a rollback to it would switch to a container that is not there (the rollout fault
    matrix, cells switch/disk and watch/disk). Removing it is what is left to do: it is stopped."""
    s = Script()
    name, pid = Var("ghost"), Var("pid")
    with s.each_word(name, names):
        s.capture(pid, inspect(name, "{{.State.Pid}}"))
        with s.when(nonempty(pid) & (equals(pid, "0") | ~succeeds(["test", "-d", Word("/proc/", pid)]))):
            s.say(name, ": docker lists it running but it is not (the daemon could not record its end: "
                  "is the disk full?); removing it")
            s.run(remove([name]), quiet=True, may_fail=True)
    return s


def prune(labels: Mapping[str, str], keep: str, retain: int, repository: str, service_label: Mapping[str, str]
          ) -> Script:
    """Keep the newest ``retain`` stopped containers with ``labels`` (besides ``keep``); remove
    images of ``repository`` that no container of the service uses any more."""
    s = Script()
    stale, used, found, img = Var("stale"), Var("used"), Var("found"), Var("img")
    s.capture(stale, Pipe(ps_names(labels, exited=True), ["grep", "-vx", keep], ["tail", "-n", f"+{retain + 1}"]))
    with s.when(nonempty(stale)):
        s.raw("docker rm $stale >/dev/null")
    s.capture(used, ps_images(service_label))
    s.capture(found, images(repository))
    with s.each_word(img, found):
        with s.when(~succeeds(Pipe(["printf", "%s\\n", used], ["grep", "-qx", img]))):
            s.run(image_remove(img), quiet=True, may_fail=True)
    return s

