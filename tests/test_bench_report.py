"""scripts/bench's Markdown report (docs/benchmarks.md): a run replaces the sections it made
and loses nothing else, whichever JSON file (--out) it merged its figures into."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "docs" / "benchmarks.md"


def _bench() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("csdeploy_bench_script", str(REPO / "scripts" / "bench"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(loader.name, module)
    loader.exec_module(module)
    return module


def _machine(commit: str) -> dict[str, object]:
    return {"date": "2026-12-07 08:17 UTC", "host": "vm", "cpus": 2, "memory_gib": 24, "python": "3.11.7",
            "commit": commit, "load_at_start": "0.4 1.9 4.8", "bytecode": True,
            "command": "scripts/bench --only fleet --out /tmp/fleet.json"}


def _sections(text: str) -> dict[str, str]:
    """The report's ``## `` sections by title (read here, not with the script's own reader)."""
    found: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            found[title] = []
        if title is not None:
            found[title].append(line)
    return {t: "\n".join(lines).rstrip() for t, lines in found.items()}


def test_a_run_with_another_out_keeps_the_reports_other_sections_as_they_were() -> None:
    """A fleet-only run with a fresh --out merges no kamal or width figures: the report still
    has their sections, word for word, and the other scripts' sections, in the same order."""
    bench = _bench()
    before = REPORT.read_text()
    doc = json.loads((REPO / "docs" / "benchmarks.json").read_text())
    after = bench.markdown({"fleet": doc["fleet"], "machines": {"fleet": _machine("abc1234")}}, before)
    old, new = _sections(before), _sections(after)
    assert list(new) == list(old)
    assert "commit abc1234" in new["Fleet size (simulator)"]
    assert after.count("commit abc1234") == 1
    others = [t for t in old if t != "Fleet size (simulator)"]
    assert "Versus Kamal 2.11" in others and "Rollout width (lab)" in others
    assert len(others) > 2, "the report has sections of other scripts (bench_provision.py)"
    for title in others:
        assert new[title] == old[title], title


def test_a_run_writing_every_section_leaves_no_old_copy() -> None:
    bench = _bench()
    doc = json.loads((REPO / "docs" / "benchmarks.json").read_text())
    doc["machines"] = {k: _machine("def5678") for k in ("kamal", "fleet", "width")}
    after = bench.markdown(doc, REPORT.read_text())
    for title in bench.TITLES.values():
        assert after.count(f"## {title}\n") == 1, title
    assert after.count("commit def5678") == 3
