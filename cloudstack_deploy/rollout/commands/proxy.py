"""kamal-proxy: boot the proxy container, switch a role's traffic to a new target (or split
it, for a canary), and give it the TLS certificate a blueprint names.

Certificates live on the host under ``~/.csdeploy/proxy/apps-config/<service>/tls`` (0600,
owned by the kamal-proxy user once written), a directory mounted into the proxy container
at ``/home/kamal-proxy/.apps-config`` (Kamal 2 does the same with ``.kamal/proxy/apps-config``):
kamal-proxy reads them at each deploy and again when it restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...blueprint_schema import Proxy
from . import docker as d
from .host import base_dir
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
    nonempty,
    q,
    succeeds,
)

CONTAINER = "kamal-proxy"
CONFIG_VOLUME = "kamal-proxy-config:/home/kamal-proxy/.config/kamal-proxy"
LABEL = {"csdeploy.proxy": "1"}
APPS_DIR = ".csdeploy/proxy/apps-config"            # on the host, below the deploy user's home
APPS_MOUNT = "/home/kamal-proxy/.apps-config"        # the same directory inside the proxy
MOUNTS = "{{range .Mounts}}{{.Destination}} {{end}}"
HOME = Var("home")
SWITCH_BACK_EXIT = 78


@dataclass(frozen=True)
class TLSFiles:
    """Where one proxied service's certificate and key are, on the host and in the proxy."""

    service: str

    @property
    def host_dir(self) -> str:
        return f"{APPS_DIR}/{self.service}/tls"

    @property
    def cert(self) -> str:
        return f"{APPS_MOUNT}/{self.service}/tls/cert.pem"

    @property
    def key(self) -> str:
        return f"{APPS_MOUNT}/{self.service}/tls/key.pem"


def boot(image: str, *, http_port: int = 80, https_port: int = 443) -> Argv:
    """`docker run` of kamal-proxy; the script must have set ``home`` (see `_home`)."""
    return ["docker", "run", "--name", CONTAINER, "--network", d.NETWORK, "--detach", "--restart", "unless-stopped",
            "--volume", CONFIG_VOLUME, "--volume", Word(HOME, f"/{APPS_DIR}:{APPS_MOUNT}"),
            "--publish", f"{http_port}:80", "--publish", f"{https_port}:443",
            *d.LOG_OPTS, *[f"--label={k}={v}" for k, v in LABEL.items()], image, "kamal-proxy", "run"]


def _home(s: Script) -> None:
    """``home`` = the deploy user's home, and the certificates' directory made there (the
    bind mount's source must exist, and be the user's, before the proxy starts)."""
    s.capture(HOME, ["printenv", "HOME"], may_fail=False)
    s.run(["mkdir", "-p", APPS_DIR])


def deploy(service: str, target: str | Word, proxy: Proxy, *, tls_cert: str | None = None,
           tls_key: str | None = None, deploy_timeout: Word | None = None) -> Argv:
    """`kamal-proxy deploy`: returns once the target is healthy and the old one drained.
    ``target``: ``container:port`` (a `Word` when the container is a script variable);
    ``deploy_timeout``: what is left of the role's deploy timeout (default: all of it)."""
    hc = proxy.healthcheck
    argv: list[str | Word] = ["docker", "exec", CONTAINER, "kamal-proxy", "deploy", service,
                              Word("--target=", *target.parts) if isinstance(target, Word) else f"--target={target}"]
    for host in proxy.hosts:
        argv.append(f"--host={host}")
    for prefix in proxy.path_prefix:
        argv.append(f"--path-prefix={prefix}")
    if proxy.path_prefix and not proxy.strip_path_prefix:
        argv.append("--strip-path-prefix=false")
    if proxy.ssl:
        argv.append("--tls")
        if tls_cert and tls_key:
            argv += [f"--tls-certificate-path={tls_cert}", f"--tls-private-key-path={tls_key}"]
        if not proxy.ssl_redirect:
            argv.append("--tls-redirect=false")
    if proxy.forward_headers is not None:
        argv.append(f"--forward-headers={'true' if proxy.forward_headers else 'false'}")
    argv += [
        deploy_timeout if deploy_timeout is not None else f"--deploy-timeout={proxy.deploy_timeout:g}s",
        f"--drain-timeout={proxy.drain_timeout:g}s", f"--target-timeout={proxy.response_timeout:g}s",
        f"--health-check-path={hc.path}", f"--health-check-interval={hc.interval:g}s",
        f"--health-check-timeout={hc.timeout:g}s",
    ]
    argv += buffering_flags(proxy)
    return argv


