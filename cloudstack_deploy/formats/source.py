"""Reading other tools' files (docker-compose.yml, Kamal's config/deploy.yml) with the line of
every value, and the notes an import keeps about what it could not map.

Scalars are read as YAML 1.2 core (what Docker Compose's Go parser does): `80:8000` and
`yes` stay text instead of becoming 4880 and true. Anchors, aliases and merge keys work;
tags other than YAML's own are refused. The reader is bounded (size, depth, values) because
these files come from other people's repositories.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..blueprint import BlueprintError, Problem
from ..blueprint_rules import TreePath, dotted

MAX_BYTES = 1024 * 1024
MAX_VALUES = 50_000
MAX_DEPTH = 60

_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge", "timestamp")}
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$|^0o[0-7]+$|^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")


class _Loader(yaml.SafeLoader):
    """Safe, bounded, and resolving no plain scalar by itself except the merge key `<<`:
    `_Walk.scalar` applies YAML 1.2's rules instead of PyYAML's 1.1 ones."""

    yaml_implicit_resolvers = {"<": [(_TAG + "merge", re.compile(r"^(?:<<)$"))]}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.MarkedYAMLError(problem=f"nested more than {MAX_DEPTH} levels deep",
                                           problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass
class Doc:
    """A parsed file: plain data, plus the line each key and list item starts on."""

    file: str
    tree: Any
    lines: dict[TreePath, int] = field(default_factory=dict)

    def line(self, path: TreePath) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)

    def problem(self, path: TreePath, message: str) -> Problem:
        return Problem(self.file, self.line(path), dotted(path), message)


@dataclass(frozen=True)
class Note:
    """Something of the source the blueprint does not carry, and why (never a value)."""

    file: str
    line: int | None
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}"


class Notes(list[Note]):
    def add(self, doc: Doc, path: TreePath, reason: str) -> None:
        self.append(Note(doc.file, doc.line(path), dotted(path), reason))


def read_text(path: Path, what: str) -> str:
    """The file's text, or a BlueprintError naming it."""
    name = str(path)
    try:
        data = path.read_bytes()[: MAX_BYTES + 1]
    except FileNotFoundError:
        raise BlueprintError([Problem(name, None, "", f"no such file (expected a {what})")]) from None
    except IsADirectoryError:
        raise BlueprintError([Problem(name, None, "", f"is a directory, not a {what}")]) from None
    except OSError as exc:
        raise BlueprintError([Problem(name, None, "", f"cannot read: {exc.strerror or exc}")]) from None
    if len(data) > MAX_BYTES:
        raise BlueprintError([Problem(name, None, "", f"larger than {MAX_BYTES >> 20} MiB; not a {what}")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BlueprintError([Problem(name, data.count(b"\n", 0, exc.start) + 1, "", "not UTF-8 text")]) from None


def parse(text: str, file: str) -> Doc:
    """Parse ``text``; every problem (syntax, tags, bounds) as a BlueprintError with file:line."""
    doc = Doc(file, None)
    problems: list[Problem] = []
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.tree = _Walk(loader, doc, problems).walk(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems = [Problem(file, mark.line + 1 if mark else None, "",
                            f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}")]
    except yaml.YAMLError as exc:
        problems = [Problem(file, None, "", f"YAML error: {exc}")]
    finally:
        loader.dispose()
    if problems:
        raise BlueprintError(problems)
    return doc


class _Walk:
    def __init__(self, loader: _Loader, doc: Doc, problems: list[Problem]) -> None:
        self.loader, self.doc, self.problems = loader, doc, problems
        self.count = 0
        self.active: set[int] = set()

    def walk(self, node: yaml.Node, path: TreePath) -> Any:
        self.count += 1
        line = node.start_mark.line + 1
        if self.count > MAX_VALUES:
            raise yaml.MarkedYAMLError(problem=f"more than {MAX_VALUES} values (aliases counted each time)",
                                       problem_mark=node.start_mark)
        if node.tag not in _PLAIN_TAGS and not (isinstance(node, yaml.ScalarNode) and node.tag.startswith(_TAG)):
            self.problems.append(Problem(self.doc.file, line, dotted(path), f"unsupported YAML tag {node.tag}"))
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path, line)
        if id(node) in self.active:
            self.problems.append(Problem(self.doc.file, line, dotted(path), "recursive YAML alias"))
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                out = []
                for i, child in enumerate(node.value):
                    self.doc.lines[path + (i,)] = child.start_mark.line + 1
                    out.append(self.walk(child, path + (i,)))
                return out
            self.loader.flatten_mapping(node)  # merge keys (<<: *defaults)
            mapping: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append(Problem(self.doc.file, key_node.start_mark.line + 1, dotted(path),
                                                 "keys must be plain strings"))
                    continue
                sub = path + (key_node.value,)
                self.doc.lines[sub] = key_node.start_mark.line + 1
                mapping[key_node.value] = self.walk(value_node, sub)
            return mapping
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: TreePath, line: int) -> Any:
        text = node.value
        if node.style or node.tag != _TAG + "str":  # quoted, or explicitly tagged (`!!int 3`)
            if node.tag == _TAG + "str" or node.tag == _TAG + "timestamp":
                return text
            try:
                return self.loader.construct_object(node)
            except (yaml.YAMLError, ValueError) as exc:
                self.problems.append(Problem(self.doc.file, line, dotted(path), f"cannot read value: {exc}"))
                return None
        if _NULL.match(text):
            return None
        if _BOOL.match(text):
            return text.lower() == "true"
        if _INT.match(text):
            return int(text, 0) if text[:2] in ("0o", "0x") else int(text)
        if _FLOAT.match(text):
            special = "inf" in text.lower() or "nan" in text.lower()
            return float(text.replace(".", "", 1)) if special else float(text)
        return text
