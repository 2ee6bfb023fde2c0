"""Affinity groups: which hosts a group's VMs may share.

Checked against CloudStack's CreateAffinityGroupCmd (a BaseAsyncCreateCmd: the group exists
once the command returns, the job only reports it), DeleteAffinityGroupCmd (async),
ListAffinityGroupsCmd, ListAffinityGroupTypesCmd, AffinityGroupServiceImpl,
AffinityGroupResponse, HostAntiAffinityProcessor / HostAffinityProcessor and
ResourceTag.ResourceObjectType:

- the types are the processors' names, ``host anti-affinity`` and ``host affinity``; an
  unknown type is a 431 listing the valid ones; a name already used by the account is a 431;
- deleting a group does not wait for its VMs to go: it drops their mappings with the group;
- an affinity group is no ResourceObjectType, so it cannot carry tags: callers find theirs
  by name;
- a VM joins groups at deploy (``affinitygroupids`` or ``affinitygroupnames``, not both) and
  leaves them when it is destroyed; its response lists its groups under ``affinitygroup``.
"""

from __future__ import annotations

from typing import Any

from ..clock import now_str
from ..engine import Simulator
from ..errors import ApiError, invalid_value
from ..registry import AsyncResult, Param, Request, command, finisher
from ._common import like, owner

TYPES = ("host anti-affinity", "host affinity")
#: VM states that no longer count as members (the mapping goes with the VM).
GONE = ("Destroyed", "Expunging")


def members(sim: Simulator, group_id: str) -> list[str]:
    """The ids of the live VMs in a group."""
    return [v["id"] for v in sim.col("vms").values()
            if group_id in (v.get("_affinity") or []) and v["state"] not in GONE and not v.get("_removed")]


def render_group(sim: Simulator, group: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in group.items() if not k.startswith("_") and v is not None}
    out.update(owner(sim), virtualmachineIds=members(sim, group["id"]))
    return out


def vm_groups(sim: Simulator, vm: dict[str, Any]) -> list[dict[str, Any]]:
    """A VM's ``affinitygroup`` entries (AffinityGroupResponse without the member list)."""
    out = []
    for gid in vm.get("_affinity") or []:
        group = sim.get("affinity_groups", gid)
        if group is not None and not group.get("_removed"):
            out.append({k: group.get(k) for k in ("id", "name", "type", "description") if group.get(k)})
    return out


def groups_for_deploy(sim: Simulator, req: Request) -> list[str]:
    """The group ids deployVirtualMachine's affinitygroupids / affinitygroupnames name (431s)."""
    ids, names = req.get("affinitygroupids"), req.get("affinitygroupnames")
    if ids and names:
        raise invalid_value("affinitygroupids parameter is mutually exclusive with affinitygroupnames parameter")
    out = []
    for gid in ids or []:
        if not sim.exists("affinity_groups", gid):
            raise invalid_value(f"Unable to find affinity group by id {gid}")
        out.append(gid)
    for name in names or []:
        group = _by_name(sim, name)
        if group is None:
            raise invalid_value(f"Unable to find affinity group by name {name}")
        out.append(group["id"])
    return out


def _by_name(sim: Simulator, name: str) -> dict[str, Any] | None:
    return next((g for g in sim.col("affinity_groups").values()
                 if g.get("name") == name and not g.get("_removed")), None)


@command("createAffinityGroup", Param("name", required=True), Param("type", required=True),
         Param("description"), Param("account"), Param("domainid", "uuid"), Param("projectid", "uuid"),
         isasync=True, key="affinitygroup")
def create_affinity_group(sim: Simulator, req: Request) -> AsyncResult:
    """Creates an affinity/anti-affinity group."""
    kind, name = req.get("type"), req.get("name")
    if kind not in TYPES:
        raise invalid_value(f"Unable to create affinity group, invalid affinity group type: {kind}. "
                            f"Valid values are {','.join(TYPES)}")
    if _by_name(sim, name) is not None:
        raise invalid_value(f"Unable to create affinity group, a group with name {name} already exists.")
    group = sim.add("affinity_groups", {"name": name, "type": kind, "description": req.get("description"),
                                        "created": now_str()})
    return AsyncResult("affinity_created", {"id": group["id"]}, "AffinityGroup", group["id"],
                       entity_id=group["id"], database_only=True)


@finisher("affinity_created")
def _finish_create(sim: Simulator, id: str) -> dict[str, Any]:
    group = sim.get("affinity_groups", id)
    if group is None or group.get("_removed"):
        raise ApiError(530, "Failed to create affinity group")
    return {"affinitygroup": render_group(sim, group)}


@command("deleteAffinityGroup", Param("id", "uuid"), Param("name"), Param("account"),
         Param("domainid", "uuid"), Param("projectid", "uuid"), isasync=True)
def delete_affinity_group(sim: Simulator, req: Request) -> AsyncResult:
    """Deletes an affinity group (its VMs stay; they just leave the group)."""
    if "id" in req:
        group = sim.get("affinity_groups", req.get("id"))
        missing = req.get("id")
    elif "name" in req:
        group, missing = _by_name(sim, req.get("name")), req.get("name")
    else:
        raise invalid_value("Either the affinity group Id or group name must be specified to delete the group")
    if group is None or group.get("_removed"):
        raise invalid_value(f"Unable to find affinity group {missing}")
    return AsyncResult("affinity_deleted", {"id": group["id"]}, "AffinityGroup", group["id"], database_only=True)


@finisher("affinity_deleted")
def _finish_delete(sim: Simulator, id: str) -> dict[str, Any]:
    for vm in sim.col("vms").values():
        if id in (vm.get("_affinity") or []):
            vm["_affinity"] = [g for g in vm["_affinity"] if g != id]
    sim.remove("affinity_groups", id)
    return {"success": True}


@command("listAffinityGroups", Param("id", "uuid"), Param("name"), Param("type"),
         Param("virtualmachineid", "uuid", entity="vms"), key="affinitygroup", listing=True)
def list_affinity_groups(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists affinity groups (``name`` and ``type`` exact, ``keyword`` a substring of the name)."""
    out = []
    for group in sim.col("affinity_groups").values():
        if group.get("_removed") or ("id" in req and group["id"] != req.get("id")):
            continue
        if "name" in req and group["name"] != req.get("name"):
            continue
        if "type" in req and group["type"] != req.get("type"):
            continue
        if "keyword" in req and not like(group["name"], req.get("keyword")):
            continue
        rendered = render_group(sim, group)
        if "virtualmachineid" in req and req.get("virtualmachineid") not in rendered["virtualmachineIds"]:
            continue
        out.append(rendered)
    return out


@command("listAffinityGroupTypes", key="affinityGroupType", listing=True)
def list_affinity_group_types(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists the affinity group types a user may create."""
    return [{"type": t} for t in TYPES]
