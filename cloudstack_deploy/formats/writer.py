"""Writing a blueprint that `csdeploy init` made: validated first, commented, never over an
existing file unless asked, never with a secret value in it.

The default `cloud` section names the lab's catalog (the embedded default cloud), so a
fresh blueprint deploys on `csdeploy lab up` as it is; a comment says what to change for a
real cloud, and `--set cloud.zone=...` does it on the command line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..blueprint import Blueprint, BlueprintError, Problem, apply_overrides, loads_blueprint
from ..blueprint_rules import TreePath, dotted, printable
from ..errors import InvalidInput
from .source import Note

LAB_REGISTRY = "registry.lab:5000"
LAB_PROXY_IMAGE = f"{LAB_REGISTRY}/basecamp/kamal-proxy:v0.9.2"
REGISTRY_SECRET = "REGISTRY_PASSWORD"


def default_cloud() -> dict[str, Any]:
    return {"zone": "lab-zone-1", "template": "Debian 12 bookworm docker*", "service_offering": "small",
            "ssh": {"allow_from": ["127.0.0.0/8"]}}


_SECRET_WORDS = re.compile(r"(PASSWORD|PASSWD|PASS$|SECRET|TOKEN|_KEY$|^KEY$|KEY_BASE|PRIVATE|CREDENTIAL|"
                           r"API_KEY|ACCESS_KEY|AUTH|SALT|MASTER_KEY|DSN$|CERT)", re.I)
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.I)
SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


# Settings named after a secret that hold none: how to authenticate, a path to a secret file.
_NOT_SECRET = re.compile(r"(_AUTH_METHOD|_AUTH_TYPE|_AUTH_MODE|_AUTH_ENABLED|_FILE|_PATH)$", re.I)


def looks_secret(name: str, value: str | None = None) -> bool:
    """A variable that holds a secret: by its name, or a URL that carries a password
    (`POSTGRES_HOST_AUTH_METHOD=trust` and `*_FILE` paths are settings, not secrets)."""
    if value and _URL_WITH_PASSWORD.match(value):
        return True
    return bool(_SECRET_WORDS.search(name)) and not _NOT_SECRET.search(name)


_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}


def digest_problem(image: str) -> str | None:
    """Why the `@digest` of an image reference does not parse (None: no digest, or a good one).
    A digest is `ALGORITHM:HEX` (sha256 with 64 lowercase hex digits, sha384 96, sha512 128)."""
    if "@" not in image:
        return None
    digest = image.rsplit("@", 1)[1]
    algorithm, sep, hexpart = digest.partition(":")
    size = _DIGEST_HEX.get(algorithm)
    if not sep or size is None:
        return f"image digest {digest!r} does not parse: expected sha256:<64 hex digits>"
    if len(hexpart) != size or not re.fullmatch(r"[0-9a-f]+", hexpart):
        return f"image digest {digest!r} does not parse: {algorithm} takes {size} lowercase hex digits"
    return None


def image_repo(image: str) -> tuple[str, str | None]:
    """``repo[:tag][@digest]`` -> (repo, tag or None)."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        return image[: len(image) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
    return image, None


def registry_of(image: str) -> str | None:
    """The registry host of an image name (``ghcr.io/a/b`` -> ``ghcr.io``), None for Docker Hub."""
    first, sep, _ = image.partition("/")
    return first if sep and ("." in first or ":" in first or first == "localhost") else None


def registry_section(image: str, username: str | None = None) -> dict[str, Any]:
    server = registry_of(image) or "docker.io"
    user = username or ("csdeploy" if server == LAB_REGISTRY else
                        (image.split("/")[1] if server != "docker.io" and image.count("/") >= 2
                         else image.split("/")[0] if "/" in image else "CHANGE-ME"))
    return {"server": server, "username": user, "password": REGISTRY_SECRET}


@dataclass
class Overlay:
    """A destination of the imported file, as a blueprint overlay (`blueprint_overlay.py`):
    written beside the blueprint as BLUEPRINT.NAME.yml, merged onto it by `-d NAME`."""

    name: str
    tree: dict[str, Any]
    notes: list[Note]
    source: str
    """The destination file it came from: problems with the merged result are reported there."""
    origins: dict[TreePath, int | None] = field(default_factory=dict)


@dataclass
class Draft:
    """A blueprint being written: the tree, what could not be mapped, and where it came from."""

    tree: dict[str, Any]
    origin: str
    notes: list[Note] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    """Extra header lines (destinations, first deploy hints)."""
    source: str | None = None
    """The file imported (None for a template): problems with the result are reported there."""
    origins: dict[TreePath, int | None] = field(default_factory=dict)
    """Where parts of the tree came from: blueprint path -> line of ``source``."""
    overlays: list[Overlay] = field(default_factory=list)
    """Destinations, each written as an overlay file beside the blueprint."""

    def line_of(self, field_text: str) -> int | None:
        """The source line of the longest recorded part of a blueprint field (`roles.web.cmd`)."""
        best: tuple[int, int | None] = (-1, None)
        for path, line in self.origins.items():
            key = dotted(path)
            if (not key or field_text == key or field_text.startswith((key + ".", key + "["))) and len(key) > best[0]:
                best = (len(key), line)
        return best[1]