def buffering_flags(proxy: Proxy) -> list[str]:
    """Kamal's `proxy.buffering` as kamal-proxy's flags (a body limit only with its buffering on,
    as kamal-proxy requires)."""
    b = proxy.buffering
    out = []
    if b.requests:
        out.append("--buffer-requests")
        if b.max_request_body:
            out.append(f"--max-request-body={b.max_request_body}")
    if b.responses:
        out.append("--buffer-responses")
        if b.max_response_body:
            out.append(f"--max-response-body={b.max_response_body}")
    if b.memory is not None:
        out.append(f"--buffer-memory={b.memory}")
    return out


def list_services() -> Argv:
    return ["docker", "exec", CONTAINER, "kamal-proxy", "list"]


def remove(service: str) -> Argv:
    return ["docker", "exec", CONTAINER, "kamal-proxy", "remove", service]


def ensure_running(image: str) -> Script:
    """Boot kamal-proxy unless its container exists; start it if it is stopped."""
    s = Script()
    _home(s)
    with s.when(~succeeds(["docker", "container", "inspect", CONTAINER])):
        s.run(boot(image), quiet=True)
    with s.otherwise():
        s.run(d.start(CONTAINER), quiet=True)
    return s


def reboot(image: str, *, timeout: float = 30) -> Script:
    """Replace the proxy container (routes come back from its state volume), wait until it answers."""
    s = Script()
    _home(s)
    s.run(d.remove([CONTAINER]), quiet=True, may_fail=True)
    s.run(boot(image), quiet=True)
    i = Var("i")
    s.set(i, "0")
    with s.loop():
        with s.when(succeeds(list_services())):
            s.break_()
        s.increment(i)
        with s.when(at_least(i, int(timeout * 2) + 1)):
            s.fail(1, f"kamal-proxy did not answer within {timeout:g}s")
        s.sleep(0.5)
    return s


WARM_UP_SECONDS = 10.0
WARM_UP_STEP = 0.1
#: kamal-proxy gets at least this much of the deploy timeout after the warm-up.
MIN_PROXY_SECONDS = 2.0


def wait_healthy(container: str, proxy: Proxy, started: Var | None = None) -> Script:
    """Before asking kamal-proxy: poll the new container's health path from the host every
    0.1 s (curl, else wget) until it answers 2xx, the container stops running, or 10 s (less
    when the deploy timeout is shorter).

    kamal-proxy checks a target at once and then every health-check interval (1 s by
    default): a target still starting costs a whole interval, so the switch waits here, at a
    finer step, and kamal-proxy's first check passes. Without curl or wget on the host, or
    when the wait runs out, kamal-proxy decides as before (and reports why it refused). The
    wait is part of the deploy timeout (see `switch`), never added to it: it also ends once
    that much has passed since ``started`` (the host clock when the switch began)."""
    s = Script()
    ip, i, st, now = Var("ip"), Var("i"), Var("st"), Var("now")
    url = Word("http://", ip, f":{proxy.app_port}{proxy.healthcheck.path}")
    tools = succeeds(["command", "-v", "curl"]) | succeeds(["command", "-v", "wget"])
    limit = max(0.0, min(WARM_UP_SECONDS, proxy.deploy_timeout - MIN_PROXY_SECONDS))
    s.capture(ip, Pipe(d.inspect(container, d.FIRST_IP), ["cut", "-d", " ", "-f1"]))
    with s.when(nonempty(ip) & tools):
        s.set(i, "0")
        with s.loop():
            with s.when(succeeds(["curl", "-fsS", "-o", "/dev/null", "-m", "1", url])
                        | succeeds(["wget", "-q", "-O", "/dev/null", "-T", "1", url])):
                s.break_()
            s.increment(i)
            with s.when(Cond("[ $((i % 10)) -eq 0 ]")):  # the container's state once a second
                s.capture(st, d.inspect(container, d.STATE))
                with s.when(differs(st, "running")):
                    s.break_()
                if started is not None:
                    s.extend(d.clock(now))
                    with s.when(d.elapsed_at_least(started, now, limit)):
                        s.break_()
            with s.when(at_least(i, int(limit / WARM_UP_STEP))):
                s.break_()
            s.sleep(WARM_UP_STEP)
    return s


