"""The blueprint reader (cloudstack_deploy/blueprint_yaml.py) takes its events from libyaml's
parser where PyYAML has it, and reads a text libyaml refuses again with the pure Python parser.
What a user sees must not depend on which one read: the same data, the same line for every key
and the same problems, in the pure Python parser's words, for every YAML file this repository
holds (blueprints, examples, the import corpus's real Compose and Kamal files, fixtures).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from cloudstack_deploy import blueprint_yaml
from cloudstack_deploy.blueprint_yaml import compose

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def yaml_files() -> list[Path]:
    """Every .yml/.yaml file of the checkout, venvs, caches and artifacts left out (walked
    when a test asks, not at import: every pytest-xdist worker imports this module)."""
    found = []
    for top, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith((".venv", ".git", "__pycache__", "node_modules",
                                                          "test-artifacts", ".ruff_cache"))]
        found += [Path(top, f) for f in files if f.endswith((".yml", ".yaml"))]
    return sorted(found)

needs_libyaml = pytest.mark.skipif(blueprint_yaml._FastLoader is None, reason="PyYAML without libyaml")


def pure(text: str, file: str = "f.yml"):
    """What the pure Python parser alone reads (the reader before libyaml)."""
    return blueprint_yaml._compose(blueprint_yaml._BoundedLoader, text, file, "blueprint")


def fast_only(text: str, file: str = "f.yml"):
    """What libyaml's events alone read; None where libyaml refuses the text."""
    try:
        return blueprint_yaml._compose(blueprint_yaml._FastLoader, text, file, "blueprint", fast=True)
    except blueprint_yaml._ReadAgain:
        return None


@needs_libyaml
def test_every_yaml_file_of_the_repository_reads_the_same_through_libyaml() -> None:
    files = yaml_files()
    assert len(files) > 40, files  # the blueprints, examples, corpus and fixtures are all there
    read_fast = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        expected = pure(text, str(path))
        got = compose(text, str(path))
        assert repr(got) == repr(expected), path  # data, lines of every key, problems
        read_fast += fast_only(text, str(path)) is not None
    assert read_fast >= len(files) - 2  # only a file broken on purpose falls back


@needs_libyaml
@pytest.mark.parametrize("text, line, words", [
    ("name: demo\nroles:\n  web:\n    hosts: 1\n   bad: 2\n", 5, "expected <block end>"),
    ("name: demo\nroles: [web x\nport: 80\n", 3, "expected ',' or ']'"),
    ("name: demo\nroles:\n\tweb: {}\n", 3, "found character '\\t' that cannot start any token"),
    ("name: 'demo\n", 2, "found unexpected end of stream"),
    ("name: demo\nx: *nowhere\n", 2, "found undefined alias"),
    ("name: demo\x00\n", 1, "character '\\x00' is not allowed in YAML"),
])
def test_a_problem_is_told_at_its_line_in_the_pure_python_parser_s_words(text: str, line: int,
                                                                            words: str) -> None:
    tree, _, problems = compose(text, "blue.yml")
    assert tree is None
    assert [(p.file, p.line) for p in problems] == [("blue.yml", line)], problems
    assert words in problems[0].message, problems[0].message
    assert repr(problems) == repr(pure(text, "blue.yml")[2])


@needs_libyaml
def test_the_bounds_hold_on_the_fast_path() -> None:
    deep = "a: " + "[" * 20_000 + "]" * 20_000 + "\n"
    _, _, problems = compose(deep, "deep.yml")
    assert [p.message for p in problems] == ["the blueprint is nested more than 50 levels deep"]
    # Within libyaml's own nesting limit (1,000 levels in the libyaml PyYAML 6.0.4 bundles; 20,000
    # are refused by libyaml there, and read again), the bound is met while libyaml's events are
    # composed and told from there, not read again: in the pure Python parser's words, at its line.
    deep = "a: " + "[" * 900 + "]" * 900 + "\n"
    assert fast_only(deep, "deep.yml") == pure(deep, "deep.yml")
    spread = "a: 1\nb:\n" + "".join(f"  - {'[' * 60}{']' * 60}\n" if i == 7 else f"  - {i}\n" for i in range(9))
    assert fast_only(spread) == pure(spread) and fast_only(spread)[2][0].line == 10
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    _, _, problems = compose(bomb, "bomb.yml")
    assert len(problems) == 1 and "expands to more than 10000 values" in problems[0].message, problems


@needs_libyaml
def test_what_libyaml_reads_and_the_pure_parser_refused_is_read_as_libyaml_means_it() -> None:
    """A tab after a value: YAML allows it, libyaml (and Ruby's YAML, which reads Kamal's
    config) reads it; PyYAML's pure Python parser refused it."""
    text = "name: demo\t\nroles:\n  web: {}\n"
    assert pure(text)[2] and pure(text)[0] is None
    tree, locs, problems = compose(text, "tab.yml")
    assert (tree, problems) == ({"name": "demo", "roles": {"web": {}}}, [])
    assert locs[("roles", "web")] == ("tab.yml", 3)


@needs_libyaml
def test_every_yaml_file_imports_the_same_through_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """The importers' reader (formats/source.py: YAML 1.2's scalars) takes the same fast path."""
    from cloudstack_deploy.blueprint import BlueprintError
    from cloudstack_deploy.formats import source

    def parsed(text: str, file: str) -> tuple:
        try:
            doc = source.parse(text, file)
            return repr(doc.tree), doc.lines
        except BlueprintError as err:
            return (str(err),)

    assert source._Fast is not None
    for path in yaml_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        fast = parsed(text, str(path))
        with monkeypatch.context() as m:
            m.setattr(source, "_Fast", None)
            assert fast == parsed(text, str(path)), path