ORDER = ("service", "image", "build", "cloud", "roles", "accessories", "registry", "env", "secrets",
         "secrets_file", "ttl", "retain_versions", "rollout")
SECTION_COMMENTS = {
    "cloud": "Where the VMs come from: these are the lab's names (csdeploy lab up). For your\n"
             "CloudStack, use its zone, template and offerings (csdeploy validate checks the file,\n"
             "csdeploy plan checks the names against the cloud).",
    "roles": "Roles: groups of identical VMs running the app image (a proxy role is served by\n"
             "kamal-proxy; the others are workers).",
    "accessories": "Accessories: databases and caches that deploys leave running, data on a disk.",
    "registry": "The registry hosts pull from; the password is the NAME of a secret, never its value.",
    "secrets": "Secret names only: values come from the environment or secrets_file, never this file.",
    "rollout": "The lab's VMs cannot reach Docker Hub: kamal-proxy comes from the lab registry.",
}


def comment(text: str) -> str:
    """``text`` as one YAML comment line. Anything that could end a comment (a newline, but also
    CR, NEL, U+2028/2029) or move a terminal's cursor is written as an escape (`\\n`), so text
    from an imported file can never become a key of the blueprint."""
    return "# " + printable(text) if text else "#"


def render(draft: Draft) -> str:
    """The blueprint as commented YAML (keys in the usual order). Values go through the YAML
    emitter only; everything in a comment goes through `comment`."""
    head = [comment(f"Written by `{draft.origin}`."),
            comment("Check it: csdeploy validate FILE; change values with --set or an editor.")]
    head += [comment(line) for line in draft.comments]
    if draft.notes:
        head.append("#")
        head.append(comment(f"Not carried over ({len(draft.notes)}):"))
        head += [comment(f"  {note}") for note in draft.notes]
    parts = ["\n".join(head)]
    keys = [k for k in ORDER if k in draft.tree] + [k for k in draft.tree if k not in ORDER]
    for key in keys:
        text = yaml.safe_dump({key: draft.tree[key]}, sort_keys=False, default_flow_style=False,
                              allow_unicode=True, width=100)
        section = SECTION_COMMENTS.get(key)
        if section:
            text = "".join(f"# {line}\n" for line in section.splitlines()) + text
        parts.append(text.rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def render_overlay(overlay: Overlay, blueprint: Path) -> str:
    """An overlay file: what destination ``overlay.name`` changes, as YAML, under comments that
    say where it came from and what it could not carry (through `comment`, like `render`)."""
    head = [comment(f"Destination {overlay.name} of {overlay.source}, as an overlay of {blueprint.name}:"),
            comment(f"csdeploy merges it onto {blueprint.name} with -d {overlay.name} (mappings key by key, "
                    f"anything else replaced).")]
    if overlay.notes:
        head.append("#")
        head.append(comment(f"Not carried over ({len(overlay.notes)}):"))
        head += [comment(f"  {note}") for note in overlay.notes]
    if not overlay.tree:
        return "\n".join(head) + "\n"
    return "\n".join(head) + "\n\n" + yaml.safe_dump(overlay.tree, sort_keys=False, default_flow_style=False,
                                                    allow_unicode=True, width=100)


def validate_overlay(text: str, overlay_text: str, out: Path, overlay: Overlay) -> Blueprint:
    """The blueprint destination ``overlay`` makes, merged as `-d` will merge it (nothing is on
    disk yet); a problem is reported at the line of the destination file the field came from."""
    from ..blueprint_overlay import merge
    from ..blueprint_yaml import compose

    tree, locs, _ = compose(text, str(out))
    over, over_locs, _ = compose(overlay_text, overlay.source)
    if isinstance(tree, dict) and isinstance(over, dict):
        merge(tree, locs, over, over_locs, ())
    merged = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    return validate(merged, out, Draft(tree, "", source=overlay.source, origins=overlay.origins))


def with_overrides(draft: Draft, overrides: Sequence[str]) -> Draft:
    if overrides:
        draft.tree = apply_overrides(draft.tree, list(overrides))
    return draft


def validate(text: str, out: Path, draft: Draft | None = None) -> Blueprint:
    """The blueprint the text makes. ``out`` is not written yet, so a problem with an imported
    draft is reported at the line of the source file the field came from."""
    try:
        return loads_blueprint(text, filename=str(out), source=out)
    except BlueprintError as exc:
        problems = exc.problems
        if draft is not None and draft.source is not None:
            problems = [Problem(draft.source, draft.line_of(p.field), p.field, f"{p.message} (in the blueprint "
                                "it makes)") if p.file == str(out) else p for p in problems]
        raise BlueprintError(problems, hint="nothing was written; fix the source file or pass --set "
                                            "for the fields named above") from None


def write(text: str, out: Path, *, force: bool) -> None:
    """Write ``text`` to ``out`` unless it exists (``force`` replaces it), atomically."""
    if out.exists() and not force:
        raise InvalidInput(f"{out} already exists; nothing was written",
                           hint="pass --force to replace it, or --out another file")
    if out.is_dir():
        raise BlueprintError([Problem(str(out), None, "", "is a directory; --out names the blueprint file")])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)


def relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (both made absolute), as blueprints write paths."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(start))