def remaining_timeout(t0: Var, proxy: Proxy) -> Script:
    """``left`` = what remains of the deploy timeout since ``t0`` (host clock, hundredths),
    at least MIN_PROXY_SECONDS, in milliseconds."""
    s = Script()
    now, left = Var("now"), Var("left")
    s.extend(d.clock(now))
    total, floor = int(proxy.deploy_timeout * 100), int(MIN_PROXY_SECONDS * 100)
    s.raw(f"{left.name}=$(( {total} - ${now.name} + ${t0.name} )); "
          f"[ ${left.name} -ge {floor} ] || {left.name}={floor}; {left.name}=$(( ${left.name} * 10 ))")
    return s


def switch(service: str, container: str, proxy: Proxy, *, tls: TLSFiles | None = None, code: int = 67,
           started: Var | None = None) -> Script:
    """Point ``service`` at ``container`` through kamal-proxy, health-checked. The deploy
    timeout runs from ``started`` (host clock, `d.clock`: the caller set it before starting the
    container, so its start is part of the boot the timeout allows), else from here.

    A refusal leaves the old target serving; it is reported with what kamal-proxy said,
    what GET <health path> answered on the new container (body and HTTP code) and the
    container's last logs; the new container is then removed. A refusal because kamal-proxy
    itself died (killed mid-switch) starts it again (`revive`): its routes, from its state
    volume, still point at the old target, so the host serves the old version again.
    """
    s = Script()
    out, rc, ip, st = Var("out"), Var("rc"), Var("ip"), Var("st")
    t0 = started if started is not None else Var("t0")
    if started is None:
        s.extend(d.clock(t0))
    s.extend(wait_healthy(container, proxy, t0))
    s.extend(remaining_timeout(t0, proxy))
    s.set(rc, "0")
    argv = deploy(service, f"{container}:{proxy.app_port}", proxy, tls_cert=tls.cert if tls else None,
                  tls_key=tls.key if tls else None, deploy_timeout=Word("--deploy-timeout=", Var("left"), "ms"))
    s.raw(f"{out.name}=$({q(argv)} 2>&1) || {rc.name}=$?")
    with s.when(differs(rc, "0")):
        s.say(f"kamal-proxy refused {container}: ", out)
        s.capture(ip, Pipe(d.inspect(container, d.FIRST_IP), ["cut", "-d", " ", "-f1"]))
        s.capture(st, d.inspect(container, d.STATE))
        s.say(f"--- health check on {container}: GET {proxy.healthcheck.path} (container ", st, ")")
        url = Word("http://", ip, f":{proxy.app_port}{proxy.healthcheck.path}")
        curl = ["curl", "-s", "-m", "3", "-w", "(HTTP %{http_code})", url]
        wget = ["wget", "-q", "-S", "-O-", "-T", "3", url]
        s.raw(f"{{ {q(curl)} 2>&1 || {q(wget)} 2>&1; }} | tail -c 600 >&2 || true")
        s.raw("echo >&2")
        s.say(f"--- last logs of {container}:")
        s.extend(d.show_logs(container))
        s.run(d.remove([container]), quiet=True, may_fail=True)
        s.extend(revive(code=code))
        s.exit(code)
    return s


# ---- certificates ---------------------------------------------------------------------------

