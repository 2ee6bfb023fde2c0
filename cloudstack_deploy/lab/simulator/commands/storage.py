"""Volumes (data disks); their snapshots and snapshot policies are in snapshots.py."""

from __future__ import annotations

from typing import Any

from ..clock import now_str
from ..engine import Simulator
from ..errors import ApiError, invalid_value
from ..registry import TAG_FILTER, AsyncResult, Param, Request, command, finisher
from ._common import get_or_431, owner, select, with_tags, zone_fields

GB = 1024**3
MAX_DATA_DISKS = 6  # the hypervisor's device slots for data disks (deviceid 1..)


def render_volume(sim: Simulator, vol: dict[str, Any]) -> dict[str, Any]:
    out = with_tags(sim, vol) | owner(sim) | zone_fields(sim)
    if vol.get("virtualmachineid"):
        vm = sim.get("vms", vol["virtualmachineid"]) or {}
        out.update(vmname=vm.get("name"), vmdisplayname=vm.get("displayname"), vmstate=vm.get("state"))
    if vol.get("diskofferingid"):
        off = sim.get("disk_offerings", vol["diskofferingid"]) or {}
        out.update(diskofferingname=off.get("name"), diskofferingdisplaytext=off.get("displaytext"))
    return out


@command("createVolume", Param("name"), Param("diskofferingid", "uuid", entity="disk_offerings"),
         Param("size", "long", description="Size in GB, for custom disk offerings"),
         Param("zoneid", "uuid", entity="zones"), Param("snapshotid", "uuid", entity="snapshots"),
         Param("virtualmachineid", "uuid", entity="vms"), Param("account"), Param("domainid", "uuid"),
         Param("projectid", "uuid"), Param("displayvolume", "boolean"), Param("miniops", "long"),
         Param("maxiops", "long"), isasync=True, key="volume")
def create_volume(sim: Simulator, req: Request) -> AsyncResult:
    """Creates a disk volume from a disk offering (or a snapshot)."""
    if "diskofferingid" not in req and "snapshotid" not in req:
        raise invalid_value("Either disk Offering Id or snapshot Id must be passed whilst creating volume")
    if "snapshotid" not in req and "zoneid" not in req:
        raise invalid_value("Please specify the zone id when creating a volume from a disk offering")
    size_gb: int
    offering = None
    if "snapshotid" in req:
        # VolumeApiServiceImpl.allocVolume: a BackedUp snapshot gives the size, the disk offering
        # (unless one is given: it must hold the snapshot) and the zone
        snap = get_or_431(sim, "snapshots", req.get("snapshotid"), "snapshot")
        if snap["state"] != "BackedUp":
            raise invalid_value(f"Snapshot id={snap['id']} is not in BackedUp state yet and can't be used for "
                                "volume creation")
        size_gb = snap["_size"] // GB
        if "diskofferingid" in req:
            offering = sim.get("disk_offerings", req.get("diskofferingid"))
            assert offering is not None
            wanted = req.get("size") if offering["iscustomized"] else offering["disksize"]
            if wanted is not None and wanted < size_gb:
                raise invalid_value(f"Invalid size for volume creation: {wanted} GB, the snapshot's size is "
                                    f"{size_gb} GB")
            size_gb = max(size_gb, wanted or 0)
        else:
            offering = sim.get("disk_offerings", snap.get("_diskofferingid") or "")
    else:
        offering = sim.get("disk_offerings", req.get("diskofferingid"))
        assert offering is not None
        if offering["iscustomized"]:
            if "size" not in req:
                raise invalid_value("This disk offering requires a custom size specified")
            size_gb = req.get("size")
            if not 1 <= size_gb <= 1024:
                raise invalid_value(f"Invalid size for custom volume creation: {size_gb}, the custom disk "
                                    "offering size must be between 1 and 1024 GB")
        else:
            if "size" in req and req.get("size") != offering["disksize"]:
                raise invalid_value("This disk offering does not allow custom size")
            size_gb = offering["disksize"]
    sim.check_limit("volume", len(sim.col("volumes")))
    used_gb = sum(v["size"] for v in sim.col("volumes").values()) // GB
    sim.check_limit("primary_storage", used_gb, size_gb)
    num = sim.counter("volume")
    vol = sim.add("volumes", {
        "name": req.get("name") or f"DATA-{num}", "type": "DATADISK", "state": "Allocated",
        "size": size_gb * GB, "created": now_str(), "destroyed": False, "isextractable": True,
        "storagetype": "local", "hypervisor": "None", "provisioningtype": "thin", "storage": "none",
        "diskofferingid": offering["id"] if offering else None, "snapshotid": req.get("snapshotid"),
        "displayvolume": True, "_creating": True,
    })
    args = {"id": vol["id"], "vm": req.get("virtualmachineid")}
    return AsyncResult("volume_created", args, "Volume", vol["id"], entity_id=vol["id"],
                       effect="create_volume", effect_args=args)


