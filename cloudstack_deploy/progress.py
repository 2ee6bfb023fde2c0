"""Progress reporting for long commands (create-env, teardown, deploy).

Library code reports what happens to each resource as `Event`s and never prints; the CLI
picks how they are shown: a live per-resource view on a terminal, one stable line per status
change for CI logs, or JSON lines for machines. `emit` never raises: a closed or broken
stderr must not abort a run that is half way through creating VMs. Text is passed through
`log.redact`, since details often carry error messages, and those can echo secrets.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TextIO

from .log import redact, terminal_safe

FINISHED = frozenset({"done", "failed", "skipped", "warning"})
"""Statuses after which a resource needs no more attention (until its next action)."""

_LEVELS = {"failed": "error", "warning": "warning"}
_COLOURS = {"done": "32", "failed": "31", "warning": "33", "skipped": "2", "running": "36",
            "error": "31"}
_SYMBOLS = {"done": "✓", "failed": "✗", "warning": "!", "skipped": "-", "pending": "·", "other": "…"}
_ASCII_SYMBOLS = {"done": "+", "failed": "x", "warning": "!", "skipped": "-", "pending": ".",
                  "other": "*"}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_ASCII_SPINNER = "|/-\\"
FRAME_INTERVAL = 0.1
"""Seconds between redraws of the live view: smooth enough, and cheap on slow terminals."""


@dataclass(frozen=True)
class Event:
    """One thing that happened to one resource, e.g. `vm demo-web-1` / create / done."""

    resource: str
    action: str
    status: str
    detail: str = ""
    env: str | None = None


class Progress(Protocol):
    """Where long commands report; see `make_progress` for the implementations."""

    def emit(self, event: Event) -> None:
        """Report a resource's state; never raises, whatever happened to the stream."""

    def note(self, text: str, *, level: str = "info") -> None:
        """A free text line (warnings, summaries); level is info, warning or error."""

    def close(self) -> None:
        """Finish the display (the final state stays printed); later calls still never raise."""


@dataclass
class Recorder:
    """A Progress that only stores what it is told: for tests and for end-of-run summaries."""

    events: list[Event] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (level, text)
    closed: bool = False

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def note(self, text: str, *, level: str = "info") -> None:
        self.notes.append((level, text))

    def close(self) -> None:
        self.closed = True


def summary(events: Iterable[Event]) -> dict[str, int]:
    """Count finished resources by `"<action> <status>"`, e.g. `{"create done": 3}`.

    Only the last finished status of each (env, resource, action) counts, so a step that
    failed and then succeeded on retry is one `done`, not one of each.
    """
    last: dict[tuple[str | None, str, str], str] = {}
    for event in events:
        if event.status in FINISHED:
            last[(event.env, event.resource, event.action)] = event.status
    counts = Counter(f"{action} {status}" for (_, _, action), status in last.items())
    return dict(sorted(counts.items()))


def format_summary(counts: dict[str, int]) -> str:
    """`summary()` as one line: `create: 3 done, 1 failed; delete: 2 skipped`."""
    by_action: dict[str, list[str]] = {}
    for key, n in counts.items():
        action, _, status = key.rpartition(" ")
        by_action.setdefault(action, []).append(f"{n} {status}")
    return "; ".join(f"{action}: {', '.join(parts)}" for action, parts in by_action.items())


class _StreamProgress:
    """Shared plumbing: a start time, a lock, and writes that give up instead of raising."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.closed = False
        self._broken = False
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        if self._broken or not text:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # closed file, EPIPE, EBADF, encoding errors: drop output, keep going
            self._broken = True

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def close(self) -> None:
        with self._lock:
            self.closed = True


class JsonProgress(_StreamProgress):
    """One JSON object per line, for CI systems and programs driving csdeploy."""

    def emit(self, event: Event) -> None:
        record = {"event": "resource", **asdict(event), "level": _LEVELS.get(event.status, "info")}
        record["resource"], record["detail"] = redact(event.resource), redact(event.detail)
        self._line(record)

    def note(self, text: str, *, level: str = "info") -> None:
        self._line({"event": "note", "message": redact(text), "level": level})

    def _line(self, record: dict[str, object]) -> None:
        record["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        record["elapsed"] = round(self._elapsed(), 3)
        try:
            line = json.dumps(record, default=str) + "\n"
        except Exception:  # never raise from emit, even for an unserialisable detail
            return
        with self._lock:
            self._write(line)


class PlainProgress(_StreamProgress):
    """One line per status change, `[  3.2s] vm demo-web-1: create done (Running)`.

    No cursor tricks or colour, and repeated reports of the same status are dropped, so CI
    logs stay short and `grep failed` finds what broke.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._last: dict[tuple[str | None, str], tuple[str, str]] = {}

    def emit(self, event: Event) -> None:
        key, state = (event.env, event.resource), (event.action, event.status)
        with self._lock:
            if self._last.get(key) == state:
                return
            self._last[key] = state
            self._write(f"[{self._elapsed():5.1f}s] {_describe(event)}\n")

    def note(self, text: str, *, level: str = "info") -> None:
        prefix = "" if level == "info" else f"{level}: "
        with self._lock:
            self._write(f"[{self._elapsed():5.1f}s] {prefix}{_shown(text)}\n")


