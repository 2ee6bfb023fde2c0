"""Every `csdeploy WORD` a message, hint or help text tells a user to run is a real command.

A hint naming a command that does not exist (`run 'csdeploy up'`, from before `create-env`)
sends the user to "No such command" at the moment they need help most. The commands are
read from the click tree users get: `cloudstack_deploy.cli.main` plus the `lab` plugin group.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click

from cloudstack_deploy.cli import main
from cloudstack_deploy.lab.cli import lab
from tests.support.source import nodes

PACKAGE = Path(__file__).resolve().parents[1] / "cloudstack_deploy"

# A command named to be run: quoted or in backticks ('csdeploy reap', `csdeploy lab up`), or
# after "run", "re-run", "with" or "it:" ("check it with: csdeploy validate FILE"). Prose such
# as "csdeploy needs an image" is neither.
REFERENCE = re.compile(r"(?:[`'\"]|\brun |\bre-run |\bwith:? |\bit: )csdeploy ([a-z][\w-]*)(?: ([a-z][\w-]*))?")


def commands() -> dict[str, click.Command]:
    return {**main.commands, "lab": lab}


def references(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in REFERENCE.finditer(text)]


def unknown_in(text: str) -> list[str]:
    known = commands()
    bad = []
    for word, sub in references(text):
        command = known.get(word)
        if command is None:
            bad.append(f"csdeploy {word}")
        elif isinstance(command, click.Group) and sub is not None and sub not in command.commands:
            bad.append(f"csdeploy {word} {sub}")
    return bad


def test_the_check_catches_a_command_that_does_not_exist() -> None:
    assert unknown_in("run 'csdeploy up' to create the environment") == ["csdeploy up"]
    assert unknown_in("see `csdeploy lab start`") == ["csdeploy lab start"]
    assert unknown_in("re-run `csdeploy teardown --env x`; or `csdeploy lab up`") == []
    assert unknown_in("csdeploy needs an image") == []  # prose, not a command to run


def test_every_command_a_message_names_exists() -> None:
    found: list[str] = []
    seen = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in nodes(path):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                seen += len(references(node.value))
                found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ref}" for ref in unknown_in(node.value)]
    assert seen > 30, "the pattern no longer finds the package's command references"
    assert found == []
