"""Reading a blueprint (or an imported file) from disk without trusting the path.

A path can name a FIFO (opening it for reading blocks until a writer comes, which may be
never), a device (`/dev/zero` never ends) or a file of gigabytes. The file is opened without
blocking, its type checked on the open descriptor (no race with a rename), and at most
``limit + 1`` bytes are read, so every one of these is a one-line error naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .blueprint_rules import Problem


class _Refused(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_bounded(path: str | Path, limit: int, *, what: str, too_big: str | None = None,
                 missing: str = "no such file") -> str | Problem:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes, or the Problem that
    says why not (naming the file, and the line for bad UTF-8).

    ``what`` ends the messages that say what was expected ("a blueprint file");
    ``too_big`` replaces the default "larger than N KiB" message.
    """
    try:
        return _read(path, limit, what, too_big, missing)
    except _Refused as exc:
        return exc.problem


def _read(path: str | Path, limit: int, what: str, too_big: str | None, missing: str) -> str:
    name = str(path)

    def refuse(message: str, line: int | None = None) -> _Refused:
        return _Refused(Problem(name, line, "", message))

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise refuse(missing) from None
    except IsADirectoryError:
        raise refuse(f"is a directory, not {what}") from None
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise refuse(f"is a directory, not {what}")
        if not stat.S_ISREG(mode):
            raise refuse(f"is {_kind(mode)}, not {what}; csdeploy reads regular files only")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise refuse(too_big or f"larger than {limit >> 10} KiB, the most csdeploy reads; not {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse("not a UTF-8 text file", data.count(b"\n", 0, exc.start) + 1) from None
