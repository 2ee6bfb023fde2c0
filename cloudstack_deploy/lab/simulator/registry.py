"""The command table: every API command the simulator serves, with its parameters.

A command declares its parameters once (name, type, required, what an id refers to); the
same declaration validates requests (431 texts exactly where CloudStack gives them) and
answers ``listApis`` (what CloudMonkey's ``sync`` reads), so the two cannot drift apart.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ApiError, missing_param, param_error, unknown_id

ParamType = Literal["string", "uuid", "boolean", "integer", "long", "short", "map", "list", "date"]
Kind = Literal["list", "object", "success", "async", "raw"]


@dataclass(frozen=True)
class Param:
    name: str
    type: ParamType = "string"
    required: bool = False
    description: str = ""
    #: For uuid parameters: the state collection the id must exist in (431 otherwise).
    entity: str | None = None
    #: For list parameters: the element type.
    item_type: ParamType = "string"
    #: For string parameters: the longest value accepted (CloudStack's @Parameter length).
    length: int = 255


@dataclass(frozen=True)
class Command:
    name: str
    handler: Callable[..., Any]
    params: tuple[Param, ...]
    kind: Kind
    #: Object key of the response (``virtualmachine``) or of list items.
    response_key: str | None
    description: str = ""
    isasync: bool = False
    #: The envelope key when it is not ``<name lower-cased>response`` (the Cmd's s_name).
    response_name: str | None = None

    @property
    def lname(self) -> str:
        return self.name.lower()

    @property
    def envelope(self) -> str:
        """The one top-level key of every answer: the Cmd class's getCommandName()."""
        return self.response_name or f"{self.lname}response"


COMMANDS: dict[str, Command] = {}

LIST_PARAMS = (
    Param("keyword", description="List by keyword (substring, case-insensitive)"),
    Param("page", "integer", description="Page number, 1-based (requires pagesize)"),
    Param("pagesize", "integer", description="Page size, at most 500 (requires page)"),
    Param("listall", "boolean", description="List all resources the caller may see"),
    Param("account", description="Account name"),
    Param("domainid", "uuid", description="Domain id"),
    Param("projectid", "uuid", description="Project id"),
    Param("isrecursive", "boolean", description="Also list resources of subdomains"),
)
TAG_FILTER = Param("tags", "map", description="Filter by resource tags (tags[0].key/value)")


