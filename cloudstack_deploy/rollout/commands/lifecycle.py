"""Day-2 life cycle of an app role's containers and of an accessory's: stop, start, remove, details,
prune; start, stop, restart, remove (its data kept unless asked), upgrade.

Each script prints one ``NAME|OUTCOME`` line per container or route it acted on (`parse`), so
the caller can say what changed on each host; a script that finds nothing to act on says so
with ``-|none`` rather than failing, except `app_start` and the accessory's `start`/`stop`/
`restart`, which stop with NOTHING_EXIT: there is nothing there to start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...blueprint_schema import Proxy
from . import docker as d
from . import proxy as p
from .script import Pipe, Script, Var, Word, differs, empty, equals, nonempty, q, succeeds

NOTHING_EXIT = 79        # no container to act on (never deployed here, or removed)
PROXY_REFUSED_EXIT = 80  # kamal-proxy refused the started container (its health check failed)
NONE = "-|none"


def parse(stdout: str) -> dict[str, str]:
    """``NAME|OUTCOME`` lines -> {name: outcome} (``-|none``: nothing there, an empty dict)."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        name, sep, outcome = line.partition("|")
        if sep and name != "-" and outcome and " " not in name:
            out[name] = outcome
    return out


# ---- app roles --------------------------------------------------------------------------------

def app_stop(labels: Mapping[str, str], *, timeout: int = 30) -> Script:
    """Stop every running container of the role on this host (the current one, and any left over)."""
    s = Script()
    names, name = Var("names"), Var("name")
    s.capture(names, d.ps_names(labels))
    with s.when(empty(names)):
        s.emit(NONE)
    with s.each_word(name, names):
        s.run(d.stop([name], timeout), quiet=True)  # type: ignore[list-item]
        s.emit(name, "|stopped")
    return s


def app_start(labels: Mapping[str, str], current: str | None, *, role: str, service: str | None = None,
              proxy: Proxy | None = None, tls: p.TLSFiles | None = None) -> Script:
    """Start the role's current container on this host: ``current`` (the version the history says
    runs) when it is there, else the newest container of the role. A proxy role's route is then
    pointed at it again through kamal-proxy, health-checked (``service``, ``proxy``): a refusal
    leaves the container running and stops with PROXY_REFUSED_EXIT."""
    s = Script()
    target, state, out, rc = Var("target"), Var("state"), Var("out"), Var("rc")
    s.set(target, "")
    if current is not None:
        s.capture(state, d.inspect(current, d.STATE))
        with s.when(nonempty(state)):
            s.set(target, current)
    with s.when(empty(target)):
        s.capture(target, Pipe(d.ps_names(labels, all_=True), ["head", "-n", "1"]))
    with s.when(empty(target)):
        s.fail(NOTHING_EXIT, f"no container of role {role} on this host: deploy it first")
    s.capture(state, d.inspect(target, d.STATE))
    with s.when(equals(state, "running")):
        s.emit(target, "|running")
    with s.otherwise():
        s.run(["docker", "start", target], quiet=True)
        s.emit(target, "|started")
    if service is not None and proxy is not None:
        s.step("proxy-deploy")
        s.set(rc, "0")
        argv = p.deploy(service, Word(target, f":{proxy.app_port}"), proxy, tls_cert=tls.cert if tls else None,
                        tls_key=tls.key if tls else None)
        s.raw(f"{out.name}=$({q(argv)} 2>&1) || {rc.name}=$?")
        with s.when(differs(rc, "0")):
            s.fail(PROXY_REFUSED_EXIT, "kamal-proxy refused ", target, " (it keeps running): ", out)
        s.emit(service, "|routed")
    return s


