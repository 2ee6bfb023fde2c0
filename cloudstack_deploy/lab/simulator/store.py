"""The simulator's state on disk: a snapshot, plus a journal of what changed since.

Saving used to rewrite the whole world on every change, so a call cost more the longer the
cloud had lived (seconds after a few thousand jobs). Now a change appends one line per
record that changed to ``<state>.journal``: a write the size of the change. When the
journal outgrows the snapshot, the snapshot is rewritten and the journal emptied, so the
work per change stays constant on average.

Crash safety, as before: the snapshot is only ever replaced whole (temp file + rename), and
every change is in the journal before the call that made it answers. A journal line holds
one save: operations that set or delete one record each (or replace the small metadata),
so replaying a journal over a snapshot that already holds some of it gives the same state:
a crash between the two steps of a compaction loses nothing. A torn last line (the process
died mid-write) is ignored.

Records are :class:`Record` dicts that note their own changes; the engine turns the noted
keys into journal lines when it commits.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

#: The journal is compacted into the snapshot once it is this big and twice the snapshot.
COMPACT_MIN_BYTES = 4 * 1024 * 1024
#: The pseudo-collection of removed ids (id -> the collection it was in).
REMOVED = "#removed"
#: State keys that are neither collections nor removed ids: written whole when they change.
META_EXCLUDED = ("collections", "removed")


class Record(dict):  # type: ignore[type-arg]
    """A record of a collection: a dict that adds its key to ``dirty`` whenever it changes.

    Only top-level changes are noticed: replace a nested list or dict, do not edit it in place.
    """

    __slots__ = ("_dirty", "_key")

    def __init__(self, data: dict[str, Any], dirty: set[tuple[str, str]], key: tuple[str, str]) -> None:
        super().__init__(data)
        self._dirty = dirty
        self._key = key

    def __setitem__(self, k: str, v: Any) -> None:
        super().__setitem__(k, v)
        self._dirty.add(self._key)

    def __delitem__(self, k: str) -> None:
        super().__delitem__(k)
        self._dirty.add(self._key)

    def __ior__(self, other: Any) -> Record:  # type: ignore[override]
        self.update(other)
        return self

    def update(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        super().update(*args, **kw)
        self._dirty.add(self._key)

    def pop(self, *args: Any) -> Any:  # type: ignore[override]
        self._dirty.add(self._key)
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self._dirty.add(self._key)
        return super().popitem()

    def setdefault(self, k: str, default: Any = None) -> Any:  # type: ignore[override]
        if k not in self:
            self._dirty.add(self._key)
        return super().setdefault(k, default)

    def clear(self) -> None:
        self._dirty.add(self._key)
        super().clear()

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class StateFile:
    """``--state FILE``: the snapshot ``FILE`` and its journal ``FILE.journal``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self._fd: int | None = None
        self.journal_bytes = 0
        self.snapshot_bytes = 0

    # ---- reading ----------------------------------------------------------------------------
    def load(self) -> dict[str, Any] | None:
        """The saved state (snapshot + journal replayed), or None when there is none yet.

        Raises ValueError naming the file when it is not a simulator state; the files are
        then left untouched.
        """
        if not self.path.exists():
            return None
        try:
            state = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read simulator state {self.path}: {exc}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("collections"), dict) \
                or not isinstance(state.get("limits"), dict):
            raise ValueError(f"cannot read simulator state {self.path}: not a simulator state file "
                             "(expected a JSON object with 'collections' and 'limits')")
        if self.journal_path.exists():
            self._replay(state, self.journal_path.read_text())
        return state

    def _replay(self, state: dict[str, Any], text: str) -> None:
        lines = text.split("\n")
        torn_tail = lines.pop()  # "" when the journal ends with a newline, as complete writes do
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                for op in json.loads(line):
                    apply(state, op)
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise ValueError(f"cannot read simulator state journal {self.journal_path}, line {number}: "
                                 f"{exc}") from exc
        if torn_tail.strip():
            try:
                ops = json.loads(torn_tail)
            except ValueError:
                return  # the process died while writing it: that save never answered anyone
            for op in ops:
                apply(state, op)

    # ---- writing ----------------------------------------------------------------------------
    def append(self, ops: list[list[Any]]) -> None:
        """One line per save: the list of its operations (a torn line drops the save whole)."""
        data = (json.dumps(ops, separators=(",", ":")) + "\n").encode()
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _write_all(self._fd, data)
        self.journal_bytes += len(data)

    def needs_compaction(self) -> bool:
        return self.journal_bytes > max(COMPACT_MIN_BYTES, 2 * self.snapshot_bytes)

    def compact(self, state: dict[str, Any]) -> None:
        """Write the whole state as the new snapshot, then empty the journal."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".sim-state-")
        try:
            with os.fdopen(fd, "w") as fh:
                # dumps, not dump: only the one-shot encoder is the C one (dump is ~10x slower)
                fh.write(json.dumps(state, separators=(",", ":")))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.snapshot_bytes = self.path.stat().st_size
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
        elif self.journal_path.exists():
            self.journal_path.unlink()
        self.journal_bytes = 0

    def close(self, state: dict[str, Any]) -> None:
        """A last compaction, and no journal left behind."""
        self.compact(state)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.journal_path.unlink(missing_ok=True)


def apply(state: dict[str, Any], op: list[Any]) -> None:
    """Apply one journal line to a plain (loaded) state."""
    kind = op[0]
    if kind == "p":
        _, col, id_, value = op
        if col == REMOVED:
            state.setdefault("removed", {})[id_] = value
        else:
            state["collections"].setdefault(col, {})[id_] = value
    elif kind == "d":
        _, col, id_ = op
        if col == REMOVED:
            state.setdefault("removed", {}).pop(id_, None)
        else:
            state["collections"].setdefault(col, {}).pop(id_, None)
    elif kind == "m":
        for key in [k for k in state if k not in META_EXCLUDED]:
            del state[key]
        state.update(op[1])
    else:
        raise ValueError(f"unknown journal entry {kind!r}")


def meta_of(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in META_EXCLUDED}