def _fail_volume(sim: Simulator, id: str, vm: str | None) -> None:
    sim.remove("volumes", id)


@finisher("volume_created", on_failure=_fail_volume)
def _finish_create_volume(sim: Simulator, id: str, vm: str | None) -> dict[str, Any]:
    vol = sim.get("volumes", id)
    if vol is None:
        raise ApiError(530, f"Unable to find volume with id {id}")
    vol.pop("_creating", None)
    if vm:
        _attach(sim, vol, sim.get("vms", vm), None)
    return {"volume": render_volume(sim, vol)}


def _attach(sim: Simulator, vol: dict[str, Any], vm: dict[str, Any] | None, deviceid: int | None) -> None:
    if vm is None:
        raise ApiError(530, "Unable to attach volume: the virtual machine no longer exists")
    taken = {v.get("deviceid") for v in sim.col("volumes").values() if v.get("virtualmachineid") == vm["id"]}
    dev = deviceid if deviceid is not None else next(d for d in range(1, 64) if d not in taken and d != 3)
    vol.update(virtualmachineid=vm["id"], deviceid=dev, state="Ready", attached=now_str(),
               storage="lab-primary", hypervisor="Simulator")


@command("attachVolume", Param("id", "uuid", required=True, entity="volumes"),
         Param("virtualmachineid", "uuid", required=True, entity="vms"), Param("deviceid", "long"),
         isasync=True, key="volume")
def attach_volume(sim: Simulator, req: Request) -> AsyncResult:
    """Attaches a disk volume to a virtual machine."""
    vol = get_or_431(sim, "volumes", req.get("id"), "volume")
    vm = get_or_431(sim, "vms", req.get("virtualmachineid"), "virtual machine")
    if vol["type"] == "ROOT":
        raise invalid_value("Please specify a volume with the valid type: DATADISK")
    if vol.get("virtualmachineid"):
        raise invalid_value(f"Please specify a volume that is not attached to any VM: volume {vol['name']} is "
                            f"attached to VM {vol['virtualmachineid']}")
    if vol.get("_creating"):
        raise invalid_value(f"Volume {vol['name']} is still being created")
    if vm["state"] not in ("Running", "Stopped"):
        raise invalid_value(f"Please specify a VM that is either running or stopped (VM {vm['name']} is "
                            f"{vm['state']})")
    attached = [v for v in sim.col("volumes").values()
                if v.get("virtualmachineid") == vm["id"] and v["type"] == "DATADISK"]
    if len(attached) >= MAX_DATA_DISKS:
        raise invalid_value(f"The specified VM already has the maximum number of data disks ({MAX_DATA_DISKS})"
                            ". Please specify another VM.")
    return AsyncResult("volume_attach", {"id": vol["id"], "vm": vm["id"], "deviceid": req.get("deviceid")},
                       "Volume", vol["id"], effect="attach_volume", effect_args={"id": vol["id"], "vm": vm["id"]})


@finisher("volume_attach")
def _finish_attach(sim: Simulator, id: str, vm: str, deviceid: int | None) -> dict[str, Any]:
    vol = sim.get("volumes", id)
    if vol is None:
        raise ApiError(530, f"Unable to find volume with id {id}")
    _attach(sim, vol, sim.get("vms", vm), deviceid)
    return {"volume": render_volume(sim, vol)}


@command("detachVolume", Param("id", "uuid", entity="volumes"), Param("virtualmachineid", "uuid", entity="vms"),
         Param("deviceid", "long"), isasync=True, key="volume")
