"""Destinations: a blueprint overlay file, deep-merged onto the blueprint (Kamal's convention).

`csdeploy deploy blueprint.yml -d staging` reads `blueprint.yml`, then `blueprint.staging.yml`
beside it, and merges the second onto the first: mappings merge key by key, anything else
(a list, a value, null) replaces what the blueprint had. Every value keeps the file and line
it came from, so a problem in the overlay is reported at the overlay's own line.

The destination travels with the `--set` overrides as one leading entry `--destination=NAME`
(`destination_override`), so every command that takes overrides takes a destination too,
and an environment's recorded overrides (`envctx.remember_blueprint`) bring it back for the
day-2 commands.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .blueprint_file import read_bounded
from .blueprint_rules import Loc, Problem, TreePath, describe
from .blueprint_yaml import compose

#: How the destination is carried among the `--set` overrides (a `--set` path never starts with `-`).
MARK = "--destination="
#: Destination names: what Kamal's `config/deploy.NAME.yml` files use, and safe in a file name.
DESTINATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def destination_override(name: str) -> str:
    return MARK + name


def split_destination(overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the destination named among ``overrides``, the other overrides); the last one wins."""
    destination = None
    rest = []
    for item in overrides:
        if item.startswith(MARK):
            destination = item[len(MARK):]
        else:
            rest.append(item)
    return destination, rest


def overlay_path(blueprint: str | Path, destination: str) -> Path:
    """`app.yml` + `staging` -> `app.staging.yml` (beside it); `app` -> `app.staging`."""
    path = Path(blueprint)
    suffix = path.suffix if path.suffix in (".yml", ".yaml") else ""
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}.{destination}{suffix}")


def apply_destination(blueprint: str | Path, destination: str, tree: dict[str, Any],
                      locs: dict[TreePath, Loc], max_bytes: int) -> list[Problem]:
    """Merge destination ``destination``'s overlay onto ``tree`` in place (``locs`` follow).
    Returns the problems that stop it (a bad name, no such file, bad YAML): nothing is merged then."""
    where = f"--destination {destination}"
    if not DESTINATION_RE.fullmatch(destination):
        return [Problem(where, None, "", "a destination name is 1-40 letters, digits, '-' or '_', "
                                         "starting with a letter or digit")]
    path = overlay_path(blueprint, destination)
    text = read_bounded(path, max_bytes, what="a blueprint overlay",
                        missing=f"no such file: destination '{destination}' is read from this "
                                f"overlay beside {Path(blueprint).name}")
    if isinstance(text, Problem):
        return [text]
    over, over_locs, problems = compose(text, str(path), "overlay")
    if problems:
        return problems
    if over is None:
        return []  # an empty overlay changes nothing
    if not isinstance(over, dict):
        return [Problem(str(path), 1, "", f"expected a mapping of blueprint keys to merge onto "
                                          f"{Path(blueprint).name}, got {describe(over)}")]
    merge(tree, locs, over, over_locs, ())
    return []


def merge(tree: dict[str, Any], locs: dict[TreePath, Loc], over: dict[str, Any],
          over_locs: dict[TreePath, Loc], path: TreePath) -> None:
    """Deep-merge ``over`` onto ``tree`` at ``path``; what the overlay replaces takes its lines."""
    for key, value in over.items():
        sub = path + (key,)
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            if sub in over_locs:
                locs.setdefault(sub, over_locs[sub])
            merge(tree[key], locs, value, over_locs, sub)
            continue
        tree[key] = copy.deepcopy(value)
        for stale in [p for p in locs if p[: len(sub)] == sub]:
            del locs[stale]
        for p, loc in over_locs.items():
            if p[: len(sub)] == sub:
                locs[p] = loc
