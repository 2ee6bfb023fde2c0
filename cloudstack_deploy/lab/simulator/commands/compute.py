"""Virtual machines: deploy, rendering, limits and listing (what follows deploy: vm_ops.py)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any

from .. import catalog
from ..clock import new_id, now_str
from ..engine import Simulator
from ..errors import ApiError, invalid_value
from ..registry import TAG_FILTER, AsyncResult, Param, Request, command, finisher
from ._common import get_or_431, owner, select, zone_fields
from .affinity import groups_for_deploy, vm_groups
from .networking import implement_network, new_isolated_network

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")
NAME_ERROR = ("Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' through '9', "
              "and the hyphen ('-'), must be between 1 and 63 characters long, and can't start or end with "
              "\"-\" and can't start with digit")
USERDATA_GET_MAX = 4096
USERDATA_POST_MAX = 1048576
USERDATA_DECODED_MAX = 32768
LIVE = ("Starting", "Running", "Stopping", "Stopped", "Migrating", "Error")


def render_vm(sim: Simulator, vm: dict[str, Any]) -> dict[str, Any]:
    so = sim.get("service_offerings", vm["serviceofferingid"]) or {}
    tpl = sim.get("templates", vm["templateid"]) or {}
    out = {k: v for k, v in vm.items() if not k.startswith("_") and v is not None}
    out.update(owner(sim), **zone_fields(sim))
    out.update(
        serviceofferingname=so.get("name"), cpunumber=so.get("cpunumber"), cpuspeed=so.get("cpuspeed"),
        memory=so.get("memory"), templatename=tpl.get("name"), templatedisplaytext=tpl.get("displaytext"),
        ostypeid=tpl.get("ostypeid"), guestosid=tpl.get("ostypeid"), tags=sim.tags_of(vm["id"]),
        cpuused="0%" if vm["state"] != "Running" else "3.1%", networkkbsread=0, networkkbswrite=0,
        diskkbsread=0, diskkbswrite=0, diskioread=0, diskiowrite=0,
        nic=[dict(n) for n in vm["nic"]], affinitygroup=vm_groups(sim, vm),
    )
    ip = next((i for i in sim.col("public_ips").values() if i.get("virtualmachineid") == vm["id"]
               and i.get("isstaticnat")), None)
    if ip is not None:
        out.update(publicip=ip["ipaddress"], publicipid=ip["id"])
    for nic in out["nic"]:
        net = sim.get("networks", nic["networkid"]) or {}
        nic.update(networkname=net.get("name"), gateway=net.get("gateway"), netmask=net.get("netmask"))
        if net.get("broadcasturi"):  # shown to root admins, as the lab's caller is
            nic.update(broadcasturi=net["broadcasturi"], isolationuri=net["broadcasturi"])
    out.setdefault("displayvm", True)
    # UserVmJoinVO joins the VM's pending job: a VM being worked on shows its jobid/jobstatus
    pending = sim.pending_job_for(vm["id"])
    if pending is not None:
        out.update(jobid=pending["jobid"], jobstatus=0)
    return out


def _live_vms(sim: Simulator) -> list[dict[str, Any]]:
    return [v for v in sim.col("vms").values() if v["state"] in LIVE]


def _check_vm_limits(sim: Simulator, offering: dict[str, Any]) -> None:
    live = _live_vms(sim)
    sim.check_limit("user_vm", len(live))
    offerings = sim.col("service_offerings")
    cpus = sum(offerings[v["serviceofferingid"]]["cpunumber"] for v in live if v["serviceofferingid"] in offerings)
    mem = sum(offerings[v["serviceofferingid"]]["memory"] for v in live if v["serviceofferingid"] in offerings)
    sim.check_limit("cpu", cpus, offering["cpunumber"])
    sim.check_limit("memory", mem, offering["memory"])


def _check_userdata(req: Request) -> str | None:
    data = req.get("userdata")
    if data is None:
        return None
    if req.method == "GET" and len(data) > USERDATA_GET_MAX:
        raise invalid_value(f"User data is too long for an http GET request ({len(data)} > {USERDATA_GET_MAX} "
                            "characters); send it with POST")
    if len(data) > USERDATA_POST_MAX:
        raise invalid_value("User data is too long for an http POST request")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_value("User data is not base64 encoded") from None
    if len(decoded) > USERDATA_DECODED_MAX:
        raise invalid_value(f"User data is too long: {len(decoded)} bytes, the maximum is {USERDATA_DECODED_MAX}")
    return data


def _allocate_guest_ip(sim: Simulator, net: dict[str, Any], wanted: str | None) -> str:
    cidr = ipaddress.ip_network(net["cidr"])
    used = {n["ipaddress"] for v in sim.col("vms").values() for n in v["nic"] if n["networkid"] == net["id"]}
    used.add(net["gateway"])
    if wanted:
        if ipaddress.ip_address(wanted) not in cidr:
            raise invalid_value(f"Requested ip address {wanted} is not in the network cidr {net['cidr']}")
        if wanted in used:
            raise ApiError(534, f"The requested ip address {wanted} is already in use in network {net['name']}")
        return wanted
    for host in cidr.hosts():
        if str(host) not in used:
            return str(host)
    raise ApiError(533, f"Insufficient address capacity in network {net['name']}")


def default_network(sim: Simulator) -> dict[str, Any]:
    """The network of a VM deployed without networkids (getDefaultNetwork in CloudStack's VM
    network selection): with the "Required" offering enabled, the account's only isolated
    network; none: a new one of that offering named ``<account>-network``; several: 431."""
    required = [o for o in sim.col("network_offerings").values() if o.get("availability") == "Required"]
    if not required:
        raise invalid_value("Unable to find network offering with availability=Required to automatically "
                            "create the network as a part of vm creation")
    if required[0].get("state") != "Enabled":
        raise invalid_value(f"Required network offering {required[0]['name']} is not in Enabled")
    isolated = [n for n in sim.col("networks").values() if n.get("type") == "Isolated" and not n.get("_removed")]
    if len(isolated) > 1:
        raise invalid_value(f"More than 1 default Isolated networks are found for Account {catalog.ACCOUNT}; "
                            "please specify networkIds")
    if isolated:
        return isolated[0]
    name = f"{catalog.ACCOUNT}-network"
    return new_isolated_network(sim, required[0], name)


@command("deployVirtualMachine",
         Param("zoneid", "uuid", required=True, entity="zones"),
         Param("serviceofferingid", "uuid", required=True, entity="service_offerings"),
         Param("templateid", "uuid", required=True, entity="templates"),
         Param("name", description="Host name of the VM: 1-63 chars [a-zA-Z0-9-], not starting with a digit"),
         Param("displayname"), Param("networkids", "list", item_type="uuid"), Param("keypair"),
         Param("keypairs", "list"),
         Param("userdata", description="Base64 user data (GET < 4096 chars)", length=USERDATA_POST_MAX),
         Param("startvm", "boolean"), Param("rootdisksize", "long"), Param("group"), Param("details", "map"),
         Param("ipaddress"), Param("diskofferingid", "uuid", entity="disk_offerings"), Param("size", "long"),
         Param("hypervisor"), Param("account"), Param("domainid", "uuid"), Param("projectid", "uuid"),
         Param("affinitygroupids", "list", item_type="uuid"), Param("affinitygroupnames", "list"),
         Param("securitygroupids", "list"), Param("hostid", "uuid"),
         isasync=True, key="virtualmachine")
def deploy_virtual_machine(sim: Simulator, req: Request) -> AsyncResult:
    """Creates and automatically starts a virtual machine based on a service offering, disk offering, and template."""
    offering = sim.get("service_offerings", req.get("serviceofferingid"))
    template = sim.get("templates", req.get("templateid"))
    assert offering is not None and template is not None
    if not template.get("isready"):
        raise invalid_value(f"Template {template['name']} is not ready to be deployed")
    sim.backend.check_template(template)
    name = req.get("name")
    if name is not None and (not NAME_RE.fullmatch(name) or name.endswith("-")):
        raise invalid_value(NAME_ERROR)
    network_ids = list(req.get("networkids") or [])
    keypairs = list(req.get("keypairs") or []) + ([req.get("keypair")] if req.get("keypair") else [])
    for kp in keypairs:
        if not any(k["name"] == kp for k in sim.col("keypairs").values()):
            raise invalid_value(f"A key pair with name '{kp}' was not found.")
    userdata = _check_userdata(req)
    if not network_ids:  # after the checks of the input: a bad request creates no network
        network_ids = [default_network(sim)["id"]]
    networks = [sim.get("networks", nid) for nid in network_ids]
    for net in networks:
        assert net is not None
        if name and any(v["name"].lower() == name.lower() and any(n["networkid"] == net["id"] for n in v["nic"])
                        for v in sim.col("vms").values()):
            raise invalid_value(f"The vm with hostName {name} already exists in the network domain: "
                                f"{net['networkdomain']}; network={net['name']}")
    rootsize = req.get("rootdisksize")
    if rootsize is not None and rootsize < 1:
        raise invalid_value("Root disk size should be a positive number")
    template_bytes = template.get("size", 2147483648)
    if rootsize is not None and rootsize * 1024**3 < template_bytes:  # UserVmManagerImpl: no shrinking
        raise invalid_value(f"Unsupported: rootdisksize override ({rootsize} GB) is smaller than template "
                            f"size ({template_bytes / 1024**3:.2f} GB)")
    groups = groups_for_deploy(sim, req)
    _check_vm_limits(sim, offering)
    sim.check_limit("volume", len(sim.col("volumes")))

    num = sim.counter("vm")
    start = req.get("startvm", True) if "startvm" in req else True
    nics = []
    for i, net in enumerate(networks):
        implement_network(sim, net)  # type: ignore[arg-type]
        nics.append({"id": new_id(), "networkid": net["id"], "ipaddress": _allocate_guest_ip(  # type: ignore[index]
            sim, net, req.get("ipaddress") if i == 0 else None), "isdefault": i == 0, "traffictype": "Guest",
            "type": "Isolated", "macaddress": f"02:00:{num // 256 % 256:02x}:{num % 256:02x}:00:{i:02x}"})
    vm = sim.add("vms", {
        "name": name or "", "displayname": req.get("displayname") or name or "", "state": "Starting" if start
        else "Stopped", "serviceofferingid": offering["id"], "templateid": template["id"],
        "created": now_str(), "haenable": False, "hypervisor": "Simulator", "passwordenabled": False,
        "rootdeviceid": 0, "rootdevicetype": "ROOT", "securitygroup": [], "affinitygroup": [],
        "group": req.get("group"), "keypairs": ",".join(keypairs) if keypairs else None,
        "isdynamicallyscalable": False, "details": {k: v for d in req.get("details") or [] for k, v in d.items()},
        "instancename": f"i-2-{num}-VM", "nic": nics, "_userdata": userdata,
        "_rootsize": rootsize, "_affinity": groups,
    })
    if not name:
        vm["name"] = vm["displayname"] = vm["id"]
    gb = rootsize or max(1, template.get("size", 2147483648) // 1024**3)
    sim.add("volumes", {
        "name": f"ROOT-{num}", "type": "ROOT", "state": "Ready", "size": gb * 1024**3, "deviceid": 0,
        "virtualmachineid": vm["id"], "vmname": vm["name"], "vmdisplayname": vm["displayname"],
        "created": now_str(), "destroyed": False, "isextractable": False, "storagetype": "local",
        "hypervisor": "Simulator", "storage": "lab-primary", "provisioningtype": "thin",
        "serviceofferingid": offering["id"], "serviceofferingname": offering["name"],
        "serviceofferingdisplaytext": offering["displaytext"], "diskofferingid": None, "_attached": now_str(),
    })
    duration = sim.vm_boot_seconds() if start else 0.0
    return AsyncResult("vm_state", {"id": vm["id"], "state": "Running" if start else "Stopped"},
                       "VirtualMachine", vm["id"], entity_id=vm["id"], duration=duration,
                       effect="create_vm", effect_args={"id": vm["id"], "start": start})


def _fail_vm(sim: Simulator, id: str, state: str) -> None:
    vm = sim.get("vms", id)
    if vm is None:
        return
    if vm["state"] == "Starting" and state == "Running" and vm.get("_was") is None:
        vm["state"] = "Error"  # a failed deploy leaves the VM in Error, as CloudStack does
    elif vm.get("_was"):
        vm["state"] = vm.pop("_was")


@finisher("vm_state", on_failure=_fail_vm)
def _finish_vm_state(sim: Simulator, id: str, state: str) -> dict[str, Any]:
    vm = sim.get("vms", id)
    if vm is None:
        raise ApiError(530, f"Unable to find virtual machine with id {id}")
    vm.pop("_was", None)
    vm["state"] = state
    return {"virtualmachine": render_vm(sim, vm)}


@command("listVirtualMachines", Param("id", "uuid", entity="vms"), Param("ids", "list"), Param("name"),
         Param("state"), Param("networkid", "uuid", entity="networks"), Param("zoneid", "uuid", entity="zones"),
         Param("templateid", "uuid", entity="templates"),
         Param("serviceofferingid", "uuid", entity="service_offerings"), Param("groupid", "uuid"), Param("details", "list"),
         Param("keypair"), Param("displayvm", "boolean"), TAG_FILTER,
         key="virtualmachine", listing=True)
def list_virtual_machines(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """List the virtual machines owned by the account.

    The lab's caller is an admin, so Destroyed and Expunging VMs are listed too;
    ``state=present`` leaves them out (QueryManagerImpl.searchForUserVMsInternal).
    """
    present = str(req.get("state", "")).lower() == "present"
    fields = {"templateid": "templateid", "serviceofferingid": "serviceofferingid"}
    if not present:
        fields["state"] = "state"
    items = select(sim, "vms", req, keyword_fields=("name", "displayname"), fields=fields)
    if present:
        items = [v for v in items if v["state"] not in ("Destroyed", "Expunging")]
    if req.get("ids"):
        items = [v for v in items if v["id"] in req.get("ids")]
    if "networkid" in req:
        items = [v for v in items if any(n["networkid"] == req.get("networkid") for n in v["nic"])]
    if req.get("keypair"):
        items = [v for v in items if req.get("keypair") in (v.get("keypairs") or "").split(",")]
    return [render_vm(sim, v) for v in items]


@command("getVirtualMachineUserData", Param("virtualmachineid", "uuid", required=True, entity="vms"), kind="raw")
def get_virtual_machine_userdata(sim: Simulator, req: Request) -> dict[str, Any]:
    """Returns user data associated with the VM."""
    vm = get_or_431(sim, "vms", req.get("virtualmachineid"), "virtual machine")
    return {"virtualmachineuserdata": {"virtualmachineid": vm["id"], "userdata": vm.get("_userdata") or ""}}

