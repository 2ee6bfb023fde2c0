"""kamal-proxy: boot the proxy container and switch a role's traffic to a new target."""

from __future__ import annotations

from ...blueprint_schema import Proxy
from .docker import LOG_OPTS, NETWORK
from .script import Argv

CONTAINER = "kamal-proxy"
CONFIG_VOLUME = "kamal-proxy-config:/home/kamal-proxy/.config/kamal-proxy"
DEFAULT_IMAGE = "basecamp/kamal-proxy:v0.9.2"


def boot(image: str, *, http_port: int = 80, https_port: int = 443) -> Argv:
    return ["docker", "run", "--name", CONTAINER, "--network", NETWORK, "--detach", "--restart", "unless-stopped",
            "--volume", CONFIG_VOLUME, "--publish", f"{http_port}:80", "--publish", f"{https_port}:443",
            *LOG_OPTS, "--label", "csdeploy.proxy=1", image, "kamal-proxy", "run"]


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
        f"--health-check-path={hc.path or '/up'}", f"--health-check-interval={hc.interval:g}s",
        f"--health-check-timeout={hc.timeout:g}s", "--buffer-requests", "--buffer-responses",
    ]
    return argv


def list_services() -> Argv:
    return ["docker", "exec", CONTAINER, "kamal-proxy", "list"]


def remove(service: str) -> Argv:
    return ["docker", "exec", CONTAINER, "kamal-proxy", "remove", service]
