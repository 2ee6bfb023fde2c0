"""Safe, bounded YAML reading for blueprints: plain data plus the file:line of every key.

Composition uses PyYAML's safe loader (YAML's own tags only, no object construction), with
bounds a hostile file cannot get past: nesting depth, number of values with aliases and
merge keys counted as expanded (an 800-byte alias bomb is gigabytes once walked). Every
problem with the text itself becomes a `Problem` naming the file and, where known, the line.
The events come from libyaml's parser when PyYAML has it (its wheels do), in a tenth of the pure
Python parser's time; PyYAML's own composer (bounded) builds the nodes. A text libyaml refuses is
read again by the pure Python parser, whose words tell the problem; a text past a bound is not
(the bounds are the composer's, the same on either path; reading 900 levels of nesting again took
157 ms, refusing them 2 ms). The two agree on every file
of tests/fixtures and the repository; on a few odd texts (a tab after a value, a byte-order mark
inside the file) libyaml reads what the pure Python parser refuses, as Ruby's YAML (Kamal's,
libyaml too) does.
Split from `blueprint.py`, which applies overrides and validates the tree.
"""

from __future__ import annotations

from typing import Any

import yaml

from .blueprint_rules import Loc, Problem, TreePath, describe, dotted

#: Values in the parsed tree, aliases counted each time they are used: an 800-byte YAML alias
#: bomb otherwise expands to gigabytes while it is walked.
MAX_VALUES = 10_000
#: Nesting deeper than this is no blueprint (its deepest key is 5 levels down).
MAX_DEPTH = 50

_YAML_TAG = "tag:yaml.org,2002:"
_MERGE = _YAML_TAG + "merge"
#: YAML's own data types; anything else (`!!python/...`, `!custom`) is refused.
_ALLOWED_TAGS = frozenset(_YAML_TAG + t for t in
                          ("map", "seq", "str", "int", "float", "bool", "null", "timestamp", "merge"))
_NODE_TAGS = {yaml.MappingNode: _YAML_TAG + "map", yaml.SequenceNode: _YAML_TAG + "seq"}


class _TooBig(Exception):
    """The document is past one of the bounds above; `line` and `path` say where."""

    def __init__(self, message: str, line: int | None, path: TreePath = ()) -> None:
        super().__init__(message)
        self.line = line
        self.path = path


class _Bounds:
    """Refuses documents nested deeper than MAX_DEPTH or with more than MAX_VALUES nodes while
    they are composed (PyYAML composes recursively: 20,000 levels would be a RecursionError)."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        line = self.peek_event().start_mark.line + 1  # type: ignore[attr-defined]
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise _TooBig(f"is nested more than {MAX_DEPTH} levels deep", line)
        if self._nodes > MAX_VALUES:
            raise _TooBig(f"has more than {MAX_VALUES} values", line)
        try:
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1


class _BoundedLoader(_Bounds, yaml.SafeLoader):
    """PyYAML's pure Python safe loader, bounded: it tells every problem with the text."""


