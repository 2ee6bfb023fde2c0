"""Read-only catalog commands: zones, offerings, templates, capabilities, APIs, limits."""

from __future__ import annotations

from typing import Any

from ..engine import Simulator, public
from ..errors import ApiError, invalid_value
from ..registry import COMMANDS, TAG_FILTER, Param, Request, command
from ._common import owner, select, with_tags

CLOUDSTACK_VERSION = "4.19.1.0"


@command("listZones", Param("id", "uuid", entity="zones"), Param("name"), Param("available", "boolean"),
         Param("networktype"), Param("showcapacities", "boolean"), TAG_FILTER,
         key="zone", listing=True)
def list_zones(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists zones."""
    items = select(sim, "zones", req, fields={"networktype": "networktype"})
    return [with_tags(sim, z) for z in items]


@command("listServiceOfferings", Param("id", "uuid", entity="service_offerings"), Param("name"), Param("zoneid", "uuid", entity="zones"),
         Param("virtualmachineid", "uuid", entity="vms"), Param("issystem", "boolean"),
         key="serviceoffering", listing=True)
def list_service_offerings(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all available service offerings."""
    items = select(sim, "service_offerings", req, tagged=False)
    if req.get("issystem"):
        return []
    return [public(o) for o in items]


TEMPLATE_FILTERS = ("featured", "self", "selfexecutable", "sharedexecutable", "executable", "community", "all")


@command("listTemplates", Param("templatefilter", required=True,
                                description="featured, self, selfexecutable, sharedexecutable, executable, community or all"),
         Param("id", "uuid", entity="templates"), Param("name"), Param("zoneid", "uuid", entity="zones"),
         Param("hypervisor"),
         Param("showremoved", "boolean"), TAG_FILTER, key="template", listing=True)
def list_templates(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """List all public, private, and privileged templates."""
    flt = req.get("templatefilter").lower()
    if flt not in TEMPLATE_FILTERS:
        raise invalid_value(
            f"Unable to execute API command listtemplates due to invalid value {req.get('templatefilter')} "
            "for parameter templatefilter"
        )
    items = select(sim, "templates", req, fields={"zoneid": "zoneid"}, keyword_fields=("name", "displaytext"))
    if flt in ("self", "selfexecutable", "sharedexecutable", "community"):
        items = [t for t in items if t.get("account") == owner(sim)["account"] and not t.get("isfeatured")]
    elif flt == "featured":
        items = [t for t in items if t.get("isfeatured")]
    return [with_tags(sim, t) for t in items]


@command("listNetworkOfferings", Param("id", "uuid", entity="network_offerings"), Param("name"), Param("guestiptype"), Param("state"),
         Param("zoneid", "uuid", entity="zones"), Param("traffictype"), Param("forvpc", "boolean"),
         Param("isdefault", "boolean"), key="networkoffering", listing=True)
def list_network_offerings(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all available network offerings."""
    items = select(sim, "network_offerings", req, tagged=False,
                   fields={"guestiptype": "guestiptype", "state": "state", "traffictype": "traffictype"})
    if "forvpc" in req:
        items = [o for o in items if o.get("forvpc") == req.get("forvpc")]
    return [public(o) for o in items]


@command("listDiskOfferings", Param("id", "uuid", entity="disk_offerings"), Param("name"), Param("zoneid", "uuid", entity="zones"),
         key="diskoffering", listing=True)
def list_disk_offerings(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all available disk offerings."""
    return [public(o) for o in select(sim, "disk_offerings", req, tagged=False)]


@command("listCapabilities", kind="raw")
def list_capabilities(sim: Simulator, req: Request) -> dict[str, Any]:
    """Lists capabilities."""
    return {"capability": {
        "cloudstackversion": CLOUDSTACK_VERSION, "securitygroupsenabled": False,
        "userpublictemplateenabled": True, "supportELB": "false", "projectinviterequired": False,
        "allowusercreateprojects": True, "customdiskofferingminsize": 1, "customdiskofferingmaxsize": 1024,
        "kvmsnapshotenabled": True, "allowuserviewdestroyedvm": True, "allowuserexpungerecovervm": True,
        "dynamicrolesenabled": True, "apilimitinterval": 1, "apilimitmax": 0, "kubernetesserviceenabled": False,
    }}


def _related_apis() -> dict[str, str]:
    """Entity collection -> the APIs answering with its object, comma-joined.

    ApiDiscoveryServiceImpl fills a parameter's ``related`` with every API whose response
    class is the parameter's entity type; CloudMonkey completes uuid arguments by calling
    the ``list*`` one among them.
    """
    by_key: dict[str, list[str]] = {}
    for c in COMMANDS.values():
        if c.response_key:
            by_key.setdefault(c.response_key, []).append(c.name)
    out: dict[str, str] = {}
    for c in COMMANDS.values():
        for p in c.params:
            if c.kind == "list" and p.name == "id" and not p.required and p.entity and c.response_key:
                out[p.entity] = ",".join(sorted(by_key[c.response_key]))
    out.setdefault("jobs", "listAsyncJobs,queryAsyncJobResult")
    return out


@command("listApis", Param("name", description="API name"), kind="raw")
def list_apis(sim: Simulator, req: Request) -> dict[str, Any]:
    """Lists all available APIs and their parameters (what CloudMonkey's sync reads)."""
    name = req.get("name")
    cmds = [c for c in COMMANDS.values() if name is None or c.lname == name.lower()]
    if name is not None and not cmds:
        raise ApiError(431, f"Unable to find API {name}", 4350)
    related = _related_apis()
    apis = []
    for c in sorted(cmds, key=lambda c: c.name.lower()):
        apis.append({
            "name": c.name, "description": c.description, "isasync": c.isasync, "since": "4.0.0",
            "related": "", "type": c.response_key or "",
            "params": [{"name": p.name, "description": p.description, "type": p.type,
                        "length": p.length, "required": p.required,
                        "related": related.get(p.entity or "", "")} for p in c.params],
            "response": [],
        })
    return {"count": len(apis), "api": apis}


@command("listResourceLimits", Param("id", "long"), Param("resourcetype", "integer"),
         Param("resourcetypename"), key="resourcelimit", listing=True)
def list_resource_limits(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists resource limits."""
    out = []
    for name, (num, maxv) in sim.state["limits"].items():
        if "resourcetype" in req and req.get("resourcetype") != num:
            continue
        if req.get("resourcetypename") and req.get("resourcetypename") != name:
            continue
        out.append({"resourcetype": str(num), "resourcetypename": name, "max": maxv, **owner(sim)})
    return out


@command("updateResourceLimit", Param("resourcetype", "integer", required=True), Param("max", "long"),
         Param("account"), Param("domainid", "uuid"), key="resourcelimit")
def update_resource_limit(sim: Simulator, req: Request) -> dict[str, Any]:
    """Updates resource limits for an account or domain."""
    for name, (num, _) in sim.state["limits"].items():
        if num == req.get("resourcetype"):
            sim.set_limit(name, req.get("max", -1))
            return {"resourcetype": str(num), "resourcetypename": name, "max": req.get("max", -1), **owner(sim)}
    raise invalid_value(f"Please specify valid resource type: {req.get('resourcetype')} is not one")
