"""Resolve the blueprint's CloudStack names (zone, offerings, template) to ids, exactly.

CloudStack's `name` filters are substring matches, so every result is re-checked by exact
name here. A name that does not exist is reported with what the cloud does offer, all
problems at once.
"""

from __future__ import annotations

import asyncio
import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from ..cloud import Cloud
from ..errors import InvalidInput
from .desired import Desired


@dataclass
class Catalog:
    zone_id: str
    zone_name: str
    template_id: str
    template_name: str
    network_offering_id: str
    service_offerings: dict[str, str] = field(default_factory=dict)   # name -> id
    disk_offerings: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> record


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3)
    listing = ", ".join(sorted(choices)) or "none"
    return (f"did you mean {' or '.join(repr(c) for c in close)}? " if close else "") + f"available: {listing}"


def newest_template(templates: list[dict[str, Any]], pattern: str) -> dict[str, Any] | None:
    """The newest ready template whose name equals ``pattern`` or matches it as a glob."""
    matching = [t for t in templates if t.get("isready", True)
                and (t["name"] == pattern or fnmatch.fnmatchcase(t["name"], pattern))]
    return max(matching, key=lambda t: (t.get("created", ""), t["name"]), default=None)


async def resolve_catalog(cloud: Cloud, desired: Desired, offerings: set[str], disk_offerings: set[str]) -> Catalog:
    zones = await cloud.list("listZones")
    zone = next((z for z in zones if z["name"] == desired.zone), None)
    if zone is None:
        raise InvalidInput(f"zone {desired.zone!r} not found: {_suggest(desired.zone, [z['name'] for z in zones])}",
                           hint="set cloud.zone in the blueprint")
    templates, sos, nos, dos = await asyncio.gather(
        cloud.list("listTemplates", templatefilter="executable", zoneid=zone["id"]),
        cloud.list("listServiceOfferings"),
        cloud.list("listNetworkOfferings", zoneid=zone["id"], state="Enabled"),
        cloud.list("listDiskOfferings"),
    )
    problems = []
    tpl = newest_template(templates, desired.template)
    if tpl is None:
        problems.append(f"cloud.template: no ready template matches {desired.template!r} in zone {zone['name']}: "
                        + _suggest(desired.template, [t["name"] for t in templates]))
    so_names = {s["name"]: s["id"] for s in sos}
    for name in sorted(offerings):
        if name not in so_names:
            problems.append(f"service offering {name!r} not found: {_suggest(name, list(so_names))}")
    no = next((n for n in nos if n["name"] == desired.network_offering), None)
    if no is None:
        problems.append(f"cloud.network_offering {desired.network_offering!r} not found: "
                        + _suggest(desired.network_offering, [n["name"] for n in nos]))
    do_names = {d["name"]: d for d in dos}
    for name in sorted(disk_offerings):
        if name not in do_names:
            problems.append(f"disk offering {name!r} not found: {_suggest(name, list(do_names))}")
    if problems:
        raise InvalidInput("the blueprint names things this cloud does not offer:\n  " + "\n  ".join(problems),
                           hint="fix the names in the blueprint (or --set them) and re-run")
    assert tpl is not None and no is not None
    return Catalog(zone_id=zone["id"], zone_name=zone["name"], template_id=tpl["id"], template_name=tpl["name"],
                   network_offering_id=no["id"], service_offerings={n: so_names[n] for n in offerings},
                   disk_offerings={n: do_names[n] for n in disk_offerings})