_FastLoader: type | None = None
try:  # libyaml's events, composed by PyYAML's own (Python) composer: the same nodes, bounded
    from yaml._yaml import CParser  # type: ignore[import-not-found]

    class _FastBoundedLoader(_Bounds, yaml.composer.Composer, CParser, yaml.constructor.SafeConstructor,
                             yaml.resolver.Resolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _FastLoader = _FastBoundedLoader
except ImportError:  # PyYAML built without libyaml: the pure Python parser does it all
    pass


def compose(text: str, file: str, what: str = "blueprint") -> tuple[Any, dict[TreePath, Loc], list[Problem]]:
    """Parse safely into plain data plus the line each key or list item came from.

    Any problem with the text itself (syntax, a NUL byte, a bound) is one Problem naming
    the file and, where known, the line; the tree is then None.
    """
    # a character YAML does not allow (a NUL byte...) is told by the pure Python reader
    if _FastLoader is not None and not yaml.reader.Reader.NON_PRINTABLE.search(text):
        try:
            return _compose(_FastLoader, text, file, what, fast=True)
        except _ReadAgain:
            pass
    return _compose(_BoundedLoader, text, file, what)


class _ReadAgain(Exception):
    """The fast parser met a problem: the pure Python one reads the text again to tell it."""


def _compose(loader_class: type, text: str, file: str, what: str, fast: bool = False,
             ) -> tuple[Any, dict[TreePath, Loc], list[Problem]]:
    locs: dict[TreePath, Loc] = {(): (file, None)}
    loader: Any = None
    try:
        loader = loader_class(text)  # checks every character first: a NUL byte fails here
        walker = _Walker(loader, file, locs)
        node = loader.get_single_node()
        tree = None if node is None else walker.walk(node, ())
    except Exception as exc:
        # A bound is the composer's and the walker's, the same on either path: told at once. A
        # problem of the text is told exactly as the pure Python parser tells it.
        if fast and not isinstance(exc, _TooBig):
            raise _ReadAgain from exc
        return None, locs, [_problem_of(exc, text, file, what)]
    finally:
        if loader is not None:
            loader.dispose()
    return tree, locs, walker.problems


def _problem_of(exc: Exception, text: str, file: str, what: str) -> Problem:
    """The Problem an exception of composing means; one it does not know is raised again."""
    if isinstance(exc, _TooBig):
        return Problem(file, exc.line, dotted(exc.path), f"the {what} {exc}")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        return Problem(file, line, "", f"YAML syntax error: {problem}")
    if isinstance(exc, yaml.reader.ReaderError):  # a NUL byte or another character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        return Problem(file, line, "", f"character {char!r} is not allowed in YAML")
    if isinstance(exc, yaml.YAMLError):
        return Problem(file, None, "", f"YAML error: {exc}")
    raise exc


class _Walker:
    """Turns composed nodes into plain data, recording where each key came from.

    Aliases are walked again at every use (that is what they mean), so every value walked
    counts against MAX_VALUES, and merge keys are flattened with the same bound.
    """

    def __init__(self, loader: yaml.SafeLoader, file: str, locs: dict[TreePath, Loc]) -> None:
        self.loader = loader
        self.file = file
        self.locs = locs
        self.problems: list[Problem] = []
        self.active: set[int] = set()
        self.walked = 0

    def _problem(self, line: int | None, path: TreePath, message: str) -> None:
        self.problems.append(Problem(self.file, line, dotted(path), message))

    def walk(self, node: yaml.Node, path: TreePath) -> Any:
        line = node.start_mark.line + 1
        self.walked += 1
        if self.walked > MAX_VALUES or len(path) > MAX_DEPTH:
            # Reported at the top-level key whose value grew too big: the alias that
            # explodes is used there, while `line` is somewhere inside what it repeats.
            top = self.locs.get(path[:1], (self.file, line))[1]
            what = (f"expands to more than {MAX_VALUES} values" if self.walked > MAX_VALUES
                    else f"is nested more than {MAX_DEPTH} levels deep")
            raise _TooBig(f"{what} through its YAML aliases; write the values out instead", top, path[:1])
        if node.tag not in _ALLOWED_TAGS:
            self._problem(line, path, f"unsupported YAML tag {node.tag}")
            return None
        if id(node) in self.active:
            self._problem(line, path, "recursive YAML alias")
            return None
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node)
            except (yaml.YAMLError, ValueError, KeyError, AttributeError, TypeError, OverflowError):
                # e.g. `!!int abc`, `!!bool maybe`, `!!timestamp 2024-13-45`
                tag = node.tag.rpartition(":")[2]
                self._problem(line, path, f"cannot read {describe(node.value)} as !!{tag}")
                return None
        if node.tag != _NODE_TAGS[type(node)]:
            self._problem(line, path, f"the tag !!{node.tag.rpartition(':')[2]} does not fit a "
                                      f"{'mapping' if isinstance(node, yaml.MappingNode) else 'list'}")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for i, child in enumerate(node.value):
                    self.locs[path + (i,)] = (self.file, child.start_mark.line + 1)
                    items.append(self.walk(child, path + (i,)))
                return items
            return self._mapping(node, path)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: TreePath) -> dict[str, Any]:
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                key_line = key_node.start_mark.line + 1
                if key_node.value in first:
                    self._problem(key_line, path + (key_node.value,),
                                  f"duplicate key (first at line {first[key_node.value]})")
                first.setdefault(key_node.value, key_line)
        self._flatten(node)  # YAML merge keys (<<: *defaults)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node.start_mark.line + 1, path, "keys must be plain strings")
                continue
            sub = path + (key_node.value,)  # the text as written: `on:` stays "on"
            self.locs[sub] = (self.file, key_node.start_mark.line + 1)
            mapping[key_node.value] = self.walk(value_node, sub)
        return mapping

    def _flatten(self, node: yaml.MappingNode) -> None:
        """PyYAML's `flatten_mapping`, bounded: merging an alias twice per level doubles the
        list each level, so 30 lines of YAML would otherwise build a billion entries."""
        merge: list[tuple[yaml.Node, yaml.Node]] = []
        index = 0
        while index < len(node.value):
            key_node, value_node = node.value[index]
            if key_node.tag != _MERGE:
                index += 1
                continue
            del node.value[index]
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in reversed(sources):
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"a merge key (<<) takes a mapping or a list of mappings, found {source.id}",
                        source.start_mark)
                self._flatten(source)
                merge.extend(source.value)
                if len(merge) > MAX_VALUES:
                    raise _TooBig(f"expands to more than {MAX_VALUES} values through its merge keys (<<)",
                                  node.start_mark.line + 1)
        if merge:
            node.value = merge + node.value
