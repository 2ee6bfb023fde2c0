"""Progress output: what a user sees on a terminal, in a CI log, or from a JSON consumer."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pty
import re
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from cloudstack_deploy.log import clear_secrets, register_secret
from cloudstack_deploy.progress import (
    Event,
    Recorder,
    format_summary,
    make_progress,
    summary,
)

CURSOR_UP = re.compile(r"\x1b\[\d+A")
SGR = re.compile(r"\x1b\[[0-9;]*m")
PLAIN_LINE = re.compile(r"^\[\s*\d+\.\ds\] \S")


@pytest.fixture(autouse=True)
def _no_secrets() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


class PtyCapture:
    """A real pseudo-terminal: the progress writes to the slave, a thread drains the master."""

    def __init__(self, cols: int = 100, rows: int = 30) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.stream = os.fdopen(slave, "w", encoding="utf-8")
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once the slave side is closed
                return
            if not data:
                return
            self._chunks.append(data)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")

    def finish(self) -> str:
        self.stream.close()
        self._thread.join(timeout=5)
        os.close(self.master)
        return self.text()


@pytest.fixture
def term() -> Iterator[PtyCapture]:
    capture = PtyCapture()
    yield capture
    with contextlib.suppress(OSError):
        capture.finish()


def drawn(output: Callable[[], str], what: str = "demo-web-1", timeout: float = 10.0) -> None:
    """Wait until the renderer has drawn ``what`` (a frame on the screen), not a fixed time: on a
    loaded machine 0.15 s was not always enough for the first frame."""
    deadline = time.monotonic() + timeout
    while what not in output():
        assert time.monotonic() < deadline, f"nothing drawn within {timeout:.0f} s: {output()!r}"
        time.sleep(0.01)


def screen(raw: str) -> list[str]:
    """What a terminal shows after `raw` (enough of VT100 for what the renderer uses)."""
    lines, row, col = [""], 0, 0
    for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", SGR.sub("", raw)):
        if not token:
            continue
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif token.startswith("\x1b["):
            arg, cmd = token[2:-1], token[-1]
            if cmd == "A":
                row = max(0, row - int(arg or 1))
            elif cmd == "K":
                lines[row] = ""
            elif cmd == "J":
                lines[row] = lines[row][:col]
                del lines[row + 1 :]
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    while lines and not lines[-1]:
        lines.pop()
    return lines


# --- json -----------------------------------------------------------------------------


def test_json_lines_parse_and_carry_every_field() -> None:
    out = io.StringIO()
    progress = make_progress("json", out)
    progress.emit(Event("vm demo-web-1", "create", "running", "Starting", env="demo"))
    progress.emit(Event("vm demo-web-1", "create", "failed", "InsufficientCapacity", env="demo"))
    progress.note("2 of 3 VMs created", level="warning")
    progress.close()

    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 3
    first, failed, note = records
    assert {k: first[k] for k in ("event", "resource", "action", "status", "detail", "env")} == {
        "event": "resource", "resource": "vm demo-web-1", "action": "create",
        "status": "running", "detail": "Starting", "env": "demo",
    }
    stamp = datetime.fromisoformat(first["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert first["level"] == "info" and failed["level"] == "error"
    assert note == {**note, "event": "note", "message": "2 of 3 VMs created", "level": "warning"}


def test_json_detail_is_redacted() -> None:
    register_secret("s3cr3t-registry-pw")
    out = io.StringIO()
    make_progress("json", out).emit(
        Event("ssh demo-web-1", "check", "failed", "docker login -p s3cr3t-registry-pw failed")
    )
    record = json.loads(out.getvalue())
    assert "s3cr3t" not in out.getvalue()
    assert record["detail"] == "docker login -p [REDACTED] failed"


# --- plain ----------------------------------------------------------------------------


def test_plain_prints_one_line_per_status_change() -> None:
    out = io.StringIO()
    progress = make_progress("plain", out)
    progress.emit(Event("vm demo-web-1", "create", "running", "Starting"))
    progress.emit(Event("vm demo-web-1", "create", "running", "Starting (job 40%)"))  # same status
    progress.emit(Event("vm demo-web-1", "create", "running", "Starting (job 80%)"))
    progress.emit(Event("vm demo-web-1", "create", "done", "Running, 10.1.1.5"))
    progress.emit(Event("vm demo-web-1", "create", "done", "Running, 10.1.1.5"))  # repeated
    progress.emit(Event("vm demo-web-1", "wait", "running"))  # new action: a change
    progress.close()

    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(PLAIN_LINE.match(line) for line in lines), lines
    assert lines[0].endswith("] vm demo-web-1: create running (Starting)")
    assert lines[1].endswith("] vm demo-web-1: create done (Running, 10.1.1.5)")
    assert lines[2].endswith("] vm demo-web-1: wait running")
    assert "\x1b" not in out.getvalue()


def test_plain_keeps_resources_of_different_envs_apart_and_prefixes_warnings() -> None:
    out = io.StringIO()
    progress = make_progress("plain", out)
    progress.emit(Event("vm web-1", "delete", "done", env="old-a"))
    progress.emit(Event("vm web-1", "delete", "done", env="old-b"))
    progress.note("lease expired for old-a", level="warning")
    progress.note("2 environments removed")
    lines = out.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "[old-a] vm web-1: delete done",
        "[old-b] vm web-1: delete done",
        "warning: lease expired for old-a",
        "2 environments removed",
    ]


def test_auto_picks_plain_for_a_non_terminal_stream() -> None:
    out = io.StringIO()
    progress = make_progress("auto", out)
    progress.emit(Event("network csdeploy-demo", "create", "done", "10.1.1.0/24"))
    progress.close()
    assert re.fullmatch(
        r"\[\s*\d+\.\ds\] network csdeploy-demo: create done \(10\.1\.1\.0/24\)\n", out.getvalue()
    )


def test_auto_picks_tty_on_a_terminal_unless_term_is_dumb(
    term: PtyCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "dumb")
    dumb = make_progress("auto", term.stream)
    dumb.emit(Event("vm demo-web-1", "create", "done"))
    dumb.close()
    monkeypatch.setenv("TERM", "xterm-256color")
    live = make_progress("auto", term.stream)
    live.emit(Event("vm demo-web-2", "create", "done"))
    live.close()
    raw = term.finish()
    dumb_part, live_part = raw.split("vm demo-web-1: create done", 1)
    assert "\x1b" not in dumb_part
    assert "\x1b[2K" in live_part and "vm demo-web-2" in live_part


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown progress mode 'fancy'"):
        make_progress("fancy", io.StringIO())


# --- never raising --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["json", "plain", "tty"])
def test_emit_on_a_closed_stream_does_not_raise(mode: str) -> None:
    out = io.StringIO()
    progress = make_progress(mode, out)
    progress.emit(Event("vm demo-web-1", "create", "running"))
    out.close()
    progress.emit(Event("vm demo-web-1", "create", "done"))
    progress.note("still going")
    progress.close()
    progress.emit(Event("vm demo-web-2", "create", "done"))  # and after close, too


@pytest.mark.parametrize("mode", ["json", "plain", "tty"])
def test_emit_on_a_broken_pipe_does_not_raise(mode: str) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w")
    progress = make_progress(mode, stream)
    for i in range(20):
        progress.emit(Event(f"vm demo-web-{i}", "create", "failed", "x" * 100))
    progress.note("summary")
    time.sleep(0.15)  # let the tty renderer hit the pipe from its thread
    progress.close()
    with contextlib.suppress(OSError):
        stream.close()


@pytest.mark.parametrize("mode", ["json", "plain"])
def test_emit_after_close_is_still_reported(mode: str) -> None:
    out = io.StringIO()
    progress = make_progress(mode, out)
    progress.close()
    progress.emit(Event("vm late-1", "delete", "done"))
    assert "vm late-1" in out.getvalue()


# --- tty ------------------------------------------------------------------------------


def test_tty_rewrites_lines_in_place_and_ends_with_every_final_status(
    term: PtyCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    progress = make_progress("tty", term.stream)
    progress.emit(Event("vm demo-web-1", "create", "pending"))
    progress.emit(Event("vm demo-web-2", "create", "running", "Starting"))
    progress.emit(Event("network csdeploy-demo", "create", "running"))
    drawn(term.text, "csdeploy-demo")
    progress.emit(Event("network csdeploy-demo", "create", "done", "10.1.1.0/24"))
    progress.emit(Event("vm demo-web-1", "create", "running", "Starting"))
    time.sleep(0.25)
    progress.emit(Event("vm demo-web-1", "create", "done", "Running, 10.1.1.5"))
    progress.emit(Event("vm demo-web-2", "create", "failed", "InsufficientCapacity"))
    progress.close()
    term.stream.write("$ next prompt\n")
    raw = term.finish()

    assert CURSOR_UP.search(raw), "live lines are redrawn with cursor-up"
    assert "\x1b[32m" in raw and "\x1b[31m" in raw, "done is green and failed red on a TTY"
    shown = screen(raw)
    assert len(shown) == 4, shown  # one line per resource, then the prompt below them
    by_name = {line.split()[1] + " " + line.split()[2]: line for line in shown[:3]}
    assert re.search(r"create\s+done\s+[\d.]+s\s+Running, 10\.1\.1\.5$", by_name["vm demo-web-1"])
    assert re.search(r"create\s+failed\s+[\d.]+s\s+InsufficientCapacity$", by_name["vm demo-web-2"])
    assert re.search(r"create\s+done\s+[\d.]+s\s+10\.1\.1\.0/24$", by_name["network csdeploy-demo"])
    assert shown[3] == "$ next prompt"


def test_tty_respects_no_color(term: PtyCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    progress = make_progress("tty", term.stream)
    progress.emit(Event("vm demo-web-1", "create", "running"))
    drawn(term.text)  # the running row is on the screen: the next frame redraws over it
    progress.emit(Event("vm demo-web-1", "create", "failed", "boom"))
    progress.note("careful", level="warning")
    progress.close()
    raw = term.finish()
    assert not SGR.search(raw)
    assert CURSOR_UP.search(raw)
    assert "warning: careful" in screen(raw)


def test_tty_forced_on_a_pipe_moves_the_cursor_but_never_colours() -> None:
    out = io.StringIO()
    progress = make_progress("tty", out)
    progress.emit(Event("vm demo-web-1", "create", "running"))
    drawn(out.getvalue)
    progress.emit(Event("vm demo-web-1", "create", "done"))
    progress.close()
    assert CURSOR_UP.search(out.getvalue()) and not SGR.search(out.getvalue())
    assert re.search(r"vm demo-web-1\s+create\s+done", screen(out.getvalue())[0])


def test_tty_redraws_at_most_about_ten_times_a_second(term: PtyCapture) -> None:
    progress = make_progress("tty", term.stream)
    started = time.monotonic()
    for i in range(2000):
        progress.emit(Event(f"vm demo-web-{i % 5}", "create", "running", f"poll {i}"))
    time.sleep(0.3)
    elapsed = time.monotonic() - started
    progress.close()
    frames = term.finish().count("\x1b[J")
    assert 2 <= frames <= elapsed * 10 + 3, (frames, elapsed)


def test_tty_running_line_shows_a_ticking_clock(term: PtyCapture) -> None:
    progress = make_progress("tty", term.stream)
    progress.emit(Event("ssh demo-web-1", "wait", "running", "port 22"))
    deadline = time.monotonic() + 10  # waits for the second clock, not for a guess at how long it takes
    while True:
        clocks = {float(m) for m in re.findall(r"(\d+\.\d)s  port 22", SGR.sub("", term.text()))}
        if (len(clocks) >= 2 and max(clocks) >= 0.2) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    progress.close()
    assert len(clocks) >= 2 and max(clocks) >= 0.2, clocks


def test_tty_live_lines_fit_the_terminal_width() -> None:
    capture = PtyCapture(cols=50, rows=20)
    progress = make_progress("tty", capture.stream)
    progress.emit(Event("vm demo-web-1", "create", "running", "a very long detail " * 10))
    drawn(capture.text)
    live = screen(capture.text())
    progress.close()
    capture.finish()
    assert live and all(len(line) < 50 for line in live), live


def test_tty_live_region_never_outgrows_the_terminal() -> None:
    capture = PtyCapture(cols=100, rows=10)
    progress = make_progress("tty", capture.stream)
    for i in range(30):
        progress.emit(Event(f"vm demo-web-{i}", "create", "running"))
    drawn(capture.text, "23 more")
    live = screen(capture.text())
    for i in range(30):
        progress.emit(Event(f"vm demo-web-{i}", "create", "done"))
    progress.close()
    final = screen(capture.finish())
    assert len(live) <= 8 and "and 23 more" in live[-1], live
    assert sum(bool(re.search(r"vm demo-web-\d+\s+create\s+done", line)) for line in final) == 30


def test_tty_emit_after_close_prints_a_plain_line(term: PtyCapture) -> None:
    progress = make_progress("tty", term.stream)
    progress.close()
    progress.emit(Event("vm late-1", "delete", "done"))
    raw = term.finish()
    assert not CURSOR_UP.search(raw)
    assert re.search(r"vm late-1\s+delete\s+done", SGR.sub("", raw))


# --- recorder and summary -------------------------------------------------------------


def test_recorder_and_summary_count_the_last_outcome_per_resource() -> None:
    recorder = Recorder()
    for event in [
        Event("vm web-1", "create", "running"),
        Event("vm web-1", "create", "failed", "timeout"),
        Event("vm web-1", "create", "done"),  # retried and succeeded
        Event("vm web-2", "create", "failed", "no capacity"),
        Event("vm web-2", "create", "failed", "no capacity"),  # repeated report
        Event("ip 127.200.0.5", "delete", "skipped", "already gone"),
        Event("vm web-1", "wait", "done"),
    ]:
        recorder.emit(event)
    recorder.note("done", level="info")
    recorder.close()
    counts = summary(recorder.events)
    assert counts == {"create done": 1, "create failed": 1, "delete skipped": 1, "wait done": 1}
    assert format_summary(counts) == "create: 1 done, 1 failed; delete: 1 skipped; wait: 1 done"
    assert recorder.notes == [("info", "done")] and recorder.closed


HOSTILE = "bad\x1b]0;owned\x07\x1b[2J\rfake line\x9b31m"


def test_text_from_the_cloud_or_a_host_cannot_drive_the_terminal() -> None:
    """Resource names come from the cloud and details from its errors or a host's output:
    escape sequences in them are shown escaped, never sent to the terminal."""
    out = io.StringIO()
    progress = make_progress("plain", out)
    progress.emit(Event(f"vm {HOSTILE}", "create", "failed", HOSTILE + "\nsecond line"))
    progress.note(HOSTILE, level="warning")
    progress.close()
    text = out.getvalue()
    assert not any(c in text for c in "\x1b\x07\r\x9b")
    lines = text.splitlines()
    assert len(lines) == 2
    assert "vm bad\\x1b]0;owned\\x07\\x1b[2J\\rfake line\\x9b31m: create failed" in lines[0]
    assert "\\nsecond line" in lines[0]

    out = io.StringIO()
    progress = make_progress("tty", out)
    progress.emit(Event(f"vm {HOSTILE}", "create", "failed", HOSTILE))
    progress.note(HOSTILE)
    progress.close()
    without_ours = re.sub(r"\x1b\[\d*[AKJ]|\x1b\[\?25[hl]|\x1b\[[0-9;]*m", "", out.getvalue())
    assert not any(c in without_ours for c in "\x1b\x07\x9b")


def test_an_error_message_is_printed_with_its_control_characters_escaped(
        capsys: pytest.CaptureFixture[str]) -> None:
    from cloudstack_deploy.cli.common import render_error
    from cloudstack_deploy.errors import CsdeployError

    render_error(CsdeployError(f"CloudStack said: {HOSTILE}\n  second line", hint=f"see {HOSTILE}"))
    err = capsys.readouterr().err
    assert not any(c in err for c in "\x1b\x07\r\x9b")
    assert err.splitlines() == [
        "csdeploy: error: CloudStack said: bad\\x1b]0;owned\\x07\\x1b[2J\\rfake line\\x9b31m",
        "  second line",
        "hint: see bad\\x1b]0;owned\\x07\\x1b[2J\\rfake line\\x9b31m",
    ]
