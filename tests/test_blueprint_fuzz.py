"""Property-based: whatever a blueprint file or a `--set` holds, loading it ends in a
Blueprint or in BlueprintError lines that name the file, are printable, and cost bounded
memory; never a traceback.

1,200 examples in all (about 6 s of CPU): mutations of the demo blueprint (hostile scalars, YAML
tags, anchors and aliases, merge keys, control characters in keys, deep nesting), arbitrary
text over YAML's significant characters, and `--set` overrides. Memory is checked through
the process's peak RSS, which an alias bomb would push up by gigabytes (tracemalloc, more
precise, triples the run time; tests/test_blueprint_hostile.py uses it on the known bombs).
"""

from __future__ import annotations

import re
import resource
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint

ROOT = Path(__file__).resolve().parents[1]
#: The demo blueprint without its comments (PyYAML's pure-Python scanner reads them slowly).
DEMO_LINES = [re.sub(r"\s+#.*$", "", line) for line in (ROOT / "blueprints" / "demo.yml").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
MINIMAL = ROOT / "blueprints" / "minimal.yml"
#: Growth of the peak RSS allowed for one load: far above what loading a blueprint takes, far
#: below what any bomb does.
MEMORY_BOUND_KB = 200 * 1024

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                         HealthCheck.function_scoped_fixture])
#: Each property runs as SHARDS tests of 1/SHARDS of its examples (each shard draws its own), so
#: pytest-xdist spreads the work over workers instead of one worker running it all at the end.
SHARDS = 3
shards = pytest.mark.parametrize("shard", range(SHARDS))

# ---- pieces of hostile YAML ------------------------------------------------------------------------
CONTROL = st.sampled_from(["\x00", "\x07", "\x1b[31m", "\x1b]0;t\x07", "\r", "\n", "\t", "\x85", "\u2028",
                           "\u202e", "\ufeff", "\x7f", "\x9b", "\ud7ff"])
WORDS = st.sampled_from(["web", "worker", "db", "count", "image", "cloud", "roles", "disk", "mount", "ttl",
                         "env", "clear", "secret", "proxy", "host", "<<", "?", "-", "~", "null", "yes", "on"])
SCALARS = st.one_of(
    st.sampled_from([
        ".inf", "-.inf", ".nan", "1.0e+400", "99999999999999999999999", "-1", "0", "1001", "1e300",
        "99999999999999w", "5000000d", "0m", "!!int abc", "!!float x", "!!bool maybe", "!!timestamp no",
        "!!binary aGk=", "!!python/object:os.system ls", "!custom x", "!!str [1]", "!!map x", "!!seq x",
        "&a [1, 2]", "*a", "*undefined", "<<: *a", "[*a, *a, *a]", "{<<: [*a, *a]}", "'unterminated",
        '"\\x00"', '"\\e[2J"', "|\n  block", ">\n  folded", "/etc", "/data/../etc", "/data/x';touch${IFS}P;'",
        "'/data/$x'", "[[[[[[[[[[]]]]]]]]]]", "{a: {b: {c: {d: {e: 1}}}}}", "- - - - x", "%YAML 1.1",
        "--- ", "...", "@", "`", "registry.lab:5000/app:tag", "0.0.0.0/0", "10.0.0.1/8", "2024-13-45",
        "0x1F", "0o17", "1_000", "'" + "x" * 300 + "'",
    ]),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30).map(lambda s: '"' + s.replace("\\", "\\\\")
                                                                       .replace('"', '\\"') + '"'),
)
KEYS = st.one_of(WORDS, st.builds(lambda w, c: f'"{w}{c!s}"'.replace("\n", "\\n"), WORDS, CONTROL),
                 st.text(alphabet="abcXYZ_-.:0 ", min_size=1, max_size=12))


def alias_chain(fanout: int, depth: int) -> str:
    lines = ["b0: &b0 [x, x]"]
    for i in range(1, depth):
        lines.append(f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * fanout) + "]")
    return "\n".join(lines)


FRAGMENTS = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", KEYS, SCALARS),
    st.builds(lambda k, v: f"  {k}: {v}", KEYS, SCALARS),
    st.builds(lambda k, v: f"    - {k}: {v}", KEYS, SCALARS),
    st.builds(alias_chain, st.integers(2, 12), st.integers(2, 12)),
    st.builds(lambda n: "x: " + "[" * n + "]" * n, st.integers(1, 3000)),
    st.builds(lambda n: "x: " + "{a: " * n + "1" + "}" * n, st.integers(1, 300)),
    st.builds(lambda c: f"key{c}: value", CONTROL),
)