def app_remove(labels: Mapping[str, str], *, service: str | None = None, jobs: Script | None = None) -> Script:
    """Remove every container of the role on this host (running ones stopped first), its route in
    kamal-proxy (``service``) and, with ``jobs`` (`jobs.install` of none), its scheduled jobs."""
    s = Script()
    names, name = Var("names"), Var("name")
    s.capture(names, d.ps_names(labels, all_=True))
    with s.each_word(name, names):
        s.run(d.remove([name]), quiet=True)
        s.emit(name, "|removed")
    if service is not None:
        with s.when(succeeds(p.remove(service))):
            s.emit(service, "|route removed")
    if jobs is not None:
        s.extend(jobs)
    with s.when(empty(names)):
        s.emit(NONE)
    return s


DETAILS_FORMAT = "{{.Names}}\t{{.Image}}\t{{.State}}\t{{.Status}}"


def details(labels: Mapping[str, str]) -> Script:
    """The role's (or accessory's) containers on this host: name, image, state, status (tab-separated)."""
    return Script().run(["docker", "ps", "--all", "--format", DETAILS_FORMAT, *d.label_filters(labels)])


def prune(roles: Sequence[tuple[Mapping[str, str], str, str]], retain: int, service_label: Mapping[str, str]
          ) -> Script:
    """For each (role labels, container to keep, image repository): `docker.prune`, then the number
    of containers and images left (``containers|N``, ``images|N``) so the caller can say what went."""
    s = Script()
    before_c, before_i, after_c, after_i = Var("before_c"), Var("before_i"), Var("after_c"), Var("after_i")
    count_c = Pipe(d.ps_names(service_label, all_=True), ["wc", "-l"])
    count_i = Pipe(["docker", "images", "--quiet"], ["wc", "-l"])
    s.capture(before_c, count_c)
    s.capture(before_i, count_i)
    for labels, keep, repository in roles:
        s.extend(d.prune(labels, keep=keep, retain=retain, repository=repository, service_label=service_label))
    s.capture(after_c, count_c)
    s.capture(after_i, count_i)
    diff = "$(( ${%s:-0} - ${%s:-0} ))"
    s.raw(f'printf "containers|%s\\nimages|%s\\n" "{diff % (before_c.name, after_c.name)}" '
          f'"{diff % (before_i.name, after_i.name)}"')
    return s


# ---- accessories ------------------------------------------------------------------------------

def accessory_simple(name: str, action: str, *, timeout: int = 30) -> Script:
    """``start``, ``stop`` or ``restart`` the accessory's container; NOTHING_EXIT when there is none."""
    s = Script()
    state = Var("state")
    s.capture(state, d.inspect(name, d.STATE))
    with s.when(empty(state)):
        s.fail(NOTHING_EXIT, f"no container {name} on this host: `accessory start` (or a deploy) creates it")
    argv: list[str] = ["docker", action, *(["--time", str(timeout)] if action != "start" else []), name]
    s.run(argv, quiet=True)
    s.emit(name, f"|{ {'start': 'started', 'stop': 'stopped', 'restart': 'restarted'}[action]}")
    return s


def accessory_remove(name: str, *, env_file: str, data: Sequence[str] = ()) -> Script:
    """Remove the accessory's container and its env file. ``data``: also delete these volumes
    (host directories: their files; named volumes: the volume) — only on `--delete-data`."""
    s = Script()
    state = Var("state")
    s.capture(state, d.inspect(name, d.STATE))
    with s.when(nonempty(state)):
        s.run(d.remove([name]), quiet=True)
        s.emit(name, "|removed")
    with s.otherwise():
        s.emit(name, "|none")
    s.run(["rm", "-f", env_file])
    for source in data:
        if source.startswith("/"):
            with s.when(succeeds(["test", "-e", source])):
                s.run(["rm", "-rf", "--", source])
                s.emit(source, "|deleted")
        else:
            with s.when(succeeds(["docker", "volume", "inspect", source])):
                s.run(["docker", "volume", "rm", source], quiet=True)
                s.emit(source, "|deleted")
    return s


def image_id(name: str) -> Script:
    """Prints ``NAME|image <id>``: the image the container runs (``NAME|image `` when there is none)."""
    s = Script()
    have = Var("have")
    s.capture(have, d.inspect(name, d.IMAGE))
    return s.emit(name, "|image ", have)
