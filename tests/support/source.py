"""The package's source, parsed once per test process: several tests read every module's syntax
tree (tests/test_architecture.py, tests/test_command_hints.py), some of them once per module."""

from __future__ import annotations

import ast
import functools
import gc
from pathlib import Path


@functools.cache
def parsed(path: Path) -> ast.Module:
    """The module's syntax tree (shared: read it, never change it)."""
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@functools.cache
def nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of the module's tree, in ``ast.walk`` order."""
    found = tuple(ast.walk(parsed(path)))
    # Kept for the rest of the run (the whole package is a million objects): out of the
    # collector's way, or every later full pass of the process walks them again.
    gc.freeze()
    return found
