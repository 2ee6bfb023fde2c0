"""Run a GitHub Actions job's `run:` steps here, the way a runner does: each step a
``bash --noprofile --norc -eo pipefail`` script, with the variables a runner sets
(GITHUB_OUTPUT and GITHUB_STEP_SUMMARY: a fresh file per step; GITHUB_ENV, RUNNER_TEMP,
GITHUB_SHA ...), the workflow's, job's and step's ``env:``, and ``${{ }}`` expressions
filled from the given contexts (secrets, inputs, github, steps' outputs).

Steps that `uses:` an action (checkout, setup-python, github-script) are skipped, and so are
the ones named in ``skip`` (pip install: csdeploy is already importable). Only the
expressions these workflows use are understood: a path into a context, and a step's ``if:``
that is a boolean input; anything else fails the test rather than being guessed.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")


@dataclass
class StepRun:
    name: str
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str


@dataclass
class JobRun:
    steps: list[StepRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.code == 0 for s in self.steps)

    def explain(self) -> str:
        return "\n".join(f"--- step {s.name}: exit {s.code}\n{s.stdout[-3000:]}\n{s.stderr[-6000:]}"
                         for s in self.steps)


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _lookup(expr: str, ctx: dict[str, Any]) -> Any:
    if not _PATH.fullmatch(expr):
        raise AssertionError(f"expression not understood by this test runner: {expr!r}")
    value: Any = ctx
    for part in expr.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""   # like GitHub: a missing property is empty
        value = value[part]
    return value


def fill(text: Any, ctx: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        value = _lookup(m.group(1), ctx)
        return str(value).lower() if isinstance(value, bool) else str(value)

    return _EXPR.sub(one, str(text))


def run_job(workflow: dict[str, Any], job: str, *, ctx: dict[str, Any], base_env: dict[str, str], cwd: Path,
            tmp: Path, skip: tuple[str, ...] = (), timeout: float = 300) -> JobRun:
    spec = workflow["jobs"][job]
    env = dict(base_env)
    for scope in (workflow.get("env") or {}, spec.get("env") or {}):
        env.update({k: fill(v, ctx) for k, v in scope.items()})
    ctx.setdefault("steps", {})
    result = JobRun()
    for i, step in enumerate(spec["steps"]):
        name = step.get("name") or step.get("uses") or f"step {i}"
        if "uses" in step or name in skip:
            continue
        cond = step.get("if")
        if cond is not None:
            if isinstance(cond, bool):
                if not cond:
                    continue
            else:
                value = _lookup(str(cond).strip(), ctx)
                if not isinstance(value, bool):
                    raise AssertionError(f"step {name}: if: {cond!r} is not understood by this test runner")
                if not value:
                    continue
        out, summary = tmp / f"output-{i}", tmp / f"summary-{i}"
        out.write_text("")
        summary.write_text("")
        step_env = {**env, **{k: fill(v, ctx) for k, v in (step.get("env") or {}).items()},
                    "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)}
        script = tmp / f"step-{i}.sh"
        script.write_text(fill(step["run"], ctx))
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd,
                              env=step_env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        outputs = parse_outputs(out.read_text())
        result.steps.append(StepRun(name, proc.returncode, proc.stdout, proc.stderr, outputs, summary.read_text()))
        if step.get("id"):
            ctx["steps"][step["id"]] = {"outputs": outputs, "outcome": "success" if proc.returncode == 0 else "failure"}
        if proc.returncode != 0:
            break
    return result


def parse_outputs(text: str) -> dict[str, str]:
    """``key=value`` lines and ``key<<DELIM`` blocks, as the runner reads GITHUB_OUTPUT."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[key] = "\n".join(lines[i + 1:j])
            i = j + 1
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
        i += 1
    return out
