"""Shared pieces of the command handlers: owner fields, filtering, rendering."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import catalog
from ..engine import Simulator, public
from ..errors import ApiError, invalid_value
from ..registry import Request


def owner(sim: Simulator) -> dict[str, Any]:
    return {"account": catalog.ACCOUNT, "domain": catalog.DOMAIN, "domainid": sim.state["domain_id"]}


def zone_fields(sim: Simulator) -> dict[str, Any]:
    return {"zoneid": sim.zone["id"], "zonename": sim.zone["name"]}


def like(value: str | None, pattern: str | None) -> bool:
    """CloudStack's SQL LIKE '%pattern%' on names: substring, case-insensitive."""
    if pattern is None:
        return True
    return value is not None and pattern.lower() in value.lower()


def tag_filter(req: Request) -> dict[str, str] | None:
    """The ``tags`` filter of a list command as BaseListTaggedResourcesCmd.getTags reads it.

    One key -> value per entry (a key given twice: the later wins); an entry without a value
    is a 431. The list commands then match a resource having *any* of the pairs
    (QueryManagerImpl & co. join the tags with OR).
    """
    entries = req.get("tags")
    if not entries:
        return None
    wanted: dict[str, str] = {}
    for entry in entries:
        if entry.get("value") is None:
            raise invalid_value(f"No value is passed in for key {entry.get('key')}")
        wanted[entry.get("key", "")] = entry["value"]
    return wanted


def select(
    sim: Simulator,
    collection: str,
    req: Request,
    *,
    fields: dict[str, str] | None = None,
    name_field: str = "name",
    keyword_fields: Iterable[str] = ("name",),
    tagged: bool = True,
) -> list[dict[str, Any]]:
    """Records of ``collection`` matching the usual list filters.

    ``fields`` maps request parameter -> record field for exact matches (ids, states...).
    ``name`` and ``keyword`` are substring matches, as in CloudStack.
    """
    wanted = tag_filter(req) if tagged else None
    out = []
    for item in sim.col(collection).values():
        if item.get("_removed"):
            continue
        if "id" in req and item["id"] != req.get("id"):
            continue
        if not like(item.get(name_field), req.get("name")):
            continue
        kw = req.get("keyword")
        if kw is not None and not any(like(item.get(f), kw) for f in keyword_fields):
            continue
        if fields and any(p in req and str(item.get(f)).lower() != str(req.get(p)).lower()
                          for p, f in fields.items()):
            continue
        if wanted and not sim.matches_tags(item["id"], wanted):
            continue
        out.append(item)
    return out


def with_tags(sim: Simulator, item: dict[str, Any]) -> dict[str, Any]:
    out = public(item)
    out["tags"] = sim.tags_of(item["id"])
    return out


def get_or_431(sim: Simulator, collection: str, id_: str, what: str) -> dict[str, Any]:
    item = sim.get(collection, id_)
    if item is None or item.get("_removed"):
        raise ApiError(431, f"Unable to find {what} with specified id {id_}", 4350)
    return item