def install_certificate(tls: TLSFiles, certificate_pem: str, private_key_pem: str) -> Script:
    """Write the certificate and key (0600, from here-documents: never in argv) where the proxy
    reads them, then hand them to the kamal-proxy user inside the container (its directories
    are 0711: the user passes through, lists nothing). Each file is
    written beside its final name and moved over it, so an earlier copy owned by that user
    is replaced even when the deploy user is not root."""
    s = Script()
    s.step("tls-certificate")
    s.run(["mkdir", "-p", tls.host_dir])
    # The proxy's user must reach the files (scripts run with umask 077): through, not list.
    s.run(["chmod", "711", APPS_DIR, f"{APPS_DIR}/{tls.service}", tls.host_dir])
    for name, content in (("cert.pem", certificate_pem), ("key.pem", private_key_pem)):
        final = f"{tls.host_dir}/{name}"
        s.write_file(final + ".new", content)
        s.run(["mv", "-f", final + ".new", final])
    s.run(["docker", "exec", "--user", "root", CONTAINER, "chown", "kamal-proxy:kamal-proxy", tls.cert, tls.key],
          quiet=True)
    return s


# ---- canary split (`kamal-proxy rollout`) ------------------------------------------------------

def rollout_deploy(service: str, target: str, proxy: Proxy) -> Argv:
    """Add ``target`` as the service's rollout target (health-checked like a deploy); traffic
    reaches it only once `rollout set` says which requests go there."""
    return ["docker", "exec", CONTAINER, "kamal-proxy", "rollout", "deploy", service, f"--target={target}",
            f"--deploy-timeout={proxy.deploy_timeout:g}s", f"--drain-timeout={proxy.drain_timeout:g}s"]


def rollout_set(service: str, percent: int, allow: str) -> Argv:
    """Send ``percent`` % of the requests to the rollout target, split by the ``kamal-rollout``
    cookie's value; requests whose cookie is ``allow`` always go there (the watch's probes)."""
    return ["docker", "exec", CONTAINER, "kamal-proxy", "rollout", "set", service, f"--percent={int(percent)}",
            f"--list={allow}"]


def rollout_stop(service: str) -> Argv:
    """Every request to the active target again."""
    return ["docker", "exec", CONTAINER, "kamal-proxy", "rollout", "stop", service]


# ---- switching back ----------------------------------------------------------------------------

def switch_back(service: str, new: str, previous: str | None, proxy: Proxy, *, tls: TLSFiles | None = None
                ) -> Script:
    """Point ``service`` back at ``previous`` (started again if it stopped) and remove ``new``.

    ``previous`` None: the host served nothing before, so the route goes too. When the old
    container is gone or refuses, the new one is kept serving and the script stops with
    SWITCH_BACK_EXIT: a host must never be left without its app.
    """
    s = Script()
    s.step("switch-back")
    if previous is None:
        s.run(remove(service), quiet=True, may_fail=True)
        s.run(d.remove([new]), quiet=True, may_fail=True)
        return s
    st, out, rc = Var("st"), Var("out"), Var("rc")
    s.extend(revive())
    s.capture(st, d.inspect(previous, d.STATE))
    with s.when(empty(st)):
        s.fail(SWITCH_BACK_EXIT, f"cannot switch back: {previous} is gone; {new} keeps serving")
    with s.when(differs(st, "running")):
        s.run(d.start(previous), quiet=True)
    s.set(rc, "0")
    argv = deploy(service, f"{previous}:{proxy.app_port}", proxy, tls_cert=tls.cert if tls else None,
                  tls_key=tls.key if tls else None)
    s.raw(f"{out.name}=$({q(argv)} 2>&1) || {rc.name}=$?")
    with s.when(differs(rc, "0")):
        s.fail(SWITCH_BACK_EXIT, f"kamal-proxy refused to switch back to {previous} ({new} keeps serving): ", out)
    s.run(d.remove([new]), quiet=True, may_fail=True)
    return s


