"""Docker engine commands: detect, install, log in, pull, networks, containers, prune."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .script import Argv, q

NETWORK = "kamal"
LOG_OPTS = ("--log-opt", "max-size=10m")


def version() -> Argv:
    return ["docker", "version", "--format", "{{.Server.Version}}"]


def install_lines(method: str, user: str) -> list[str]:
    """Shell lines that install Docker when it is missing, then let ``user`` use it.

    ``apt``: the distribution's docker.io (templates that ship Debian's packages);
    ``script``: Docker's convenience script (real clouds, any distribution).
    """
    if method == "apt":
        install = ("export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
                   "apt-get install -y -qq docker.io >/dev/null")
    elif method == "script":
        install = "curl -fsSL https://get.docker.com | sh"
    else:
        raise ValueError(f"unknown Docker install method {method!r}")
    lines = [
        "if ! command -v docker >/dev/null 2>&1; then",
        '  echo "::step install-docker" >&2',
        f"  {install}",
        "fi",
        "if ! docker version >/dev/null 2>&1; then",
        "  (systemctl enable --now docker || service docker start) >/dev/null 2>&1 || true",
        "  i=0; until docker version >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 60 ] && "
        "{ echo 'docker did not start' >&2; exit 70; }; sleep 1; done",
        "fi",
    ]
    if user != "root":
        lines.append(q(["usermod", "-aG", "docker", user]) + " 2>/dev/null || true")
    return lines


def login(server: str, username: str) -> Argv:
    """The password comes on stdin (``Script.stdin_to``), never in argv."""
    return ["docker", "login", server, "--username", username, "--password-stdin"]


def pull(image: str) -> Argv:
    return ["docker", "pull", "--quiet", image]


def image_label(image: str, label: str) -> Argv:
    return ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', image]


def network_create(name: str = NETWORK) -> str:
    """Create the shared network unless it exists (as a shell line: tolerate 'already exists')."""
    return f"docker network inspect {name} >/dev/null 2>&1 || {q(['docker', 'network', 'create', name])} >/dev/null"


def run(*, name: str, image: str, env: Mapping[str, str] = {}, env_file: str | None = None,
        labels: Mapping[str, str] = {}, network: str = NETWORK, publish: Sequence[str] = (),
        volumes: Sequence[str] = (), cmd: Sequence[str] | None = None, restart: str = "unless-stopped",
        health_cmd: str | None = None, health_interval: float | None = None,
        extra: Sequence[str] = ()) -> Argv:
    argv = ["docker", "run", "--detach", "--restart", restart, "--name", name, "--network", network,
            *LOG_OPTS]
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
    if health_cmd:
        argv += ["--health-cmd", health_cmd]
        if health_interval:
            argv += ["--health-interval", f"{health_interval:g}s"]
    argv += list(extra)
    argv.append(image)
    if cmd:
        argv += list(cmd)
    return argv


def start(name: str) -> Argv:
    return ["docker", "start", name]


def stop(names: Sequence[str], timeout: int = 30) -> Argv:
    return ["docker", "stop", "--time", str(timeout), *names]


def remove(names: Sequence[str]) -> Argv:
    return ["docker", "rm", "--force", *names]


def logs(name: str, tail: int = 50, follow: bool = False, timestamps: bool = False) -> Argv:
    argv = ["docker", "logs", "--tail", str(tail)]
    if follow:
        argv.append("--follow")
    if timestamps:
        argv.append("--timestamps")
    return [*argv, name]


def ps_json(filters: Mapping[str, str]) -> Argv:
    argv = ["docker", "ps", "--all", "--no-trunc", "--format", "{{json .}}"]
    for k, v in filters.items():
        argv += ["--filter", f"label={k}={v}"]
    return argv


def health(name: str) -> Argv:
    """`healthy`, `unhealthy`, `starting`, or `none` (no HEALTHCHECK), then the state."""
    return ["docker", "inspect", "--format",
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.Status}} "
            "{{.State.StartedAt}}", name]


def exec_(name: str, cmd: Sequence[str], interactive: bool = False) -> Argv:
    return ["docker", "exec", *(["--interactive"] if interactive else []), name, *cmd]