@st.composite
def mutated_demo(draw: st.DrawFn) -> str:
    """The demo blueprint with a few lines replaced, inserted, deleted or re-indented."""
    lines = list(DEMO_LINES)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines)))
        op = draw(st.sampled_from(["replace-value", "insert", "delete", "indent", "duplicate"]))
        if op == "replace-value" and i < len(lines) and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {draw(SCALARS)}"
        elif op == "insert":
            lines.insert(i, draw(FRAGMENTS))
        elif op == "delete" and i < len(lines):
            del lines[i]
        elif op == "indent" and i < len(lines):
            lines[i] = " " * draw(st.integers(0, 7)) + lines[i].lstrip()
        elif op == "duplicate" and i < len(lines):
            lines.insert(i, lines[i])
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n", "\r\n"]))


RAW_TEXT = st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#%@,?\n\t ab01/.<\\") + ["\x00", "\x1b", "\x85"]),
                   max_size=200)
OVERRIDE_PATHS = st.one_of(
    st.sampled_from(["roles.web.count", "ttl", "service", "image", "cloud.ssh.allow_from", "roles.web.disk.mount",
                     "roles.worker.healthcheck.readiness_delay", "accessories.db.disk", "env.clear", "roles",
                     "cloud", "secrets", "registry.password", "roles.web.proxy", "rollout.lock_ttl", "x.y.z"]),
    st.lists(KEYS.map(lambda k: k.replace("=", "")), min_size=0, max_size=4).map(".".join),
    st.builds(lambda n, part: ".".join([part] * n), st.integers(1, 20000), st.sampled_from(["env", "a", "x" * 50])),
)
OVERRIDES = st.lists(st.one_of(st.builds(lambda p, v: f"{p}={v}", OVERRIDE_PATHS, SCALARS),
                               st.builds(lambda p, v: f"{p}={v}", OVERRIDE_PATHS, RAW_TEXT),
                               st.builds(lambda p, f: f"{p}={f}", OVERRIDE_PATHS, FRAGMENTS.map(lambda x: "{" + x + "}")),
                               RAW_TEXT),
                     min_size=1, max_size=4)


# ---- the property --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def check_load(path: Path, overrides: list[str]) -> None:
    """Loads or fails with clean lines, and this one load does not grow the peak RSS by
    MEMORY_BOUND_KB. Measured around the load itself: what Hypothesis keeps of its examples and
    what other tests left in this xdist worker's heap grew it by 200 MB over a whole test in CI
    (a worker that steals work runs other modules' tests in between), while no hostile value
    costs 10 MB alone."""
    baseline = _peak_rss_kb()
    try:
        load_blueprint(path, overrides)
    except BlueprintError as err:
        lines = str(err).splitlines()
        assert lines, "an error with no message"
        for line in lines:
            assert line.startswith(str(path)), line  # names the file (and the --set, if from one)
            assert line.isprintable(), repr(line)
            assert len(line) < 2000, line[:200]
    grown = _peak_rss_kb() - baseline
    assert grown < MEMORY_BOUND_KB, f"peak RSS grew by {grown // 1024} MB"


@shards
@settings(SETTINGS, max_examples=540 // SHARDS)
@given(text=mutated_demo())
def test_a_mutated_blueprint_loads_or_fails_cleanly(workdir: Path, shard: int, text: str) -> None:
    path = workdir / "mutated.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    check_load(path, [])


@shards
@settings(SETTINGS, max_examples=360 // SHARDS)
@given(text=RAW_TEXT)
def test_arbitrary_text_loads_or_fails_cleanly(workdir: Path, shard: int, text: str) -> None:
    path = workdir / "raw.yml"
    path.write_text(text, encoding="utf-8")
    check_load(path, [])


@shards
@settings(SETTINGS, max_examples=300 // SHARDS)
@given(overrides=OVERRIDES)
def test_arbitrary_overrides_apply_or_fail_cleanly(shard: int, overrides: list[str]) -> None:
    check_load(MINIMAL, overrides)
