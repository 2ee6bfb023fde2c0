"""The VM's life after deploy: start, stop, reboot, destroy, expunge, recover, rescale, keys."""

from __future__ import annotations

from typing import Any

from ..engine import Simulator
from ..errors import ApiError, invalid_value
from ..registry import AsyncResult, Param, Request, command, finisher
from ._common import get_or_431
from .compute import (
    USERDATA_POST_MAX,
    _check_userdata,
    _check_vm_limits,
    _fail_vm,
    _live_vms,
    render_vm,
)


def _transition(sim: Simulator, req: Request, *, allowed: tuple[str, ...], transient: str, final: str,
                verb: str, effect: str, duration: float = 0.0) -> AsyncResult:
    vm = get_or_431(sim, "vms", req.get("id"), "virtual machine")
    if vm["state"] not in allowed:
        raise invalid_value(f"Unable to {verb} VM {vm['name']}: it is in state {vm['state']}")
    if vm["state"] != final:
        vm["_was"] = vm["state"]
        vm["state"] = transient
    return AsyncResult("vm_state", {"id": vm["id"], "state": final}, "VirtualMachine", vm["id"], duration=duration,
                       effect=effect, effect_args={"id": vm["id"]})


@command("startVirtualMachine", Param("id", "uuid", required=True, entity="vms"), Param("hostid", "uuid"),
         isasync=True, key="virtualmachine")
def start_virtual_machine(sim: Simulator, req: Request) -> AsyncResult:
    """Starts a virtual machine."""
    vm = get_or_431(sim, "vms", req.get("id"), "virtual machine")
    if vm["state"] == "Stopped":
        so = sim.get("service_offerings", vm["serviceofferingid"]) or {}
        if so:
            others = [v for v in _live_vms(sim) if v["id"] != vm["id"]]
            sim.check_limit("user_vm", len(others))
    return _transition(sim, req, allowed=("Stopped", "Running"), transient="Starting", final="Running",
                       verb="start", effect="start_vm", duration=sim.vm_boot_seconds())


@command("stopVirtualMachine", Param("id", "uuid", required=True, entity="vms"), Param("forced", "boolean"),
         isasync=True, key="virtualmachine")
def stop_virtual_machine(sim: Simulator, req: Request) -> AsyncResult:
    """Stops a virtual machine."""
    return _transition(sim, req, allowed=("Running", "Stopped", "Error"), transient="Stopping", final="Stopped",
                       verb="stop", effect="stop_vm")


@command("rebootVirtualMachine", Param("id", "uuid", required=True, entity="vms"), isasync=True,
         key="virtualmachine")
def reboot_virtual_machine(sim: Simulator, req: Request) -> AsyncResult:
    """Reboots a virtual machine (it stays Running: VirtualMachineManagerImpl.orchestrateReboot
    only sends the host a RebootCommand, without a state transition)."""
    vm = get_or_431(sim, "vms", req.get("id"), "virtual machine")
    if vm["state"] != "Running":
        raise invalid_value(f"Unable to reboot VM {vm['name']}: it is in state {vm['state']}, not Running")
    return AsyncResult("vm_state", {"id": vm["id"], "state": "Running"}, "VirtualMachine", vm["id"],
                       duration=sim.vm_boot_seconds(), effect="reboot_vm", effect_args={"id": vm["id"]})


def _release_vm_network(sim: Simulator, vm: dict[str, Any]) -> None:
    """What CloudStack cleans up when a VM is destroyed: static NAT, forwarding and LB membership."""
    for ip in sim.col("public_ips").values():
        if ip.get("virtualmachineid") == vm["id"]:
            ip.update(isstaticnat=False, virtualmachineid=None)
    for rule in [r for r in sim.col("pf_rules").values() if r.get("virtualmachineid") == vm["id"]]:
        sim.remove("pf_rules", rule["id"])
        for fw in [f for f in sim.col("firewall_rules").values() if f.get("related") == rule["id"]]:
            sim.remove("firewall_rules", fw["id"])
    for rule in sim.col("lb_rules").values():
        if vm["id"] in rule["_vms"]:
            rule["_vms"] = [v for v in rule["_vms"] if v != vm["id"]]  # replaced, not edited: journaled
            if not rule["_vms"] and rule.get("state") == "Active":
                rule["state"] = "Add"  # applyLoadBalancerRules: no mappings left


