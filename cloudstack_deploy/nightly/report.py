"""The nightly's outcome: test cases (one per phase and check), as JUnit XML and as JSON.

The JUnit file is the shape CI systems read (Jenkins, GitLab, GitHub test-report actions):
``<testsuites>`` > one ``<testsuite>`` with ``<properties>`` > one ``<testcase>`` per phase
(``csdeploy.nightly.phase``) and per check (``csdeploy.nightly.check``), each with
``<failure message=... type=...>`` and its text (the error, the answer, the tail of the
failing container's logs) or ``<skipped>``. Text is redacted and stripped of characters
XML 1.0 cannot carry (terminal colours, NULs from a log).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..log import redact

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
PHASE, CHECK = "csdeploy.nightly.phase", "csdeploy.nightly.check"
_NOT_XML = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def clean(text: str) -> str:
    return _NOT_XML.sub("", redact(text))


@dataclass
class Case:
    name: str
    classname: str
    status: str = PASSED
    seconds: float = 0.0
    message: str = ""       # one line
    detail: str = ""        # the whole story (error text, answer, logs tail)
    kind: str = "failure"   # failure | error (an unexpected exception: a csdeploy bug)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "phase" if self.classname == PHASE else "check", "status": self.status,
                "seconds": round(self.seconds, 2), "message": clean(self.message), "detail": clean(self.detail)}


@dataclass
class NightlyResult:
    env: str
    prefix: str
    version: str
    blueprint: str
    started: str
    ttl: str
    cases: list[Case] = field(default_factory=list)
    kept: bool = False
    torn_down: bool = False
    expires: str | None = None
    app_url: str | None = None
    junit: str | None = None
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        return not self.interrupted and all(c.status != FAILED for c in self.cases)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def case(self, name: str) -> Case | None:
        return next((c for c in self.cases if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "prefix": self.prefix, "version": self.version, "blueprint": self.blueprint,
                "started": self.started, "ttl": self.ttl, "passed": self.passed, "exit_code": self.exit_code,
                "kept": self.kept, "torn_down": self.torn_down, "expires": self.expires, "app_url": self.app_url,
                "junit": self.junit, "seconds": round(self.seconds, 2), "interrupted": self.interrupted,
                "cases": [c.to_dict() for c in self.cases]}


def junit_xml(result: NightlyResult) -> bytes:
    failures = sum(c.status == FAILED and c.kind == "failure" for c in result.cases)
    errors = sum(c.status == FAILED and c.kind == "error" for c in result.cases)
    skipped = sum(c.status == SKIPPED for c in result.cases)
    counts = {"tests": str(len(result.cases)), "failures": str(failures), "errors": str(errors),
              "skipped": str(skipped), "time": f"{result.seconds:.3f}"}
    root = ET.Element("testsuites", {"name": "csdeploy nightly", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": f"csdeploy nightly {result.env}", **counts,
                                              "timestamp": result.started.rstrip("Z"),
                                              "hostname": socket.gethostname()})
    props = ET.SubElement(suite, "properties")
    for key in ("env", "prefix", "version", "blueprint", "ttl", "app_url", "expires"):
        value = getattr(result, key)
        if value:
            ET.SubElement(props, "property", {"name": key, "value": clean(str(value))})
    ET.SubElement(props, "property", {"name": "kept", "value": str(result.kept).lower()})
    for c in result.cases:
        case = ET.SubElement(suite, "testcase", {"name": clean(c.name), "classname": c.classname,
                                                 "time": f"{c.seconds:.3f}"})
        if c.status == FAILED:
            tag = "error" if c.kind == "error" else "failure"
            element = ET.SubElement(case, tag, {"message": clean(c.message)[:1000], "type": tag})
            text = c.detail if c.detail.startswith(c.message) else "\n".join(p for p in (c.message, c.detail) if p)
            element.text = clean(text)
        elif c.status == SKIPPED:
            ET.SubElement(case, "skipped", {"message": clean(c.message)})
        elif c.detail:
            ET.SubElement(case, "system-out").text = clean(c.detail)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(result: NightlyResult, path: Path) -> None:
    """Write atomically: a CI step reading the file never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(junit_xml(result))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
