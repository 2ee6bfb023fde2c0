"""The seams the code is built around, checked on the source itself.

- the lab depends on the product, never the other way round;
- no import cycle between csdeploy's modules (a lazy import inside a function counts too);
- every word of a docker / kamal-proxy / shell command is built in `rollout/commands/`;
- one error tree: each error class knows its exit code.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from pathlib import Path

import pytest

from cloudstack_deploy import errors
from tests.support.source import nodes

PACKAGE = Path(__file__).resolve().parents[1] / "cloudstack_deploy"
COMMANDS = PACKAGE / "rollout" / "commands"
LAB = PACKAGE / "lab"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, *, typing_too: bool = False) -> set[str]:
    """The csdeploy modules ``name`` imports at run time, at module level or inside functions
    (``typing_too``: and under ``if TYPE_CHECKING``)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    typing_only = {id(n) for block in nodes(path) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in nodes(path):
        if id(node) in typing_only and not typing_too:  # annotations only: no import at run time
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in MODULES and c != name}
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Each csdeploy module's run-time imports of csdeploy modules. Built on first use, not
    at import: every pytest-xdist worker imports this file, and parsing the whole package
    is a second of CPU that only the worker running these tests needs."""
    return {name: _imports(name, path) for name, path in MODULES.items()}


def _product(name: str) -> bool:
    return not name.startswith("cloudstack_deploy.lab")


def test_the_product_never_imports_the_lab() -> None:
    offenders = {m: sorted(t for t in targets if not _product(t))
                 for m, targets in import_graph().items() if _product(m) and any(not _product(t) for t in targets)}
    assert offenders == {}, "the lab plugs in through configuration and the CLI's entry points"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles


def test_no_import_cycles() -> None:
    assert _cycles(import_graph()) == []


def test_the_rollout_imports_in_one_direction_type_only_imports_included() -> None:
    """runs -> apps -> deploy -> plan -> stages -> commands: a type-only import back up (``if
    TYPE_CHECKING: from .deploy import Rollout``) is a circle too, only hidden."""
    rollout = {name: path for name, path in MODULES.items() if name.startswith("cloudstack_deploy.rollout")}
    graph = {name: _imports(name, path, typing_too=True) & set(rollout) for name, path in rollout.items()}
    assert _cycles(graph) == []


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """String literals that are values, not prose: docstrings and f-string text are left out."""
    prose = set()
    for node in nodes(path):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            prose.add(id(node.value))
        if isinstance(node, ast.JoinedStr):
            prose.update(id(v) for v in node.values)
    return [(node.lineno, node.value) for node in nodes(path)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose]


SHELL_TEXT = re.compile(r"^(docker|kamal-proxy) (run|exec|inspect|ps|rm|start|stop|logs|images?|pull|login|"
                        r"network|deploy|list|remove|version)\b|^sh -|2>&1|>/dev/null|\$\(")
COMMAND_WORDS = ("docker", "kamal-proxy", "sh", "bash", "mkdir", "rm", "cat", "printf", "echo", "curl",
                 "systemctl", "mountpoint", "chmod")


@pytest.mark.parametrize("path", [p for p in PACKAGE.rglob("*.py")
                                  if COMMANDS not in p.parents and LAB not in p.parents],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_command_text_outside_the_builders(path: Path) -> None:
    """Outside rollout/commands/ (and the lab), no argv starts with a command word and no
    string is a shell line; and nothing calls `Script.raw`."""
    assert ".raw(" not in path.read_text()
    offenders = []
    for node in nodes(path):
        if isinstance(node, ast.List | ast.Tuple) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and first.value in COMMAND_WORDS:
                offenders.append((node.lineno, first.value))
    for line, value in _string_constants(path):
        if SHELL_TEXT.search(value):
            offenders.append((line, value[:40]))
    allowed = {"provision/userdata.py"}  # the cloud-init disk script: static, parameters validated
    if str(path.relative_to(PACKAGE)) not in allowed:
        assert offenders == []


def test_every_error_class_knows_its_exit_code() -> None:
    assert errors.InvalidInput().exit_code == 2
    assert errors.OperationFailed().exit_code == 1
    assert errors.Locked().exit_code == 1
    assert errors.Interrupted().exit_code == 130
    from cloudstack_deploy.blueprint import BlueprintError
    from cloudstack_deploy.cloud import CloudError
    from cloudstack_deploy.rollout.hosts import HostError

    assert issubclass(BlueprintError, errors.InvalidInput)
    assert issubclass(CloudError, errors.OperationFailed)
    assert issubclass(HostError, errors.OperationFailed)


def test_error_classes_stay_few() -> None:
    """One small tree: a class only where it carries data its callers use (a module's private
    exception for its own control flow does not count)."""
    classes = defaultdict(list)
    for name, path in MODULES.items():
        if not _product(name):
            continue
        for node in nodes(path):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and any(
                    isinstance(b, ast.Name) and (b.id.endswith(("Error", "Failed", "Input", "Unavailable"))
                                                 or b.id in ("Locked", "CsdeployError", "Exception"))
                    for b in node.bases):
                classes[name].append(node.name)
    count = sum(len(v) for v in classes.values())
    assert count <= 14, dict(classes)


def test_the_rollout_s_plan_depends_on_no_executor_and_no_connection() -> None:
    """`rollout/plan.py` is a function of its inputs, as `provision/plan.py` is: it imports
    nothing that runs a run, holds a connection or keeps state (type-only imports included)."""
    name = "cloudstack_deploy.rollout.plan"
    executors = {f"cloudstack_deploy.rollout.{m}" for m in ("deploy", "apps", "runs", "hosts", "lease", "history",
                                                             "ops", "lifecycle", "upkeep", "interactive")}
    assert _imports(name, MODULES[name], typing_too=True) & executors == set()
