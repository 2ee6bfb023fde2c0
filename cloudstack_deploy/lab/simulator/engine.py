"""The simulated cloud: its state, async jobs, limits, tags and persistence.

Everything is in plain JSON-able dicts so the whole cloud can be written to ``--state`` and
read back: a restarted simulator keeps its networks, VMs and even its pending jobs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import catalog
from .backend import EffectRunner, MemoryHost
from .errors import ApiError
from .faults import Fault, FaultSet, fault_text
from .registry import FINISHERS, AsyncResult

COLLECTIONS = (
    "zones",
    "domains",
    "accounts",
    "service_offerings",
    "templates",
    "network_offerings",
    "disk_offerings",
    "networks",
    "vms",
    "keypairs",
    "public_ips",
    "firewall_rules",
    "egress_rules",
    "pf_rules",
    "ip_forwarding_rules",
    "lb_rules",
    "volumes",
    "snapshots",
    "snapshot_policies",
    "tags",
    "jobs",
)

#: CloudStack resourcetype names (createTags) -> our collections.
RESOURCE_TYPES: dict[str, str] = {
    "UserVm": "vms",
    "Network": "networks",
    "PublicIpAddress": "public_ips",
    "Volume": "volumes",
    "FirewallRule": "firewall_rules",
    "PortForwardingRule": "pf_rules",
    "LoadBalancer": "lb_rules",
    "Snapshot": "snapshots",
    "SnapshotPolicy": "snapshot_policies",
    "Template": "templates",
    "SSHKeyPair": "keypairs",
}


def now_str(ts: float | None = None) -> str:
    """CloudStack's date format: ``2026-11-22T10:00:00+0000``."""
    dt = datetime.fromtimestamp(ts if ts is not None else time.time(), tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S+0000")


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Settings:
    vm_boot_seconds: float = 1.0
    job_seconds: float = 0.2
    limits: dict[str, int] = field(default_factory=dict)
    public_range: str = catalog.PUBLIC_RANGE
    api_key: str = "lab-api-key"
    secret_key: str = "lab-secret-key"


class Simulator(EffectRunner):
    """State + behaviour shared by every command handler (effects: see backend.py)."""

    def __init__(self, settings: Settings, state_file: str | os.PathLike[str] | None = None,
                 faults: list[Fault] | None = None) -> None:
        self.settings = settings
        self.state_file = Path(state_file) if state_file else None
        self.faults = FaultSet(faults)
        self.state: dict[str, Any] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: The machinery behind the records (see backend.py); the server may replace it.
        self.backend = MemoryHost()
        self._effects = {}
        #: Called after every change of state (e.g. to open/close forwarded ports).
        self.listeners: list[Callable[[], None]] = []
        if self.state_file and self.state_file.exists():
            self._load()
        else:
            self._seed()
        for name, value in settings.limits.items():
            self.set_limit(name, value)

    # ---- collections ----------------------------------------------------------------------
    def col(self, name: str) -> dict[str, dict[str, Any]]:
        return self.state["collections"][name]

    def get(self, collection: str, id_: str) -> dict[str, Any] | None:
        return self.col(collection).get(id_)

    def exists(self, collection: str, id_: str) -> bool:
        item = self.col(collection).get(id_)
        if item is None:
            return False
        return not item.get("_removed")

    def known(self, collection: str, id_: str) -> bool:
        """True for a live record and for one removed since: CloudStack resolves the ids of
        list parameters including removed rows, so an expunged VM lists as empty, not 431."""
        return self.exists(collection, id_) or self.state.get("removed", {}).get(id_) == collection

    def add(self, collection: str, item: dict[str, Any]) -> dict[str, Any]:
        item.setdefault("id", new_id())
        self.col(collection)[item["id"]] = item
        return item

    def remove(self, collection: str, id_: str) -> None:
        if self.col(collection).pop(id_, None) is not None:
            self.state.setdefault("removed", {})[id_] = collection
        for tag_id, tag in list(self.col("tags").items()):
            if tag["resourceid"] == id_:
                del self.col("tags")[tag_id]

    # ---- catalog -------------------------------------------------------------------------
    def _seed(self) -> None:
        self.state = {"version": 1, "collections": {c: {} for c in COLLECTIONS}, "counters": {}}
        self.state["limits"] = {name: (num, maxv) for num, name, maxv in catalog.RESOURCE_LIMITS}
        created = "2026-01-01T00:00:00+0000"
        domain = self.add("domains", {"name": catalog.DOMAIN, "path": "ROOT", "level": 0})
        self.domain_id = domain["id"]
        self.state["domain_id"] = domain["id"]
        account = self.add("accounts", {"name": catalog.ACCOUNT, "domainid": domain["id"], "accounttype": 1})
        self.state["account_id"] = account["id"]
        zone = self.add("zones", {
            "name": catalog.ZONE_NAME, "description": "The csdeploy lab zone", "networktype": "Advanced",
            "allocationstate": "Enabled", "securitygroupsenabled": False, "localstorageenabled": True,
            "dns1": "127.0.0.53", "internaldns1": "127.0.0.53", "guestcidraddress": "10.1.0.0/16",
            "zonetoken": new_id(), "dhcpprovider": "VirtualRouter", "tags": [],
        })
        for name, (cpu, speed, mem) in catalog.SERVICE_OFFERINGS.items():
            self.add("service_offerings", {
                "name": name, "displaytext": f"{cpu} vCPU, {mem} MB RAM", "cpunumber": cpu,
                "cpuspeed": speed, "memory": mem, "created": created, "storagetype": "local",
                "offerha": False, "limitcpuuse": False, "isvolatile": False, "issystem": False,
                "defaultuse": False, "iscustomized": False, "provisioningtype": "thin",
            })
        for name, ostype, tcreated, image in catalog.TEMPLATES:
            self.add("templates", {"_image": image,
                "name": name, "displaytext": name, "ispublic": True, "isfeatured": True,
                "created": tcreated, "isready": True, "passwordenabled": False, "format": "QCOW2",
                "crossZones": False, "ostypeid": new_id(), "ostypename": ostype,
                "account": "system", "zoneid": zone["id"], "zonename": zone["name"],
                "status": "Download Complete", "size": 2147483648, "templatetype": "USER",
                "hypervisor": "Simulator", "domain": "ROOT", "domainid": domain["id"],
                "isextractable": False, "checksum": "", "sshkeyenabled": True, "isdynamicallyscalable": False,
                "requireshvm": True, "bootable": True, "tags": [],
            })
        for name, guest in ((catalog.ISOLATED_OFFERING, "Isolated"), (catalog.SHARED_OFFERING, "Shared")):
            self.add("network_offerings", {
                "name": name, "displaytext": name, "traffictype": "Guest", "isdefault": True,
                "specifyvlan": guest == "Shared", "conservemode": True, "specifyipranges": guest == "Shared",
                "availability": "Optional" if guest == "Isolated" else "Required", "networkrate": 200,
                "state": "Enabled", "guestiptype": guest, "serviceofferingid": new_id(),
                "service": catalog.NETWORK_OFFERING_SERVICES if guest == "Isolated" else [],
                "forvpc": False, "ispersistent": False, "egressdefaultpolicy": True,
                "maxconnections": 4096, "created": created, "tags": "",
            })
        for name, size in catalog.DISK_OFFERINGS.items():
            self.add("disk_offerings", {
                "name": name, "displaytext": f"{name} disk" if size else "Custom size disk",
                "disksize": size, "created": created, "iscustomized": size == 0,
                "storagetype": "local", "provisioningtype": "thin", "displayoffering": True,
            })

    @property
    def zone(self) -> dict[str, Any]:
        return next(iter(self.col("zones").values()))

    # ---- persistence ---------------------------------------------------------------------
    def _load(self) -> None:
        assert self.state_file is not None
        try:
            self.state = json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read simulator state {self.state_file}: {exc}") from exc
        if not isinstance(self.state, dict) or not isinstance(self.state.get("collections"), dict) \
                or not isinstance(self.state.get("limits"), dict):
            raise ValueError(f"cannot read simulator state {self.state_file}: not a simulator state file "
                             "(expected a JSON object with 'collections' and 'limits')")
        self.state.setdefault("counters", {})
        for c in COLLECTIONS:
            self.state["collections"].setdefault(c, {})
        images = {name: image for name, _, _, image in catalog.TEMPLATES}
        for tpl in self.col("templates").values():  # state files from before templates had images
            if "_image" not in tpl and tpl.get("name") in images:
                tpl["_image"] = images[tpl["name"]]

    def save(self) -> None:
        """Write the state atomically (write a temp file, then rename over)."""
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=".sim-state-")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.state, fh, separators=(",", ":"))
        os.replace(tmp, self.state_file)

    def changed(self) -> None:
        self.save()
        for listener in list(self.listeners):
            listener()

    def counter(self, name: str) -> int:
        value = self.state["counters"].get(name, 0) + 1
        self.state["counters"][name] = value
        return value

    # ---- limits --------------------------------------------------------------------------
    def set_limit(self, name: str, value: int) -> None:
        if name not in self.state["limits"]:
            known = ", ".join(sorted(self.state["limits"]))
            raise ValueError(f"unknown resource limit {name!r} (known: {known})")
        num, _ = self.state["limits"][name]
        self.state["limits"][name] = (num, int(value))

    def check_limit(self, name: str, count_in_use: int, adding: int = 1) -> None:
        """Raise 535 as CloudStack does when ``adding`` more would pass the account's max."""
        _, maxv = self.state["limits"][name]
        if maxv >= 0 and count_in_use + adding > maxv:
            raise ApiError(
                535,
                f"Maximum number of resources of type '{name}' for account name={catalog.ACCOUNT} "
                f"in domain id=1 has been exceeded.",
            )

    # ---- tags ----------------------------------------------------------------------------
    def tags_of(self, resource_id: str) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in t.items() if not k.startswith("_") and k != "id"}
            for t in self.col("tags").values()
            if t["resourceid"] == resource_id
        ]

    def matches_tags(self, resource_id: str, wanted: dict[str, str] | None) -> bool:
        """True when the resource has *any* of the wanted key=value tags (CloudStack ORs them)."""
        if not wanted:
            return True
        return any(wanted.get(t["key"]) == t["value"] for t in self.col("tags").values()
                   if t["resourceid"] == resource_id and t["key"] in wanted)

    # ---- addresses -----------------------------------------------------------------------
    def allocate_public_address(self) -> str:
        used = {ip["ipaddress"] for ip in self.col("public_ips").values()}
        net = ipaddress.ip_network(self.settings.public_range)
        for n, host in enumerate(net.hosts()):
            if n == 0:
                continue  # keep .0.1 for the lab itself
            if str(host) not in used:
                return str(host)
        raise ApiError(533, "Insufficient address capacity: no free public IP address in zone " + self.zone["name"])

    # ---- async jobs ----------------------------------------------------------------------
    def submit_job(self, cmd_name: str, result: AsyncResult, userid: str | None = None) -> dict[str, Any]:
        """Queue a job; it completes after ``job_seconds`` (plus the command's own duration)."""
        fault = self.faults.take(cmd_name, ("job",))
        job_id = new_id()
        delay = self.settings.job_seconds + (result.duration or 0.0)
        job = {
            "id": job_id, "jobid": job_id, "cmd": _job_cmd(cmd_name), "_command": cmd_name,
            "_seq": self.counter("job"),
            "jobstatus": 0, "jobprocstatus": 0, "jobresultcode": 0, "jobinstancetype": result.instance_type,
            "jobinstanceid": result.instance_id, "created": now_str(),
            # AsyncJobResponse always names the user that submitted the job (the lab's admin)
            "userid": userid or self.state.setdefault("user_id", new_id()),
            "accountid": self.state.get("account_id"), "_finisher": result.finisher, "_args": result.args,
            "_effect": result.effect, "_effect_args": result.effect_args,
            "_due": time.time() + delay, "_start": time.time(),
            "_fault": int(fault.code) if fault else None, "_midway": result.midway,
        }
        self.add("jobs", job)
        self._schedule(job)
        return job

    def _schedule(self, job: dict[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # loaded outside a loop; resume_jobs() schedules later
        delay = max(0.0, job["_due"] - time.time())
        self._timers[job["id"]] = loop.call_later(delay, self._job_due, job["id"])
        if job.get("_midway"):
            half = max(0.0, (job.get("_start", job["_due"]) + job["_due"]) / 2 - time.time())
            self._timers[f"{job['id']}:midway"] = loop.call_later(half, self._job_midway, job["id"])

    def _job_midway(self, job_id: str) -> None:
        """Half-way through a job: the entity shows its intermediate state (see AsyncResult)."""
        self._timers.pop(f"{job_id}:midway", None)
        job = self.get("jobs", job_id)
        if job is None or job["jobstatus"] != 0 or not job.get("_midway"):
            return
        step = job.pop("_midway")
        record = self.get(step["col"], step["id"])
        if record is not None and all(record.get(k) == v for k, v in step["when"].items()):
            record.update(step["set"])
            self.changed()

    def resume_jobs(self) -> None:
        """Reschedule jobs still pending in a loaded state file, and re-run pending effects.

        An effect interrupted by a stop runs again from the start: effects are idempotent.
        """
        for job in self.col("jobs").values():
            if job["jobstatus"] == 0 and job["id"] not in self._timers and job["id"] not in self._effects:
                self._schedule(job)
        self.resume_effects()

    def complete_job(self, job_id: str, error: ApiError | None = None) -> None:
        """Finish a job: its finisher's result, or a failure (``error``, a fault, the finisher's)."""
        self._timers.pop(job_id, None)
        job = self.get("jobs", job_id)
        if job is None or job["jobstatus"] != 0:
            return
        fn, on_fail = FINISHERS[job["_finisher"]]
        try:
            if job["_fault"]:
                code = job["_fault"]
                raise ApiError(code, fault_text(job["_command"], code))
            if error is not None:
                raise error
            result = fn(self, **job["_args"])
        except ApiError as exc:
            if on_fail is not None:
                on_fail(self, **job["_args"])
            job.update(jobstatus=2, jobresultcode=exc.code, jobresulttype="object",
                       jobresult={"errorcode": exc.code, "errortext": exc.text})
        else:
            job.update(jobstatus=1, jobresultcode=0, jobresulttype="object", jobresult=result)
        job["completed"] = now_str()
        self.changed()

    def render_job(self, job: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in job.items() if not k.startswith("_") and v is not None and k != "id"}
        return out

    async def close(self) -> None:
        """Stop timers; let running effects finish (bounded), then cancel what is left."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await self.finish_effects()


def _job_cmd(name: str) -> str:
    """The Java class name CloudStack shows in ``cmd`` (cosmetic but clients print it)."""
    return f"org.apache.cloudstack.api.command.user.{name[0].upper()}{name[1:]}Cmd"


def public(item: dict[str, Any]) -> dict[str, Any]:
    """A record without internal fields (names starting with ``_``) and without None values."""
    return {k: v for k, v in item.items() if not k.startswith("_") and v is not None}