def _expunge(sim: Simulator, vm: dict[str, Any]) -> None:
    for vol in [v for v in sim.col("volumes").values() if v.get("virtualmachineid") == vm["id"]]:
        if vol["type"] == "ROOT":
            sim.remove("volumes", vol["id"])
        else:
            for k in ("virtualmachineid", "vmname", "vmdisplayname", "vmstate", "deviceid"):
                vol.pop(k, None)
            vol["state"] = "Ready"
    sim.remove("vms", vm["id"])


@command("destroyVirtualMachine", Param("id", "uuid", required=True, entity="vms"), Param("expunge", "boolean"),
         Param("volumeids", "list", item_type="uuid"), isasync=True, key="virtualmachine")
def destroy_virtual_machine(sim: Simulator, req: Request) -> AsyncResult:
    """Destroys a virtual machine (recoverable unless expunge=true)."""
    vm = get_or_431(sim, "vms", req.get("id"), "virtual machine")
    if vm["state"] in ("Destroyed", "Expunging") and not req.get("expunge"):
        raise invalid_value(f"Unable to destroy VM {vm['name']}: it is already {vm['state']}")
    vm["_was"] = vm["state"]
    midway = None
    if vm["state"] == "Running":
        # VirtualMachineManagerImpl.destroy: advanceStop (Stopping, then Stopped), then the
        # DestroyRequested transition (Destroyed), then with expunge the ExpungeOperation
        vm["state"] = "Stopping"
        midway = {"col": "vms", "id": vm["id"], "when": {"state": "Stopping"},
                  "set": {"state": "Stopped", "_was": "Stopped"}}
    args = {"id": vm["id"], "expunge": bool(req.get("expunge")), "volumes": req.get("volumeids") or []}
    return AsyncResult("vm_destroy", args, "VirtualMachine", vm["id"], effect="destroy_vm", effect_args=args,
                       midway=midway)


@finisher("vm_destroy", on_failure=lambda sim, id, expunge, volumes: _fail_vm(sim, id, "Destroyed"))
def _finish_destroy(sim: Simulator, id: str, expunge: bool, volumes: list[str]) -> dict[str, Any]:
    vm = sim.get("vms", id)
    if vm is None:
        raise ApiError(530, f"Unable to find virtual machine with id {id}")
    vm.pop("_was", None)
    _release_vm_network(sim, vm)
    vm["state"] = "Destroyed"
    rendered = render_vm(sim, vm)
    for vol_id in volumes:
        vol = sim.get("volumes", vol_id)
        if vol is not None and vol["type"] == "DATADISK":
            sim.remove("volumes", vol_id)
    if expunge:
        rendered["state"] = "Expunging"
        _expunge(sim, vm)
    return {"virtualmachine": rendered}


@command("expungeVirtualMachine", Param("id", "uuid", required=True, entity="vms"), isasync=True)
def expunge_virtual_machine(sim: Simulator, req: Request) -> AsyncResult:
    """Expunges a destroyed virtual machine."""
    vm = get_or_431(sim, "vms", req.get("id"), "virtual machine")
    if vm["state"] != "Destroyed":
        raise invalid_value("Please destroy vm with specified vmId before expunge")
    vm["state"] = "Expunging"  # advanceExpunge's first transition; the row goes when it is done
    return AsyncResult("vm_expunge", {"id": vm["id"]}, "VirtualMachine", vm["id"], effect="expunge_vm",
                       effect_args={"id": vm["id"]})


@finisher("vm_expunge")
def _finish_expunge(sim: Simulator, id: str) -> dict[str, Any]:
    vm = sim.get("vms", id)
    if vm is not None:
        _expunge(sim, vm)
    return {"success": True}


@command("recoverVirtualMachine", Param("id", "uuid", required=True, entity="vms"), key="virtualmachine")
def recover_virtual_machine(sim: Simulator, req: Request) -> dict[str, Any]:
    """Recovers a virtual machine (Destroyed -> Stopped)."""
    vm = get_or_431(sim, "vms", req.get("id"), "virtual machine")
    if vm["state"] != "Destroyed":
        raise invalid_value(f"Unable to recover VM {vm['name']}: it is in state {vm['state']}, not Destroyed")
    offering = sim.get("service_offerings", vm["serviceofferingid"])
    if offering is not None:  # a destroyed VM no longer counts; recovering it must fit the limits again
        _check_vm_limits(sim, offering)
    vm["state"] = "Stopped"
    return render_vm(sim, vm)


