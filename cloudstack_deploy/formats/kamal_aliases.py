"""Kamal `aliases:` as csdeploy ones: `console: app exec --interactive --reuse "bin/rails console"`
becomes `console: exec -it --primary --role web -- bin/rails console`.

A Kamal alias is a kamal command line. The ones with a csdeploy command of the same meaning
are translated (`app exec`, `app logs`); any other is left out with the reason, never guessed.
Kamal's `app exec` runs a fresh container unless `--reuse`: csdeploy's `--new`, which runs on
one host (the role's first, `--primary`), as `--interactive` does in both. csdeploy's exec and
logs take one role: Kamal's `--roles` when it names one, else the primary role.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable

from ..rollout.commands.interactive import shell_line

#: What a shell would treat specially: such a command is run with `sh -c`, as Kamal's is.
_SHELL = re.compile(r"[|&;<>()$`\\\"'*?\[\]#~=%{}\n]")


class _Untranslatable(ValueError):
    """Why a Kamal alias has no csdeploy equivalent (the message is the note)."""


def translate(line: str, primary: str, role_of: Callable[[str], str | None]) -> str:
    """The csdeploy command line for Kamal command line ``line``; ``role_of`` maps a Kamal role
    name to the blueprint's (None: no such role). ValueError says why there is none."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise _Untranslatable(f"not a command line ({exc})") from None
    if words[:2] == ["app", "exec"]:
        return _exec(words[2:], primary, role_of)
    if words[:2] == ["app", "logs"]:
        return _logs(words[2:], primary, role_of)
    raise _Untranslatable(f"`kamal {' '.join(words[:2])}` has no csdeploy alias equivalent "
                         "(csdeploy translates app exec and app logs)")


def _options(words: list[str], flags: dict[str, str], valued: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Kamal's options before the command: flags (`-i`) and options with a value (`-r web`,
    `--roles=web`); the rest are the command's words."""
    found: dict[str, str] = {}
    i = 0
    while i < len(words) and words[i].startswith("-"):
        word = words[i]
        name, eq, value = word.partition("=")
        if name in flags and not eq:
            found[flags[name]] = "yes"
        elif name in valued:
            if not eq:
                i += 1
                if i >= len(words):
                    raise _Untranslatable(f"{word} needs a value")
                value = words[i]
            found[valued[name]] = value
        else:
            raise _Untranslatable(f"the option {word} has no csdeploy equivalent")
        i += 1
    return found, words[i:]


def _role(found: dict[str, str], primary: str, role_of: Callable[[str], str | None]) -> str:
    kamal_role = found.get("roles", primary)
    if "," in kamal_role or "*" in kamal_role:
        raise _Untranslatable(f"roles {kamal_role}: a csdeploy alias runs on one role")
    role = role_of(kamal_role)
    if role is None:
        raise _Untranslatable(f"no role {kamal_role} in the config")
    return role


_HOST_OPTIONS = {"-r": "roles", "--roles": "roles", "-h": "hosts", "--hosts": "hosts"}


def _exec(words: list[str], primary: str, role_of: Callable[[str], str | None]) -> str:
    found, command = _options(words, {"-i": "interactive", "--interactive": "interactive", "--reuse": "reuse",
                                      "-p": "primary", "--primary": "primary"},
                              {**_HOST_OPTIONS, "-d": "destination", "--destination": "destination"})
    if "hosts" in found:
        raise _Untranslatable("--hosts names Kamal's hosts: csdeploy's are VMs it names itself")
    if "destination" in found:
        raise _Untranslatable("csdeploy aliases run on the environment they are called with (--env)")
    if not command:
        raise _Untranslatable("no command to run")
    out = ["exec"]
    if "interactive" in found:
        out.append("-it")  # Kamal's --interactive is docker exec/run -it, on the first host
    if "interactive" in found or "primary" in found or "reuse" not in found:
        out.append("--primary")  # csdeploy's -i and --new run on one host
    if "reuse" not in found:
        out.append("--new")  # Kamal runs a fresh container of the current image unless --reuse
    out += ["--role", _role(found, primary, role_of), "--"]
    text = " ".join(command)  # Kamal hands the command to docker as one string, run by a shell
    out += shell_line(text) if _SHELL.search(text) else shlex.split(text)
    return shlex.join(out)


def _logs(words: list[str], primary: str, role_of: Callable[[str], str | None]) -> str:
    found, rest = _options(words, {"-f": "follow", "--follow": "follow"},
                           {**_HOST_OPTIONS, "-n": "lines", "--lines": "lines"})
    if rest or "hosts" in found:
        raise _Untranslatable("only -f, -n and --roles of app logs have csdeploy equivalents")
    out = ["logs", "--role", _role(found, primary, role_of)]
    if "follow" in found:
        out.append("-f")
    if "lines" in found:
        if not found["lines"].isdigit():
            raise _Untranslatable(f"--lines {found['lines']} is not a number")
        out += ["-n", found["lines"]]
    return shlex.join(out)
