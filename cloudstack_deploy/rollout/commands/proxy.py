"""kamal-proxy: boot the proxy container and switch a role's traffic to a new target."""

from __future__ import annotations

from ...blueprint_schema import Proxy
from . import docker as d
from .script import Argv, Cond, Pipe, Script, Var, Word, at_least, differs, nonempty, q, succeeds

CONTAINER = "kamal-proxy"
CONFIG_VOLUME = "kamal-proxy-config:/home/kamal-proxy/.config/kamal-proxy"
LABEL = {"csdeploy.proxy": "1"}


def boot(image: str, *, http_port: int = 80, https_port: int = 443) -> Argv:
    return ["docker", "run", "--name", CONTAINER, "--network", d.NETWORK, "--detach", "--restart", "unless-stopped",
            "--volume", CONFIG_VOLUME, "--publish", f"{http_port}:80", "--publish", f"{https_port}:443",
            *d.LOG_OPTS, *[f"--label={k}={v}" for k, v in LABEL.items()], image, "kamal-proxy", "run"]


def deploy(service: str, target: str, proxy: Proxy, *, tls_cert: str | None = None,
           tls_key: str | None = None) -> Argv:
    """`kamal-proxy deploy`: returns once the target is healthy and the old one drained."""
    hc = proxy.healthcheck
    argv = ["docker", "exec", CONTAINER, "kamal-proxy", "deploy", service, f"--target={target}"]
    for host in proxy.hosts:
        argv.append(f"--host={host}")
    if proxy.ssl:
        argv.append("--tls")
        if tls_cert and tls_key:
            argv += [f"--tls-certificate-path={tls_cert}", f"--tls-private-key-path={tls_key}"]
    argv += [
        f"--deploy-timeout={proxy.deploy_timeout:g}s", f"--drain-timeout={proxy.drain_timeout:g}s",
        f"--target-timeout={proxy.response_timeout:g}s",
        f"--health-check-path={hc.path}", f"--health-check-interval={hc.interval:g}s",
        f"--health-check-timeout={hc.timeout:g}s", "--buffer-requests", "--buffer-responses",
    ]
    return argv


def list_services() -> Argv:
    return ["docker", "exec", CONTAINER, "kamal-proxy", "list"]


def remove(service: str) -> Argv:
    return ["docker", "exec", CONTAINER, "kamal-proxy", "remove", service]


def ensure_running(image: str) -> Script:
    """Boot kamal-proxy unless its container exists; start it if it is stopped."""
    s = Script()
    with s.when(~succeeds(["docker", "container", "inspect", CONTAINER])):
        s.run(boot(image), quiet=True)
    with s.otherwise():
        s.run(d.start(CONTAINER), quiet=True)
    return s


def reboot(image: str, *, timeout: float = 30) -> Script:
    """Replace the proxy container (routes come back from its state volume), wait until it answers."""
    s = Script()
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


def wait_healthy(container: str, proxy: Proxy) -> Script:
    """Before asking kamal-proxy: poll the new container's health path from the host every
    0.1 s (curl, else wget) until it answers 2xx, the container stops running, or 10 s.

    kamal-proxy checks a target at once and then every health-check interval (1 s by
    default): a target still starting costs a whole interval, so the switch waits here, at a
    finer step, and kamal-proxy's first check passes. Without curl or wget on the host, or
    when the wait runs out, kamal-proxy decides as before (and reports why it refused)."""
    s = Script()
    ip, i, st = Var("ip"), Var("i"), Var("st")
    url = Word("http://", ip, f":{proxy.app_port}{proxy.healthcheck.path}")
    tools = succeeds(["command", "-v", "curl"]) | succeeds(["command", "-v", "wget"])
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
            with s.when(at_least(i, int(WARM_UP_SECONDS / WARM_UP_STEP))):
                s.break_()
            s.sleep(WARM_UP_STEP)
    return s


def switch(service: str, container: str, proxy: Proxy, *, code: int = 67) -> Script:
    """Point ``service`` at ``container`` through kamal-proxy, health-checked.

    A refusal leaves the old target serving; it is reported with what kamal-proxy said,
    what GET <health path> answered on the new container (body and HTTP code) and the
    container's last logs; the new container is then removed.
    """
    s = Script()
    out, rc, ip, st = Var("out"), Var("rc"), Var("ip"), Var("st")
    s.extend(wait_healthy(container, proxy))
    s.set(rc, "0")
    s.raw(f"{out.name}=$({q(deploy(service, f'{container}:{proxy.app_port}', proxy))} 2>&1) || {rc.name}=$?")
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
        s.exit(code)
    return s
