"""The script builder under a real /bin/sh: control flow does what it says and a value is
always one word, never code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cloudstack_deploy.rollout.commands.script import (
    Pipe,
    Script,
    Var,
    Word,
    at_least,
    differs,
    empty,
    equals,
    heredoc_delimiter,
    matches,
    nonempty,
    succeeds,
)

NASTY = "a'b\"c $(touch PWNED) `touch PWNED2` ; touch PWNED3 \\ * ?"


def sh(script: Script, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-s"], input=script.text(), capture_output=True, text=True, cwd=cwd, timeout=20)


def test_variables_conditions_and_else(tmp_path: Path) -> None:
    s = Script()
    v = Var("v")
    s.set(v, NASTY)
    with s.when(equals(v, NASTY) & nonempty(v)):
        s.emit("equal ", v)
    with s.otherwise():
        s.emit("differ")
    with s.when(differs(v, "x") | empty(v)):
        s.emit("second")
    res = sh(s, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"equal {NASTY}", "second"]
    assert not list(tmp_path.iterdir()), "nothing was executed"


def test_capture_may_fail_and_loop_with_counter(tmp_path: Path) -> None:
    s = Script()
    out, i = Var("out"), Var("i")
    s.capture(out, ["sh", "-c", "echo partial; exit 3"])
    s.emit("captured:", out)
    s.set(i, "0")
    with s.loop():
        s.increment(i)
        with s.when(at_least(i, 3)):
            s.break_()
    s.emit("i=", i)
    res = sh(s, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["captured:partial", "i=3"]


def test_matches_treats_only_star_as_special(tmp_path: Path) -> None:
    s = Script()
    st = Var("st")
    for value, want in (("unhealthy running", "yes"), ("healthy exited", "yes"), ("a*b", "no"),
                        ("[x] running", "no")):
        s.set(st, value)
        with s.when(matches(st, "unhealthy *", "*exited*")):
            s.emit("yes")
        with s.otherwise():
            s.emit("no")
        s.emit(f"want {want}")
    lines = sh(s, tmp_path).stdout.splitlines()
    assert lines[0::2] == [w.split()[-1] for w in lines[1::2]]


def test_failures_stop_the_script_with_their_code(tmp_path: Path) -> None:
    s = Script()
    s.run(["sh", "-c", "exit 5"], ok_codes=[5])
    s.run(["false"], may_fail=True)
    with s.when(~succeeds(["test", "-e", "nope"])):
        s.fail(42, "missing ", "nope")
    s.emit("not reached")
    res = sh(s, tmp_path)
    assert res.returncode == 42 and res.stderr.strip() == "missing nope" and res.stdout == ""


def test_here_documents_survive_indentation_and_words_compose(tmp_path: Path) -> None:
    s = Script()
    with s.when(succeeds(["true"])):
        s.write_file("f.txt", "line one\n  $HOME `x`\nCSDEPLOY_EOF\n")
        s.stdin_to(Pipe(["cat"], ["tr", "a-z", "A-Z"]), NASTY)
    ip = Var("ip")
    s.set(ip, "10.0.0.1")
    s.run(["printf", "%s\\n", Word("http://", ip, ":80/", NASTY)])
    res = sh(s, tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "f.txt").read_text() == "line one\n  $HOME `x`\nCSDEPLOY_EOF\n"
    assert oct((tmp_path / "f.txt").stat().st_mode & 0o777) == "0o600"
    assert res.stdout.splitlines() == [NASTY.upper(), f"http://10.0.0.1:80/{NASTY}"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("PWNED")]


def test_otherwise_must_follow_when() -> None:
    s = Script()
    s.emit("x")
    with pytest.raises(ValueError), s.otherwise():
        pass
    with pytest.raises(ValueError):
        Var("no-dashes")
    with pytest.raises(ValueError):
        Script().append_line("f", "two\nlines")


def test_a_here_document_s_end_word_is_the_same_for_the_same_content(tmp_path: Path) -> None:
    """The rollout's plan is compared and printed: the same script built twice must be the
    same text (the end word was random); content holding end-word-like lines still survives."""
    first = heredoc_delimiter("API_TOKEN=x\n")
    assert first == heredoc_delimiter("API_TOKEN=x\n") and first != heredoc_delimiter("API_TOKEN=y\n")
    hostile = f"A=1\n{first}\n{heredoc_delimiter('A=1')}\ntouch PWNED\n"
    assert heredoc_delimiter(hostile) not in hostile
    s = Script()
    s.write_file("f.txt", hostile)
    assert s.text() == _written(hostile), "built twice, the same text"
    res = sh(s, tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "f.txt").read_text() == hostile
    assert not (tmp_path / "PWNED").exists()


def _written(content: str) -> str:
    s = Script()
    s.write_file("f.txt", content)
    return s.text()
