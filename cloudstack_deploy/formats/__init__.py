"""Other tools' files in and out: `csdeploy init` (from a docker-compose.yml, a Kamal
config/deploy.yml or a template) and `csdeploy export kamal`.

Each importer makes a `Draft` (the blueprint tree plus notes on what it could not carry);
`writer.py` validates, comments and writes it. No secret value is ever written: only names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..blueprint import Blueprint
from ..blueprint_overlay import overlay_path
from ..errors import InvalidInput
from .source import Note
from .writer import Draft, render, render_overlay, validate, validate_overlay, with_overrides, write


@dataclass
class InitResult:
    path: Path
    blueprint: Blueprint
    notes: list[Note]
    comments: list[str]
    overlays: list[Path] = field(default_factory=list)
    """The destination overlay files written beside ``path``."""


def init_blueprint(out: Path, *, compose: Path | None = None, kamal: Path | None = None,
                   template: str | None = None, sets: Sequence[str] = (), force: bool = False,
                   env_files: Sequence[Path] = (), profiles: Sequence[str] = ()) -> InitResult:
    """Write a blueprint to ``out`` from exactly one source; nothing is written on any problem.
    ``env_files`` and ``profiles`` are Compose's `--env-file` and `--profile`."""
    if sum(x is not None for x in (compose, kamal, template)) != 1:
        raise InvalidInput("say where the blueprint comes from: one of --from-compose FILE, --from-kamal FILE "
                           "or --template NAME")
    if out.exists() and not force:
        raise InvalidInput(f"{out} already exists; nothing was written",
                           hint="pass --force to replace it, or --out another file")
    overrides = list(sets)
    if (env_files or profiles) and compose is None:
        raise InvalidInput("--env-file and --profile go with --from-compose")
    if compose is not None:
        from .compose import import_compose

        draft: Draft = import_compose(compose, out, env_files=env_files, profiles=profiles)
    elif kamal is not None:
        from .kamal_in import import_kamal

        draft = import_kamal(kamal, out)
    else:
        from .templates import template_draft

        assert template is not None
        draft, overrides = template_draft(template, overrides, out)
    draft = with_overrides(draft, overrides)
    text = render(draft)
    bp = validate(text, out, draft)
    overlays = []
    for overlay in draft.overlays:
        path = overlay_path(out, overlay.name)
        if path.exists() and not force:
            raise InvalidInput(f"{path} (destination {overlay.name}) already exists; nothing was written",
                               hint="pass --force to replace it, or --out another file")
        overlay_text = render_overlay(overlay, out)
        validate_overlay(text, overlay_text, out, overlay)
        overlays.append((path, overlay_text))
    write(text, out, force=force)
    for path, overlay_text in overlays:
        write(overlay_text, path, force=True)
    notes = list(draft.notes) + [n for overlay in draft.overlays for n in overlay.notes]
    return InitResult(out, bp, notes, draft.comments, [path for path, _ in overlays])


__all__ = ["Draft", "InitResult", "init_blueprint"]
