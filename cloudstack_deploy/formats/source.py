"""Reading other tools' files (docker-compose.yml, Kamal's config/deploy.yml) with the line of
every value, and the notes an import keeps about what it could not map.

Scalars are read as YAML 1.2 core (what Docker Compose's Go parser does): `80:8000` and
`yes` stay text instead of becoming 4880 and true. Anchors, aliases and merge keys work;
tags other than YAML's own are refused. The reader is bounded (size, depth, values) because
these files come from other people's repositories.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..blueprint import MAX_FILE_BYTES, BlueprintError, Problem
from ..blueprint_rules import TreePath, dotted, printable
from ..blueprint_yaml import _BoundedLoader, _compose, _FastLoader, _ReadAgain, _TooBig, _Walker

_TAG = "tag:yaml.org,2002:"
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$|^0o[0-7]+$|^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")


class _YAML12:
    """Resolving no plain scalar by itself except the merge key `<<`: `construct_object`
    applies YAML 1.2's rules to plain scalars instead of PyYAML's 1.1 ones."""

    yaml_implicit_resolvers = {"<": [(_TAG + "merge", re.compile(r"^(?:<<)$"))]}

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _TAG + "timestamp":
                return node.value
            if node.tag == _TAG + "str" and not node.style:
                return _plain(node.value)
        return super().construct_object(node, deep)  # type: ignore[misc]


class _Loader(_YAML12, _BoundedLoader):
    """The blueprint reader's bounded safe loader (depth, values, alias bombs), pure Python:
    it tells every problem with the text."""


#: The same on libyaml's events (blueprint_yaml.py): a text it refuses is read again by _Loader.
_Fast: type | None = type("_FastLoader12", (_YAML12, _FastLoader), {}) if _FastLoader is not None else None


def _plain(text: str) -> Any:
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
        # the key and reason may quote the file: escaped, so a newline or a terminal escape
        # in it stays one visible line (in the blueprint's comments and on the terminal)
        return printable(f"{where}: {self.key}: {self.reason}" if self.key else f"{where}: {self.reason}")


class Notes(list[Note]):
    def add(self, doc: Doc, path: TreePath, reason: str) -> None:
        self.append(Note(doc.file, doc.line(path), dotted(path), reason))


def read_text(path: Path, what: str) -> str:
    """The file's text, read with the blueprint reader's bound (MAX_FILE_BYTES), or a
    BlueprintError naming it. Only regular files are read, opened without blocking: a FIFO
    or a device (`/dev/zero`) is refused instead of hanging or filling memory."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise BlueprintError([Problem(name, None, "", f"no such file (expected a {what})")]) from None
    except IsADirectoryError:
        raise BlueprintError([Problem(name, None, "", f"is a directory, not a {what}")]) from None
    except OSError as exc:
        raise BlueprintError([Problem(name, None, "", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise BlueprintError([Problem(name, None, "", f"is a directory, not a {what}")])
        if not stat.S_ISREG(mode):
            raise BlueprintError([Problem(name, None, "", f"is not a regular file (a pipe or a device); "
                                                          f"expected a {what}")])
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BlueprintError([Problem(name, None, "", f"cannot read: {exc.strerror or exc}")]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise BlueprintError([Problem(name, None, "", f"larger than {MAX_FILE_BYTES >> 10} KiB, the most "
                                                      f"csdeploy reads; not a {what}")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BlueprintError([Problem(name, data.count(b"\n", 0, exc.start) + 1, "", "not UTF-8 text")]) from None


def parse(text: str, file: str, what: str = "file") -> Doc:
    """Parse ``text`` with the blueprint reader's bounds (depth, values, aliases, merge keys);
    every problem (syntax, a NUL or control byte, tags, duplicate keys, bounds) as a
    BlueprintError with file:line."""
    if _Fast is not None and not yaml.reader.Reader.NON_PRINTABLE.search(text):
        try:
            tree, read, noted = _compose(_Fast, text, file, what, fast=True)
            if not noted:  # any problem is told below, in the pure Python parser's words
                return Doc(file, tree, {p: line for p, (_, line) in read.items() if line is not None})
        except _ReadAgain:
            pass
    doc = Doc(file, None)
    locs: dict[TreePath, tuple[str, int | None]] = {}
    loader: _Loader | None = None
    problems: list[Problem] = []
    try:
        loader = _Loader(text)  # checks every character first: a NUL byte fails here
        walker = _Walker(loader, file, locs)
        node = loader.get_single_node()
        doc.tree = None if node is None else walker.walk(node, ())
        problems = walker.problems
    except _TooBig as exc:
        problems = [Problem(file, exc.line, dotted(exc.path), f"the {what} {exc}")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems = [Problem(file, mark.line + 1 if mark else None, "",
                            f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}")]
    except yaml.reader.ReaderError as exc:  # a NUL byte or another character YAML does not allow
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        problems = [Problem(file, text.count("\n", 0, exc.position) + 1, "",
                            f"character {char!r} is not allowed in YAML")]
    except yaml.YAMLError as exc:
        problems = [Problem(file, None, "", f"YAML error: {printable(str(exc))}")]
    finally:
        if loader is not None:
            loader.dispose()
    if problems:
        raise BlueprintError(problems)
    doc.lines = {p: line for p, (_, line) in locs.items() if line is not None}
    return doc
