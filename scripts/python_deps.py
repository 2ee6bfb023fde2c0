"""Whether `pip install -e .[EXTRAS]` would change anything for this Python, in milliseconds.

    python scripts/python_deps.py current EXTRAS   exit 0: installed as pyproject.toml says; 1: not
    python scripts/python_deps.py record EXTRAS    after an install that succeeded

scripts/lab-prereqs skips the install when `current` says so (about 6 s a run of
`scripts/test --fast`). Current means all of: a stamp written by `record` for this interpreter,
this environment (sys.prefix) and this checkout, keyed on pyproject.toml's bytes and the extras
(a changed dependency, extra or entry point changes the key); csdeploy installed editable from
this checkout (another checkout's install, sharing the interpreter, is not current); and every
requirement of the project and of those extras installed at a version its specifier allows
(one uninstalled since is not). A fresh clone has no stamp: it always installs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "cloudstack-deploy"


def _key(extras: str) -> str:
    parts = [(ROOT / "pyproject.toml").read_bytes(), extras.encode(), os.path.realpath(sys.executable).encode(),
             sys.version.encode(), os.path.realpath(sys.prefix).encode(), str(ROOT).encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def _stamp() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    where = hashlib.sha256(f"{os.path.realpath(sys.prefix)}\0{ROOT}".encode()).hexdigest()[:16]
    return cache / "csdeploy" / "python-deps" / where


def _installed_here() -> metadata.Distribution | None:
    """csdeploy's distribution when it is installed editable from this checkout."""
    try:
        dist = metadata.distribution(PROJECT)
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        return None
    url = direct.get("url", "")
    if not direct.get("dir_info", {}).get("editable") or not url.startswith("file://"):
        return None
    return dist if Path(url.removeprefix("file://")).resolve() == ROOT else None


def _requirements_met(dist: metadata.Distribution, extras: set[str]) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # cannot tell (pytest brings packaging): install
        return False
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            return False
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            return False
    return True


def current(extras: str) -> bool:
    stamp = _stamp()
    if not stamp.is_file() or stamp.read_text().strip() != _key(extras):
        return False
    dist = _installed_here()
    wanted = {e for e in extras.strip("[]").split(",") if e}
    return dist is not None and _requirements_met(dist, wanted)


def record(extras: str) -> None:
    stamp = _stamp()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(_key(extras) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[1] not in ("current", "record"):
        print(__doc__, file=sys.stderr)
        return 2
    extras = argv[2] if len(argv) == 3 else ""
    if argv[1] == "record":
        record(extras)
        return 0
    return 0 if current(extras) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