def revive(timeout: float = 15, *, code: int = SWITCH_BACK_EXIT) -> Script:
    """kamal-proxy running and answering: started again when it was killed (a switch that failed
    because the proxy died must not leave the host serving nothing; its routes come back from
    its state volume). Says so on stderr; exits ``code`` when it does not answer in time."""
    s = Script()
    st, i = Var("pst"), Var("i")
    s.capture(st, d.inspect(CONTAINER, d.STATE))
    with s.when(nonempty(st) & differs(st, "running")):
        s.say(f"{CONTAINER} was ", st, ": starting it again")
        s.run(d.start(CONTAINER), quiet=True, may_fail=True)
        s.set(i, "0")
        with s.loop():
            with s.when(succeeds(list_services())):
                s.break_()
            s.increment(i)
            with s.when(at_least(i, int(timeout * 4))):
                s.fail(code, f"{CONTAINER} does not answer after it was started again")
            s.sleep(0.25)
    return s


def unsplit(service: str, new: str) -> Script:
    """End a canary split: every request to the active (old) target, the rollout target removed."""
    s = Script()
    s.step("rollout-stop")
    s.run(rollout_stop(service), quiet=True, may_fail=True)
    s.run(d.remove([new]), quiet=True, may_fail=True)
    return s



# ---- maintenance (`kamal-proxy stop` / `resume`) ----------------------------------------------------
#
# A stopped kamal-proxy service answers every request with 503 and the stop's message; it stays
# stopped through a `deploy` of a new target and a restart of the proxy (kamal-proxy v0.9.2 keeps
# the state), but a service that is removed and deployed again, or a host's first deploy, starts
# running. So `maintenance on` also leaves a marker file on each proxy host: the facts read it,
# and a rollout stops the service again after each switch (`keep_maintenance`).

MAINTENANCE_MARK = "maintenance"
MAINTENANCE_MAX = 500


def maintenance_file(service: str) -> str:
    """The marker of maintenance mode on a proxy host (its content: the message, one line)."""
    return f"{base_dir(service)}/maintenance"


def stop_service(service: str, message: str | Var, drain_timeout: float) -> Argv:
    """`kamal-proxy stop`: every request gets 503 with ``message`` (kamal-proxy's page when empty)."""
    return ["docker", "exec", CONTAINER, "kamal-proxy", "stop", service, Word("--message=", message),
            f"--drain-timeout={drain_timeout:g}s"]


def resume_service(service: str) -> Argv:
    return ["docker", "exec", CONTAINER, "kamal-proxy", "resume", service]


def maintenance_on(app_service: str, services: Sequence[tuple[str, float]], message: str) -> Script:
    """Leave the marker (with ``message``), then stop each of ``services`` (name, drain timeout);
    prints ``maintenance|NAME|on`` for each stopped one, ``maintenance|NAME|none`` for one
    kamal-proxy does not serve here (yet: the marker makes its first deploy stop it)."""
    s = Script()
    s.run(["mkdir", "-p", base_dir(app_service)])
    s.write_file(maintenance_file(app_service), message)
    for name, drain in services:
        with s.when(succeeds(stop_service(name, message, drain))):
            s.emit(MAINTENANCE_MARK, "|", name, "|on")
        with s.otherwise():
            s.emit(MAINTENANCE_MARK, "|", name, "|none")
    return s


def maintenance_off(app_service: str, services: Sequence[str]) -> Script:
    """Remove the marker and resume each of ``services``; prints ``maintenance|NAME|off`` (or ``none``)."""
    s = Script()
    s.run(["rm", "-f", maintenance_file(app_service)])
    for name in services:
        with s.when(succeeds(resume_service(name))):
            s.emit(MAINTENANCE_MARK, "|", name, "|off")
        with s.otherwise():
            s.emit(MAINTENANCE_MARK, "|", name, "|none")
    return s


def keep_maintenance(app_service: str, service: str, message: str, drain_timeout: float) -> Script:
    """After a switch during maintenance: the marker in place (a host new to the environment has
    none yet) and the service stopped again (a first deploy on a host starts it running)."""
    s = Script()
    s.step("maintenance")
    s.write_file(maintenance_file(app_service), message)
    s.run(stop_service(service, message, drain_timeout), quiet=True)
    return s

