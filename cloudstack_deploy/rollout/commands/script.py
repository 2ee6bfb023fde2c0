"""A small POSIX-shell builder: every word quoted, control flow without string pasting.

A stage is one script per host sent on stdin (`sh -s`): one SSH round trip per stage (Kamal
makes ~30 exec calls per host for one role), and stdin keeps secrets out of argv (`ps` on the
host never shows them). Scripts are built only here and in the other builders of this
package, from argv lists (`Argv`), pipelines (`Pipe`), variables (`Var`) and conditions
(`Cond`): a value from a blueprint can only ever be one quoted word. Secret content is
written from here-documents whose delimiter is checked not to occur in the content.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

_VAR_RE = re.compile(r"[a-z_][a-z0-9_]*")

#: The remote command every script is sent to, on stdin.
RUNNER = "sh -s"


def q(argv: Argv | Pipe) -> str:
    """An argv list (or a pipeline) as one safely quoted shell command."""
    if isinstance(argv, Pipe):
        return " | ".join(q(a) for a in argv.commands)
    return " ".join(_word(a) for a in argv)


def _word(item: str | Var | Word) -> str:
    if isinstance(item, Var):
        return str(item)
    if isinstance(item, Word):
        return words(*item.parts)
    return shlex.quote(str(item))


@dataclass(frozen=True)
class Var:
    """A shell variable; rendered as ``"$name"`` (one word, never split or globbed)."""

    name: str

    def __post_init__(self) -> None:
        if not _VAR_RE.fullmatch(self.name):
            raise ValueError(f"not a script variable name: {self.name!r}")

    def __str__(self) -> str:
        return f'"${self.name}"'


Part = str | Var


@dataclass(frozen=True)
class Word:
    """One argv word made of literal text and variables, e.g. ``Word("http://", ip, "/up")``."""

    parts: tuple[Part, ...]

    def __init__(self, *parts: Part) -> None:
        object.__setattr__(self, "parts", tuple(parts))


#: A command: its words, each a literal, a variable or a composed `Word`.
Argv = Sequence[str | Var | Word]


@dataclass(frozen=True)
class Pipe:
    """``a | b | c``: the exit status is the last command's (POSIX sh has no pipefail)."""

    commands: tuple[Argv, ...]

    def __init__(self, *commands: Argv) -> None:
        object.__setattr__(self, "commands", tuple(commands))


Cmd = Argv | Pipe


def words(*parts: Part) -> str:
    """Literal text and variables as ONE shell word: ``'pre'"$v"'post'``."""
    return "".join(str(p) if isinstance(p, Var) else shlex.quote(p) for p in parts) or "''"


@dataclass(frozen=True)
class Cond:
    """A shell condition (for ``if``/``while``), composed only from the constructors below."""

    text: str

    def __and__(self, other: Cond) -> Cond:
        return Cond(f"{self.text} && {other.text}")

    def __or__(self, other: Cond) -> Cond:
        return Cond(f"{{ {self.text} || {other.text}; }}")

    def __invert__(self) -> Cond:
        return Cond(f"! {{ {self.text}; }}")


def succeeds(cmd: Cmd) -> Cond:
    """True when ``cmd`` exits 0 (its output discarded)."""
    return Cond(f"{q(cmd)} >/dev/null 2>&1")


def equals(var: Var, value: Part) -> Cond:
    return Cond(f"[ {var} = {words(value)} ]")


def differs(var: Var, value: Part) -> Cond:
    return Cond(f"[ {var} != {words(value)} ]")


def empty(var: Var) -> Cond:
    return Cond(f"[ -z {var} ]")


def nonempty(var: Var) -> Cond:
    return Cond(f"[ -n {var} ]")


def matches(var: Var, *patterns: str) -> Cond:
    """True when ``var`` matches one of the glob ``patterns`` (only ``*`` is special)."""
    globs = "|".join("*".join(shlex.quote(piece) if piece else "" for piece in p.split("*")) for p in patterns)
    return Cond(f"case {var} in {globs}) true;; *) false;; esac")


def at_least(var: Var, number: int) -> Cond:
    return Cond(f"[ {var} -ge {int(number)} ]")


def heredoc_delimiter(content: str) -> str:
    """A here-document's end word that ``content`` does not contain: derived from the content
    (the same script twice is the same text, so a plan is a function of its inputs), and
    checked, not guessed, to be absent from it."""
    for n in itertools.count():
        token = "CSDEPLOY_EOF_" + hashlib.sha256(f"{n}\0{content}".encode()).hexdigest()[:12]
        if token not in content:
            return token
    raise AssertionError("unreachable")