def _rescale(sim: Simulator, req: Request) -> tuple[dict[str, Any], dict[str, Any]]:
    vm = get_or_431(sim, "vms", req.get("id"), "virtual machine")
    offering = get_or_431(sim, "service_offerings", req.get("serviceofferingid"), "service offering")
    if vm["state"] != "Stopped":
        raise invalid_value(f"Unable to scale VM {vm['name']}: a fixed service offering can only be changed "
                            f"while the VM is Stopped (it is {vm['state']})")
    if offering["id"] == vm["serviceofferingid"]:
        raise invalid_value("Not upgrading vm: it already has the requested service offering")
    return vm, offering


@command("scaleVirtualMachine", Param("id", "uuid", required=True, entity="vms"),
         Param("serviceofferingid", "uuid", required=True, entity="service_offerings"), Param("details", "map"),
         isasync=True)
def scale_virtual_machine(sim: Simulator, req: Request) -> AsyncResult:
    """Scales the virtual machine to a new service offering (Stopped VMs for fixed offerings)."""
    vm, offering = _rescale(sim, req)
    return AsyncResult("vm_scale", {"id": vm["id"], "offering": offering["id"]}, "VirtualMachine", vm["id"])


@finisher("vm_scale")
def _finish_scale(sim: Simulator, id: str, offering: str) -> dict[str, Any]:
    vm = sim.get("vms", id)
    if vm is None:
        raise ApiError(530, f"Unable to find virtual machine with id {id}")
    vm["serviceofferingid"] = offering
    return {"virtualmachine": render_vm(sim, vm)}  # ScaleVMCmd answers with the VM (libcloud reads it)


@command("changeServiceForVirtualMachine", Param("id", "uuid", required=True, entity="vms"),
         Param("serviceofferingid", "uuid", required=True, entity="service_offerings"), key="virtualmachine")
def change_service_for_virtual_machine(sim: Simulator, req: Request) -> dict[str, Any]:
    """Changes the service offering for a stopped virtual machine."""
    vm, offering = _rescale(sim, req)
    vm["serviceofferingid"] = offering["id"]
    return render_vm(sim, vm)


@command("updateVirtualMachine", Param("id", "uuid", required=True, entity="vms"), Param("displayname"),
         Param("userdata", length=USERDATA_POST_MAX), Param("group"), Param("haenable", "boolean"), key="virtualmachine")
def update_virtual_machine(sim: Simulator, req: Request) -> dict[str, Any]:
    """Updates properties of a virtual machine (user data takes effect on the next start)."""
    vm = get_or_431(sim, "vms", req.get("id"), "virtual machine")
    if "userdata" in req:
        vm["_userdata"] = _check_userdata(req)
    for field in ("displayname", "group", "haenable"):
        if field in req:
            vm[field] = req.get(field)
    return render_vm(sim, vm)


@command("resetSSHKeyForVirtualMachine", Param("id", "uuid", required=True, entity="vms"), Param("keypair"),
         Param("keypairs", "list"), Param("account"), Param("domainid", "uuid"), Param("projectid", "uuid"),
         isasync=True, key="virtualmachine", response_name="resetSSHKeyforvirtualmachineresponse")
def reset_ssh_key_for_virtual_machine(sim: Simulator, req: Request) -> AsyncResult:
    """Resets the SSH Key for virtual machine. The virtual machine must be in a "Stopped" state."""
    vm = get_or_431(sim, "vms", req.get("id"), "virtual machine")
    if vm["state"] in ("Error", "Expunging"):
        raise invalid_value("Vm with specified id is not in the right state")
    if vm["state"] != "Stopped":
        raise invalid_value(f"Vm {_vm_label(vm)} should be stopped to do SSH Key reset")
    names = list(req.get("keypairs") or []) + ([req.get("keypair")] if req.get("keypair") else [])
    if not names:
        raise invalid_value("'keypair' or 'keypairs' must be specified")
    known = {k["name"] for k in sim.col("keypairs").values()}
    if any(n not in known for n in names):
        raise invalid_value("Not all specified keyparis exist")
    return AsyncResult("vm_keys", {"id": vm["id"], "keypairs": ",".join(names)}, "VirtualMachine", vm["id"])


def _vm_label(vm: dict[str, Any]) -> str:
    """How CloudStack's VMInstanceVO.toString() names a VM in messages."""
    return f'VM instance {{"id": "{vm["id"]}", "instanceName": "{vm["instancename"]}"}}'


@finisher("vm_keys")
def _finish_vm_keys(sim: Simulator, id: str, keypairs: str) -> dict[str, Any]:
    vm = sim.get("vms", id)
    if vm is None:
        raise ApiError(530, f"Unable to find virtual machine with id {id}")
    vm["keypairs"] = keypairs
    return {"virtualmachine": render_vm(sim, vm)}
