"""Safe, bounded YAML reading for blueprints: plain data plus the file:line of every key.

Composition uses PyYAML's safe loader (YAML's own tags only, no object construction), with
bounds a hostile file cannot get past: nesting depth, number of values with aliases and
merge keys counted as expanded (an 800-byte alias bomb is gigabytes once walked). Every
problem with the text itself becomes a `Problem` naming the file and, where known, the line.
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


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested deeper than MAX_DEPTH or with more than
    MAX_VALUES nodes (PyYAML composes recursively: 20,000 levels would be a RecursionError)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        line = self.peek_event().start_mark.line + 1
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise _TooBig(f"is nested more than {MAX_DEPTH} levels deep", line)
        if self._nodes > MAX_VALUES:
            raise _TooBig(f"has more than {MAX_VALUES} values", line)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose(text: str, file: str, what: str = "blueprint") -> tuple[Any, dict[TreePath, Loc], list[Problem]]:
    """Parse safely into plain data plus the line each key or list item came from.

    Any problem with the text itself (syntax, a NUL byte, a bound) is one Problem naming
    the file and, where known, the line; the tree is then None.
    """
    locs: dict[TreePath, Loc] = {(): (file, None)}
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # checks every character first: a NUL byte fails here
        walker = _Walker(loader, file, locs)
        node = loader.get_single_node()
        tree = None if node is None else walker.walk(node, ())
    except _TooBig as exc:
        return None, locs, [Problem(file, exc.line, dotted(exc.path), f"the {what} {exc}")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "invalid YAML"
        return None, locs, [Problem(file, line, "", f"YAML syntax error: {what}")]
    except yaml.reader.ReaderError as exc:  # a NUL byte or another character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        return None, locs, [Problem(file, line, "", f"character {char!r} is not allowed in YAML")]
    except yaml.YAMLError as exc:
        return None, locs, [Problem(file, None, "", f"YAML error: {exc}")]
    finally:
        if loader is not None:
            loader.dispose()
    return tree, locs, walker.problems


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