@dataclass
class Script:
    """A shell script built from quoted commands. ``set -eu``: any unchecked failure stops it."""

    lines: list[str] = field(default_factory=list)
    _depth: int = 0

    PREAMBLE = ("set -eu", "umask 077")

    # ---- plain commands --------------------------------------------------------------------
    def raw(self, line: str) -> Script:
        """A line of shell written by a builder of this package (never outside it, never user input)."""
        return self._add(line)

    def _add(self, line: str) -> Script:
        # A here-document is one element: only its first line is indented, so its body and
        # closing delimiter stay exactly as written.
        self.lines.append("  " * self._depth + line)
        return self

    def run(self, cmd: Cmd, *, quiet: bool = False, ok_codes: Iterable[int] = (), may_fail: bool = False,
            stderr_to_stdout: bool = False) -> Script:
        """Run ``cmd``. ``quiet`` drops its stdout; ``stderr_to_stdout`` merges its stderr into
        stdout (into nothing when quiet); ``may_fail`` ignores any failure (and drops its stderr
        unless merged); ``ok_codes`` are exit codes that do not stop the script."""
        line = q(cmd)
        if quiet:
            line += " >/dev/null"
        if stderr_to_stdout:
            line += " 2>&1"
        elif may_fail:
            line += " 2>/dev/null"
        codes = list(ok_codes)
        if may_fail:
            line += " || true"
        elif codes:
            line += f" || {{ rc=$?; case $rc in {'|'.join(str(c) for c in codes)}) ;; *) exit $rc;; esac; }}"
        return self._add(line)

    def capture(self, var: Var, cmd: Cmd, *, may_fail: bool = True) -> Script:
        """``var=$(cmd)``; with ``may_fail`` a failing command leaves ``var`` empty."""
        tail = " 2>/dev/null || true" if may_fail else ""
        return self._add(f"{var.name}=$({q(cmd)}{tail})")

    def set(self, var: Var, value: Part) -> Script:
        return self._add(f"{var.name}={words(value)}")

    def increment(self, var: Var) -> Script:
        return self._add(f"{var.name}=$(({var.name}+1))")

    def sleep(self, seconds: float) -> Script:
        return self._add(f"sleep {seconds:g}")

    def step(self, name: str) -> Script:
        """Mark progress: the host prints ``::step NAME`` so the caller can tell where it failed."""
        return self._add(q(["echo", f"::step {name}"]) + " >&2")

    def say(self, *parts: Part) -> Script:
        """A line on stderr (what the user sees when the stage fails)."""
        return self._add(f"printf '%s\\n' {words(*parts)} >&2")

    def emit(self, *parts: Part) -> Script:
        """A line on stdout (what the caller parses)."""
        return self._add(f"printf '%s\\n' {words(*parts)}")

    def exit(self, code: int) -> Script:
        return self._add(f"exit {int(code)}")

    def fail(self, code: int, *parts: Part) -> Script:
        """Say why on stderr and stop with ``code``."""
        return self.say(*parts).exit(code)

    # ---- files and stdin ---------------------------------------------------------------------
    def write_file(self, path: str, content: str, mode: str = "600") -> Script:
        """Write ``content`` to ``path`` (0600 by default) without it ever being in argv."""
        delim = heredoc_delimiter(content)
        body = content if content.endswith("\n") or not content else content + "\n"
        self._add(f"cat > {shlex.quote(path)} <<'{delim}'\n{body}{delim}")
        return self.run(["chmod", mode, path])

    def append_line(self, path: str, line: str) -> Script:
        """Append one line of text to ``path`` (created 0600 if missing)."""
        if "\n" in line:
            raise ValueError("append_line takes a single line")
        return self._add(f"printf '%s\\n' {shlex.quote(line)} >> {shlex.quote(path)}")

    def stdin_to(self, cmd: Cmd, content: str, *, quiet: bool = False) -> Script:
        """Run ``cmd`` with ``content`` on its stdin (e.g. docker login --password-stdin)."""
        delim = heredoc_delimiter(content)
        return self._add(f"{q(cmd)}{' >/dev/null' if quiet else ''} <<'{delim}'\n{content}\n{delim}")

    # ---- control flow --------------------------------------------------------------------------
    @contextmanager
    def _block(self, opening: str, closing: str) -> Iterator[Script]:
        self._add(opening)
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            self._add(closing)

    def when(self, cond: Cond) -> AbstractContextManager[Script]:
        """``if COND; then ... fi``; an ``otherwise()`` block may follow at once."""
        return self._block(f"if {cond.text}; then", "fi")

    def otherwise(self) -> AbstractContextManager[Script]:
        """The ``else`` of the ``when`` block just closed."""
        if not self.lines or self.lines[-1] != "  " * self._depth + "fi":
            raise ValueError("otherwise() must follow a when() block")
        self.lines.pop()
        return self._block("else", "fi")

    def each_word(self, var: Var, of: Var) -> AbstractContextManager[Script]:
        """``for var in $of`` (split on white space: only for lists of names the host printed)."""
        return self._block(f"for {var.name} in ${of.name}; do", "done")

    def loop(self) -> AbstractContextManager[Script]:
        """``while :; do ... done``: leave with ``break_()`` or ``fail()``."""
        return self._block("while :; do", "done")

    def break_(self) -> Script:
        return self._add("break")

    # ---- composition -------------------------------------------------------------------------
    def extend(self, other: Script) -> Script:
        """Append another script's lines at the current depth."""
        for line in other.lines:
            self._add(line)
        return self

    def text(self) -> str:
        """The whole script: ``set -eu`` (stop at the first unchecked failure), ``umask 077``."""
        return "\n".join([*self.PREAMBLE, *self.lines]) + "\n"
