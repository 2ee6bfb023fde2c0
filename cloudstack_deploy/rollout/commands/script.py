"""Compose argv lists into one POSIX shell script sent on stdin (`sh -s`).

One script per host per stage keeps SSH round trips low (Kamal makes ~30 exec calls per
host for one role), and stdin keeps secrets out of argv (`ps` on the host never shows
them). Every word is quoted with shlex; secret files are written from here-documents
whose delimiter is checked not to occur in the content.
"""

from __future__ import annotations

import secrets as _secrets
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Argv = Sequence[str]


def q(argv: Argv) -> str:
    """An argv list as one safely quoted shell command."""
    return shlex.join([str(a) for a in argv])


def heredoc_delimiter(content: str) -> str:
    while True:
        token = f"CSDEPLOY_EOF_{_secrets.token_hex(6)}"
        if token not in content:
            return token


@dataclass
class Script:
    """A shell script built line by line from quoted commands."""

    lines: list[str] = field(default_factory=lambda: ["set -eu", "umask 077"])

    def run(self, argv: Argv, *, ok_codes: Iterable[int] = ()) -> Script:
        cmd = q(argv)
        codes = list(ok_codes)
        if codes:
            cases = "|".join(str(c) for c in codes)
            cmd = f"{cmd} || {{ rc=$?; case $rc in {cases}) ;; *) exit $rc;; esac; }}"
        self.lines.append(cmd)
        return self

    def raw(self, line: str) -> Script:
        """A line of shell written by a builder in this package (never user input)."""
        self.lines.append(line)
        return self

    def step(self, name: str) -> Script:
        """Mark progress: the host prints `::step NAME` so the caller can tell where it failed."""
        self.lines.append(q(["echo", f"::step {name}"]) + " >&2")
        return self

    def write_file(self, path: str, content: str, mode: str = "600") -> Script:
        """Write ``content`` to ``path`` (mode 0600 by default) without it ever being in argv."""
        delim = heredoc_delimiter(content)
        body = content if content.endswith("\n") or not content else content + "\n"
        self.lines.append(f"cat > {shlex.quote(path)} <<'{delim}'\n{body}{delim}")
        self.lines.append(q(["chmod", mode, path]))
        return self

    def stdin_to(self, argv: Argv, content: str) -> Script:
        """Run ``argv`` with ``content`` on its stdin (e.g. docker login --password-stdin)."""
        delim = heredoc_delimiter(content)
        self.lines.append(f"{q(argv)} <<'{delim}'\n{content}\n{delim}")
        return self

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
