"""Commands a person runs with their terminal attached (`exec -i`, `console`, `psql`).

Their stdin is the person's, so the script cannot go on stdin to `sh -s` as every other
script does: it is sent as ``sh -c SCRIPT`` instead (these scripts hold no secret: a one-off
container reads the role's env file on the host), and ends by exec'ing the docker command so
that stdin, the terminal and the exit code are the container's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import docker as d
from .script import Argv, Script, Var, differs, empty, nonempty, q, succeeds

NOTHING_EXIT = 79   # no running container to attach to (the same code as the life-cycle's)
CONFIG_IMAGE = "{{.Config.Image}}"
#: What `csdeploy console` opens when the blueprint has no `aliases.console`.
SHELL = ("sh",)


def remote(script: Script) -> Argv:
    """The command line that runs ``script`` while leaving stdin to the person."""
    return ["sh", "-c", script.text()]


def _exec(s: Script, argv: Argv) -> Script:
    return s.raw("exec " + q(argv))


def in_role(labels: Mapping[str, str], role: str, cmd: Sequence[str], *, interactive: bool, tty: bool) -> Script:
    """``cmd`` in the role's running container on this host."""
    s = Script()
    name = Var("name")
    s.extend(d.current(labels, into=name))
    with s.when(empty(name)):
        s.fail(NOTHING_EXIT, f"no running container of role {role} on this host: deploy or `csdeploy app start`, "
                             "or use --new")
    return _exec(s, d.exec_(name, cmd, interactive=interactive, tty=tty))


def in_accessory(container: str, cmd: Sequence[str], *, interactive: bool, tty: bool) -> Script:
    """``cmd`` in the accessory's container (it must be running)."""
    s = Script()
    state = Var("state")
    s.capture(state, d.inspect(container, d.STATE))
    with s.when(differs(state, "running")):
        s.fail(NOTHING_EXIT, f"{container} is not running here (", state, "): `csdeploy accessory start`")
    return _exec(s, d.exec_(container, cmd, interactive=interactive, tty=tty))


def in_new(labels: Mapping[str, str], role: str, cmd: Sequence[str], *, image: str | None, env: Mapping[str, str],
           env_file: str, mounts: Sequence[d.Mount], interactive: bool, tty: bool) -> Script:
    """``cmd`` in a fresh container of the role (removed when it ends): the image its running
    container runs, else ``image`` (what the history says the role runs), with the role's env
    (``env`` in the clear, the secrets from its env file on the host) and volumes."""
    s = Script()
    name, img = Var("name"), Var("image")
    s.extend(d.current(labels, into=name))
    s.set(img, "")
    with s.when(nonempty(name)):
        s.capture(img, d.inspect(name, CONFIG_IMAGE))
    with s.when(empty(img)):
        if image is None:
            s.fail(NOTHING_EXIT, f"no container of role {role} runs here and no deploy is recorded: deploy first")
        else:
            s.set(img, image)
    with s.when(~succeeds(["test", "-f", env_file])):
        s.fail(NOTHING_EXIT, f"no env file {env_file} on this host: the role was never deployed here")
    return _exec(s, d.run_once(image=img, cmd=cmd, env=env, env_file=env_file, mounts=mounts,
                               labels={**labels, "csdeploy.oneoff": "1"}, interactive=interactive, tty=tty))


def psql(user: str, database: str, args: Sequence[str] = ()) -> list[str]:
    """psql inside a PostgreSQL container as ``user`` on ``database``, over its local socket; the
    container's own POSTGRES_PASSWORD (from its env file) answers a password prompt, so no secret
    leaves the host."""
    return ["sh", "-c", 'u="$0"; db="$1"; shift; PGPASSWORD="${POSTGRES_PASSWORD:-}" exec psql -U "$u" -d "$db" "$@"',
            user, database, *args]


def shell_line(text: str) -> Argv:
    """A command given as one string, run by the container's shell (as Kamal's `app exec` runs
    its CMD): for the argv of an alias that `csdeploy exec` runs."""
    return ["sh", "-c", text]