def detach_volume(sim: Simulator, req: Request) -> AsyncResult:
    """Detaches a disk volume from a virtual machine."""
    if "id" not in req:
        raise invalid_value("Please provide either a volume id, or a tuple(device id, instance id)")
    vol = get_or_431(sim, "volumes", req.get("id"), "volume")
    if vol["type"] == "ROOT":
        raise invalid_value("Please specify a data volume: root volumes can't be detached")
    if not vol.get("virtualmachineid"):
        raise invalid_value(f"Volume {vol['name']} is not attached to any VM")
    return AsyncResult("volume_detach", {"id": vol["id"]}, "Volume", vol["id"], effect="detach_volume",
                       effect_args={"id": vol["id"]})


@finisher("volume_detach")
def _finish_detach(sim: Simulator, id: str) -> dict[str, Any]:
    vol = sim.get("volumes", id)
    if vol is None:
        raise ApiError(530, f"Unable to find volume with id {id}")
    for k in ("virtualmachineid", "deviceid", "attached"):
        vol.pop(k, None)
    vol["state"] = "Ready"
    return {"volume": render_volume(sim, vol)}


@command("deleteVolume", Param("id", "uuid", required=True, entity="volumes"), kind="success")
def delete_volume(sim: Simulator, req: Request) -> None:
    """Deletes a detached disk volume."""
    vol = get_or_431(sim, "volumes", req.get("id"), "volume")
    if vol.get("virtualmachineid"):  # VolumeApiServiceImpl: InvalidParameterValueException, 431/4350
        raise invalid_value("Please specify a volume that is not attached to any VM.")
    if vol["type"] == "ROOT":
        raise invalid_value("Please specify a DATADISK volume: ROOT volumes go with their VM")
    for pol in [p for p in sim.col("snapshot_policies").values() if p["volumeid"] == vol["id"]]:
        sim.remove("snapshot_policies", pol["id"])
    sim.remove("volumes", vol["id"])
    sim.background_effect("delete_volume", {"id": vol["id"]})


@command("resizeVolume", Param("id", "uuid", required=True, entity="volumes"), Param("size", "long"),
         Param("diskofferingid", "uuid", entity="disk_offerings"), Param("shrinkok", "boolean"),
         isasync=True, key="volume")
def resize_volume(sim: Simulator, req: Request) -> AsyncResult:
    """Resizes a volume (GB); shrinking needs shrinkok=true."""
    vol = get_or_431(sim, "volumes", req.get("id"), "volume")
    if "size" not in req:
        raise invalid_value("Please specify the new size of the volume (size in GB)")
    new = req.get("size") * GB
    if new < vol["size"] and not req.get("shrinkok"):
        raise invalid_value(f"Going from existing size of {vol['size']} to size of {new} would shrink the "
                            "volume. Need to sign off by supplying the shrinkok parameter with value of true.")
    if not 1 <= req.get("size") <= 1024:
        raise invalid_value(f"Invalid size {req.get('size')}: must be between 1 and 1024 GB")
    return AsyncResult("volume_resize", {"id": vol["id"], "size": new}, "Volume", vol["id"],
                       effect="resize_volume", effect_args={"id": vol["id"], "size": new})


@finisher("volume_resize")
def _finish_resize(sim: Simulator, id: str, size: int) -> dict[str, Any]:
    vol = sim.get("volumes", id)
    if vol is None:
        raise ApiError(530, f"Unable to find volume with id {id}")
    vol["size"] = size
    return {"volume": render_volume(sim, vol)}


@command("listVolumes", Param("id", "uuid", entity="volumes"), Param("name"),
         Param("virtualmachineid", "uuid", entity="vms"), Param("type"),
         Param("zoneid", "uuid"), Param("diskofferingid", "uuid"), Param("state"), TAG_FILTER,
         key="volume", listing=True)
def list_volumes(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """Lists all volumes."""
    items = select(sim, "volumes", req, fields={"virtualmachineid": "virtualmachineid", "type": "type",
                                                "diskofferingid": "diskofferingid", "state": "state"})
    return [render_volume(sim, v) for v in items]


