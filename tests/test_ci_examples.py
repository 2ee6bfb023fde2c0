"""The CI examples (examples/github/*.yml, examples/gitlab/*.yml) checked offline: every GitHub
workflow passes actionlint (with shellcheck on its scripts when installed), and every
csdeploy command any of them runs names only commands and options csdeploy has (each is
parsed by the real CLI). The preview workflow's steps themselves run in
tests/provision/test_ci_workflows.py."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.cli import REPO, cli
from tests.support.workflow import load

GITHUB = sorted((REPO / "examples" / "github").glob("*.yml"))
GITLAB = sorted((REPO / "examples" / "gitlab").glob("*.yml"))


def actionlint() -> str | None:
    found = shutil.which("actionlint")
    if found:
        return found
    for base in (os.environ.get("GOBIN"), os.path.join(os.environ.get("GOPATH") or os.path.expanduser("~/go"), "bin")):
        if base and os.access(os.path.join(base, "actionlint"), os.X_OK):
            return os.path.join(base, "actionlint")
    return None


def test_the_examples_are_there() -> None:
    assert [p.name for p in GITHUB] == ["deploy.yml", "nightly.yml", "preview.yml", "reap.yml"]
    assert [p.name for p in GITLAB] == ["csdeploy.gitlab-ci.yml"]
    assert not (REPO / "examples" / "github-nightly.yml").exists()


def test_every_github_workflow_passes_actionlint() -> None:
    tool = actionlint()
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("actionlint is not installed: scripts/lab-prereqs --test installs it")
        pytest.skip("actionlint is not installed (go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12)")
    proc = subprocess.run([tool, "-no-color", *map(str, GITHUB)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    """The check above can fail: an unknown context and a bad `needs:` are reported."""
    tool = actionlint()
    if tool is None:
        pytest.skip("actionlint is not installed")
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    needs: nosuch\n"
                   "    steps:\n      - run: echo ${{ secret.X }}\n")
    proc = subprocess.run([tool, "-no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "nosuch" in proc.stdout


def _scripts() -> list[tuple[str, str]]:
    out = []
    for path in GITHUB:
        for job_name, job in load(path)["jobs"].items():
            out += [(f"{path.name}:{job_name}", step["run"]) for step in job["steps"] if "run" in step]
    for path in GITLAB:
        for job_name, job in yaml.safe_load(path.read_text()).items():
            if isinstance(job, dict):
                for key in ("before_script", "script"):
                    out += [(f"{path.name}:{job_name}", line) for line in job.get(key, [])]
    return out


_VAR = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*(\[@\])?\}?$")
_SAMPLE = {"--pr": "7", "--name": "pr-7", "--env": "production", "--ttl": "3d", "--version": "v1",
           "--prefix": "pr", "--dotenv": "preview.env", "--blueprint": "app.yml"}


def csdeploy_commands(script: str) -> list[list[str]]:
    """Each `csdeploy ...` command line in a shell script, its variables replaced by samples."""
    lex = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=";&|(){}")
    lex.whitespace_split = True
    words = list(lex)
    commands, current = [], None
    for word in words + [";"]:
        if word in (";", "&&", "||", "|", "(", ")", "{", "}", "then", "else", "fi", "do", "done") or "\n" in word:
            if current:
                commands.append(current)
            current = None
        elif word == "csdeploy" and current is None:
            current = []
        elif current is not None:
            if _VAR.match(word):
                previous = current[-1] if current else ""
                if "[@]" in word or word.lstrip("${").startswith(("CSDEPLOY_PREVIEW_ARGS", "extra")):
                    continue            # extra arguments, empty by default
                current.append(_SAMPLE.get(previous, "app.yml"))
            else:
                current.append(word)
    return commands


def test_every_csdeploy_command_in_the_examples_parses() -> None:
    seen = []
    for where, script in _scripts():
        for argv in csdeploy_commands(script):
            seen.append(argv[0] if argv[0] != "preview" else " ".join(argv[:2]))
            result = cli(*argv, "--help")   # click parses every option before it shows the help
            assert result.exit_code == 0, f"{where}: csdeploy {shlex.join(argv)}\n{result.output}"
    assert {"build", "deploy", "rollback", "reap", "nightly", "preview up", "preview down"} <= set(seen), seen


def test_a_wrong_option_in_a_command_would_be_caught() -> None:
    (argv,) = csdeploy_commands('csdeploy preview up "$BLUEPRINT" --pr "$PR_NUMBER" --no-such-flag')
    assert argv == ["preview", "up", "app.yml", "--pr", "7", "--no-such-flag"]
    assert cli(*argv, "--help").exit_code == 2