def _shown(text: str) -> str:
    """Text from the cloud or a host as a terminal line: redacted, control characters escaped."""
    return terminal_safe(redact(text), keep_newlines=False)


def _describe(event: Event) -> str:
    """`[env] resource: action status (detail)`: the greppable core of a plain line."""
    env = f"[{event.env}] " if event.env else ""
    detail = f" ({_shown(event.detail)})" if event.detail else ""
    return f"{env}{_shown(event.resource)}: {event.action} {event.status}{detail}"


@dataclass
class _Row:
    event: Event
    started: float
    ended: float | None = None


class TtyProgress(_StreamProgress):
    """A live view: one line per resource, redrawn in place by a background thread.

    `emit` only updates state under a lock; all terminal I/O happens in the drawing thread
    (at most every FRAME_INTERVAL seconds), so a slow terminal never stalls the event loop.
    Finished rows at the top of the view are printed for good and leave the live region,
    which keeps the region small enough to redraw even for hundreds of resources.
    """

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        super().__init__(stream)
        self.colour = _wants_colour(stream) if colour is None else colour
        utf8 = "utf" in (getattr(stream, "encoding", None) or "utf-8").lower()
        self._symbols, self._spinner = (_SYMBOLS, _SPINNER) if utf8 else (_ASCII_SYMBOLS, _ASCII_SPINNER)
        self._ellipsis = "…" if utf8 else "..."
        self._rows: dict[tuple[str | None, str], _Row] = {}
        self._above: list[str] = []  # lines to print once, above the live region
        self._drawn = 0  # lines of live region currently on screen (cursor sits below them)
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io_lock = threading.Lock()  # frames are built under _lock, written under this

    def _output(self, text: str) -> None:
        with self._io_lock:
            self._write(text)

    def emit(self, event: Event) -> None:
        try:
            with self._lock:
                closed = self.closed
                if not closed:
                    self._update(event)
            if closed:  # the live view is gone: print the event as a finished line
                self._output(self._format(_Row(event, time.monotonic()), final=True) + "\n")
            else:
                self._ensure_thread()
        except Exception:  # never raise from emit (e.g. thread start at interpreter exit)
            pass

    def _update(self, event: Event) -> None:
        """Record `event` in its row (called with _lock held); no I/O."""
        now, key = time.monotonic(), (event.env, event.resource)
        row = self._rows.get(key)
        if row is None:  # new, or committed earlier: a fresh row at the bottom
            row = self._rows[key] = _Row(event, now)
        elif row.event.status == "pending" or (
            row.ended is not None and (event.action != row.event.action or event.status not in FINISHED)
        ):  # the clock measures the current step, not time spent queued or before
            row.started = now
        row.event = event
        row.ended = now if event.status in FINISHED else None
        self._dirty = True

    def note(self, text: str, *, level: str = "info") -> None:
        prefix = "" if level == "info" else f"{level}: "
        lines = [self._paint(f"{prefix}{terminal_safe(line)}", level) for line in redact(text).splitlines() or [""]]
        with self._lock:
            closed = self.closed
            if not closed:
                self._above.extend(lines)
                self._dirty = True
        if closed:
            self._output("".join(line + "\n" for line in lines))
        else:
            self._ensure_thread()

    def close(self) -> None:
        """Stop redrawing and print every row's final state, leaving the cursor below."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
        try:
            with self._lock:
                frame = "" if self.closed else self._frame(final=True)
                self.closed = True
            self._output(frame)
        except Exception:  # closing the display must not mask the command's own outcome
            self.closed = True

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self.closed:
                    self._thread = threading.Thread(target=self._run, name="csdeploy-progress", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FRAME_INTERVAL) and not self._broken:
            try:
                with self._lock:
                    running = any(row.ended is None for row in self._rows.values())
                    # running rows show a spinner and a growing clock, so they redraw anyway
                    frame = self._frame(final=False) if self._dirty or running else ""
                self._output(frame)
            except Exception:  # a display bug must not print thread tracebacks over the run
                self._broken = True

    def _frame(self, *, final: bool) -> str:
        """One frame (built with _lock held): lines printed for good, then the live region."""
        width, height = _terminal_size(self.stream)
        limit = max(height - 2, 1)
        keys = [] if final else list(self._rows)
        while keys and self._rows[keys[0]].ended is not None:  # finished at the top: commit
            keys.pop(0)
        if len(keys) > limit:  # too tall to redraw: commit finished rows wherever they are
            keys = [key for key in keys if self._rows[key].ended is None]
        kept = set(keys)
        for key in [key for key in self._rows if key not in kept]:
            self._above.append(self._format(self._rows.pop(key), final=True))
        live = [self._format(self._rows[key], final=False, width=width) for key in keys]
        if len(live) > limit:
            more = f"{self._ellipsis} and {len(live) - limit + 1} more"
            live = live[: limit - 1] + [more[: width - 1]]
        if not (self._drawn or self._above or live):
            return ""
        parts = [f"\x1b[{self._drawn}A" if self._drawn else "", "\r"]
        parts += [f"\x1b[2K{line}\n" for line in self._above + live]
        parts.append("\x1b[J")  # clear whatever the previous, taller frame left below
        self._above.clear()
        self._drawn, self._dirty = len(live), False
        return "".join(parts)

    def _format(self, row: _Row, *, final: bool, width: int | None = None) -> str:
        event, now = row.event, time.monotonic()
        status = event.status
        if status in FINISHED:
            symbol = self._symbols[status]
        elif status == "running" and not final:
            symbol = self._spinner[int(now / FRAME_INTERVAL) % len(self._spinner)]
        else:
            symbol = self._symbols["pending" if status == "pending" else "other"]
        elapsed = ((row.ended or now) - row.started) if status != "pending" else None
        clock = f"{elapsed:6.1f}s" if elapsed is not None else " " * 7
        env = f"[{event.env}] " if event.env else ""
        name = f"{env}{_shown(event.resource)}"
        text = f"{symbol} {name:<30} {event.action:<7} {status:<8} {clock}  {_shown(event.detail)}"
        text = text.rstrip()
        if width is not None and len(text) > width - 1:  # a wrapped line breaks cursor-up counts
            text = text[: max(width - 1 - len(self._ellipsis), 1)] + self._ellipsis
        return self._paint(text, status)

    def _paint(self, text: str, status: str) -> str:
        code = _COLOURS.get(status)
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code else text


def _wants_colour(stream: TextIO) -> bool:
    """Colour only on a real terminal, and never when NO_COLOR is set (no-color.org)."""
    return _isatty(stream) and not os.environ.get("NO_COLOR")


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # closed or fake streams
        return False


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    """(columns, lines) of the stream's terminal; 80x24 when unknown (pipes, fresh ptys)."""
    try:
        columns, lines = os.get_terminal_size(stream.fileno())
    except Exception:
        columns = lines = 0
    return (columns if columns > 0 else 80), (lines if lines > 0 else 24)


def make_progress(mode: str = "auto", stream: TextIO | None = None) -> Progress:
    """A Progress for `mode`: "json", "plain", "tty", or "auto" (tty on a terminal, else plain).

    `stream` defaults to the current sys.stderr, keeping stdout free for command output.
    """
    out = stream if stream is not None else sys.stderr
    if mode == "auto":
        mode = "tty" if _isatty(out) and os.environ.get("TERM") != "dumb" else "plain"
    kinds: dict[str, type[Progress]] = {"json": JsonProgress, "plain": PlainProgress, "tty": TtyProgress}
    if mode not in kinds:
        raise ValueError(f"unknown progress mode {mode!r}; use auto, tty, plain or json")
    return kinds[mode](out)