def command(
    name: str,
    *params: Param,
    kind: Kind = "object",
    key: str | None = None,
    isasync: bool = False,
    description: str = "",
    listing: bool = False,
    response_name: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``name``; ``listing`` adds the standard list parameters (page, keyword...)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        allp = params + (LIST_PARAMS if listing else ())
        COMMANDS[name.lower()] = Command(
            name=name,
            handler=fn,
            params=allp,
            kind="async" if isasync else ("list" if listing else kind),
            response_key=key,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            isasync=isasync,
            response_name=response_name,
        )
        return fn

    return deco


_MAP_KEY = re.compile(r"^([a-z0-9_]+)\[(\d+)\]\.([a-z0-9_]+)$")


def bool_value(value: str) -> bool:
    """CloudStack's Boolean.parseBoolean: only a case-insensitive "true" is true."""
    return value.strip().lower() == "true"


@dataclass
class Request:
    """A parsed request: lower-cased names, typed values, and the raw map entries."""

    command: Command
    values: dict[str, Any] = field(default_factory=dict)
    #: HTTP method of the request (userdata limits differ for GET and POST).
    method: str = "GET"

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.values


def parse(cmd: Command, raw: dict[str, str], lookup: Callable[[str, str], bool],
          method: str = "GET") -> Request:
    """Validate ``raw`` (lower-cased names) against ``cmd``; ``lookup(entity, id)`` checks ids.

    Raises ApiError 430 (malformed map), 431 (missing/invalid parameter, unknown id).
    """
    maps: dict[str, dict[int, dict[str, str]]] = {}
    plain: dict[str, str] = {}
    for key, value in raw.items():
        if "[" in key:
            m = _MAP_KEY.fullmatch(key)
            if not m:
                raise ApiError(430, f"Unable to decode parameter {key}; if specifying an object array, please use "
                                    "parameter[index].field=XXX, e.g. userGroupList[0].group=httpGroup")
            maps.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
        else:
            plain[key] = value

    req = Request(cmd, method=method)
    for p in cmd.params:
        if p.type == "map":
            if p.name in maps:
                req.values[p.name] = [maps[p.name][i] for i in sorted(maps[p.name])]
            elif p.required:
                raise missing_param(cmd.name, p.name)
            continue
        value = plain.get(p.name)
        if value is None or value == "":
            if p.required:
                raise missing_param(cmd.name, p.name)
            continue
        req.values[p.name] = _convert(cmd, p, value, lookup)
    return req  # parameters a command does not declare are ignored, as CloudStack does


#: Java's Integer/Long/Short.valueOf: an optional sign and ASCII digits, in range.
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
INT_BOUNDS = {"integer": 2**31, "long": 2**63, "short": 2**15}


def _type_error(cmd: Command, p: Param, value: str) -> ApiError:
    """ParamProcessWorker: a value its type cannot parse (an IllegalArgumentException)."""
    return param_error(f"Unable to execute API command {cmd.lname} due to invalid value {value} "
                       f"for parameter {p.name}")


def _integer(cmd: Command, p: Param, value: str, kind: str) -> int:
    bound = INT_BOUNDS.get(kind, INT_BOUNDS["long"])
    if not _INT_RE.match(value) or not -bound <= int(value) < bound:
        raise _type_error(cmd, p, value)
    return int(value)


def _convert(cmd: Command, p: Param, value: str, lookup: Callable[[str, str], bool]) -> Any:
    if p.type == "boolean":
        return bool_value(value)
    if p.type in INT_BOUNDS:
        return _integer(cmd, p, value, p.type)
    if p.type == "uuid":
        _check_uuid(cmd, p, value, lookup)
        return value
    if p.type == "list":
        items = [v.strip() for v in value.split(",") if v.strip()]
        if p.item_type == "uuid":
            for item in items:
                _check_uuid(cmd, p, item, lookup)
        elif p.item_type in INT_BOUNDS:
            return [_integer(cmd, p, item, p.item_type) for item in items]
        return items
    if p.type == "string" and len(value) > p.length:
        # an InvalidParameterValueException inside ParamProcessWorker: re-thrown bare (9999)
        raise param_error(f"Unable to execute API command {cmd.lname} due to invalid value. Value greater "
                          f"than max allowed length {p.length} for param: {p.name}")
    return value


def _check_uuid(cmd: Command, p: Param, value: str, lookup: Callable[[str, str], bool]) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise unknown_id(cmd.name, p.name, value) from None
    if p.entity and not lookup(p.entity, value):
        raise unknown_id(cmd.name, p.name, value)


@dataclass
class AsyncResult:
    """What an async command's handler returns: the job to queue.

    ``finisher`` names a registered function run when the job completes; its ``args`` are
    JSON-serialisable so pending jobs survive a restart of the simulator.
    """

    finisher: str
    args: dict[str, Any]
    instance_type: str | None = None
    instance_id: str | None = None
    #: For create commands: the id returned beside the jobid (entity listable at once).
    entity_id: str | None = None
    #: Extra seconds the job takes beyond --job-seconds (e.g. VM boot time).
    duration: float | None = None
    #: A backend effect (see backend.py) run when the job is due; the job completes only
    #: after it succeeded, and fails with 530 and its message if it raises.
    effect: str | None = None
    effect_args: dict[str, Any] | None = None
    #: What the entity shows half-way through the job: ``{"col", "id", "when": {field: value},
    #: "set": {field: value}}`` (a VM being destroyed is Stopped before it is Destroyed).
    midway: dict[str, Any] | None = None
    #: A job CloudStack does in its database alone (tags, affinity groups: a transaction, no
    #: agent): it is done in a tenth of --job-seconds.
    database_only: bool = False


#: name -> (finish, on_failure). ``finish(sim, **args)`` returns the job result;
#: ``on_failure(sim, **args)`` undoes or marks what the command started when the job fails.
FINISHERS: dict[str, tuple[Callable[..., Any], Callable[..., Any] | None]] = {}


def finisher(
    name: str, on_failure: Callable[..., Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        FINISHERS[name] = (fn, on_failure)
        return fn

    return deco
