"""The simulated cloud: its state, limits, tags and persistence (async jobs: asyncjobs.py).

Everything is in JSON-able dicts so the cloud can be written to ``--state`` and read back: a
restarted simulator keeps its networks, VMs and even its pending jobs. Records note their
own changes (store.Record); each ``changed()`` journals just those (store.StateFile).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import catalog
from .asyncjobs import JOB_EXPIRE_MINUTES, JobRunner
from .backend import EffectRunner, MemoryHost
from .clock import new_id
from .errors import ApiError
from .faults import Fault, FaultSet
from .store import REMOVED, Record, StateFile, meta_of

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
    "affinity_groups",
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


@dataclass
class Settings:
    vm_boot_seconds: float = 1.0
    job_seconds: float = 0.2
    limits: dict[str, int] = field(default_factory=dict)
    public_range: str = catalog.PUBLIC_RANGE
    api_key: str = "lab-api-key"
    secret_key: str = "lab-secret-key"
    #: CloudStack's job.expire.minutes: how long a finished job stays queryable.
    job_expire_minutes: float = JOB_EXPIRE_MINUTES


class Simulator(JobRunner, EffectRunner):
    """State + behaviour shared by every command handler (effects: see backend.py)."""

    def __init__(self, settings: Settings, state_file: str | os.PathLike[str] | None = None,
                 faults: list[Fault] | None = None) -> None:
        self.settings = settings
        self.state_file = Path(state_file) if state_file else None
        self.store = StateFile(self.state_file) if self.state_file else None
        self.faults = FaultSet(faults)
        self.state: dict[str, Any] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        #: The machinery behind the records (see backend.py); the server may replace it.
        self.backend = MemoryHost()
        self._effects = {}
        #: Called after every change of state (e.g. to open/close forwarded ports).
        self.listeners: list[Callable[[], None]] = []
        #: (collection, id) of records changed since the last commit (REMOVED: removed ids).
        self._dirty: set[tuple[str, str]] = set()
        self._meta_json = ""
        self._save_handle: asyncio.Handle | None = None
        #: Set when the simulator stops: answers held by a ``slow`` fault are then never sent.
        self._stopping = asyncio.Event()
        #: resource id -> its tags (tag id -> tag record).
        self._tags_by_resource: dict[str, dict[str, dict[str, Any]]] = {}
        self._init_jobs()
        loaded = self.store.load() if self.store else None
        if loaded is not None:
            self._adopt(loaded)
        else:
            self._seed()
        for name, value in settings.limits.items():
            self.set_limit(name, value)
        if self.store:  # a fresh snapshot: a replayed journal (and any torn line) is folded in
            self.store.compact(self.state)
            self._dirty.clear()
            self._meta_json = json.dumps(meta_of(self.state), sort_keys=True)

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
        """Store ``item`` (given an id if it has none); returns the stored record, to change."""
        id_ = item.setdefault("id", new_id())
        record = Record(item, self._dirty, (collection, id_))
        self.col(collection)[id_] = record
        self._dirty.add((collection, id_))
        if collection == "tags":
            self._tags_by_resource.setdefault(record["resourceid"], {})[id_] = record
        return record

    def remove(self, collection: str, id_: str) -> None:
        """Delete a record and its tags, remembering the id as removed (see ``known``)."""
        if self.forget(collection, id_) is not None:
            self.state.setdefault("removed", {})[id_] = collection
            self._dirty.add((REMOVED, id_))
        for tag_id in list(self._tags_by_resource.get(id_, {})):
            self.forget("tags", tag_id)

    def forget(self, collection: str, id_: str) -> dict[str, Any] | None:
        """Delete a record without a trace (tags, expired jobs)."""
        record = self.col(collection).pop(id_, None)
        if record is None:
            return None
        self._dirty.add((collection, id_))
        if collection == "tags":
            tags = self._tags_by_resource.get(record["resourceid"], {})
            tags.pop(id_, None)
            if not tags:
                self._tags_by_resource.pop(record["resourceid"], None)
        elif collection == "jobs":
            self._untrack_pending(record)
        return record

    # ---- catalog -------------------------------------------------------------------------
    def _seed(self) -> None:
        self.state = {"version": 1, "collections": {c: {} for c in COLLECTIONS}, "counters": {}}
        self.state["limits"] = {name: (num, maxv) for num, name, maxv in catalog.RESOURCE_LIMITS}
        created = "2026-01-01T00:00:00+0000"
        domain = self.add("domains", {"name": catalog.DOMAIN, "path": "ROOT", "level": 0})
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
                "availability": "Required" if guest == "Isolated" else "Optional", "networkrate": 200,
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
    def _adopt(self, state: dict[str, Any]) -> None:
        """Take a loaded state: fill what older files lack, wrap records, build the indexes."""
        self.state = state
        state.setdefault("counters", {})
        collections = state["collections"]
        for c in COLLECTIONS:
            collections.setdefault(c, {})
        for name, items in collections.items():
            for id_, item in list(items.items()):
                items[id_] = Record(item, self._dirty, (name, id_))
        for tag_id, tag in self.col("tags").items():
            self._tags_by_resource.setdefault(tag["resourceid"], {})[tag_id] = tag
        images = {name: image for name, _, _, image in catalog.TEMPLATES}
        for off in self.col("network_offerings").values():  # state files from before availability was fixed
            if off.get("name") in (catalog.ISOLATED_OFFERING, catalog.SHARED_OFFERING):
                off["availability"] = "Required" if off.get("guestiptype") == "Isolated" else "Optional"
        for tpl in self.col("templates").values():  # state files from before templates had images
            if "_image" not in tpl and tpl.get("name") in images:
                tpl["_image"] = images[tpl["name"]]
        self._index_jobs()

    def save(self) -> None:
        """Journal what changed since the last save (nothing to do without ``--state``)."""
        if self.store is None:
            self._dirty.clear()
            return
        ops: list[list[Any]] = []
        if self._dirty:
            removed = self.state.get("removed", {})
            collections = self.state["collections"]
            for col, id_ in self._dirty:
                if col == REMOVED:
                    ops.append(["p", REMOVED, id_, removed[id_]] if id_ in removed else ["d", REMOVED, id_])
                else:
                    record = collections[col].get(id_)
                    ops.append(["p", col, id_, record] if record is not None else ["d", col, id_])
            self._dirty.clear()
        meta = meta_of(self.state)
        meta_json = json.dumps(meta, sort_keys=True)  # small: counters, limits, ids, effects
        if meta_json != self._meta_json:
            ops.append(["m", meta])
            self._meta_json = meta_json
        if ops:
            self.store.append(ops)
        if self.store.needs_compaction():
            self.store.compact(self.state)

    def save_and_close(self) -> None:
        """The last save of a stopping simulator: the whole state in the file, no journal."""
        if self.store is not None:
            self.save()
            self.store.close(self.state)

    def changed(self) -> None:
        """Something changed: save it soon (changes of one loop turn share one journal write;
        the API saves before it answers, see transport.py) and tell the listeners."""
        if self.store is None:
            self._dirty.clear()
        elif self._save_handle is None:
            try:
                self._save_handle = asyncio.get_running_loop().call_soon(self._save_soon)
            except RuntimeError:
                self.save()
        for listener in list(self.listeners):
            listener()

    def _save_soon(self) -> None:
        self._save_handle = None
        self.save()

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
    def tags_on(self, resource_id: str) -> list[dict[str, Any]]:
        """The tag records of a resource (a copy of the list: safe to delete while iterating)."""
        return list(self._tags_by_resource.get(resource_id, {}).values())

    def tags_of(self, resource_id: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in t.items() if not k.startswith("_") and k != "id"}
                for t in self._tags_by_resource.get(resource_id, {}).values()]

    def matches_tags(self, resource_id: str, wanted: dict[str, str] | None) -> bool:
        """True when the resource has *any* of the wanted key=value tags (CloudStack ORs them).

        Keys and values compare case-insensitively, as MySQL's default collation (utf8_general_ci,
        which CloudStack's resource_tags table uses) compares them in the list queries' joins.
        """
        if not wanted:
            return True
        folded = {k.lower(): v.lower() for k, v in wanted.items()}
        return any(folded.get(str(t["key"]).lower()) == str(t["value"]).lower()
                   for t in self._tags_by_resource.get(resource_id, {}).values())

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

    async def hold(self, seconds: float) -> bool:
        """Hold an answer ``seconds`` (a ``slow`` fault): True when the time is up, False when
        the simulator stops first (the held call is then dropped, as by a server that went away,
        and the stop does not wait out the rest of the hold)."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        """Stop timers; let running effects finish (bounded), then cancel what is left."""
        self._stopping.set()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await self.finish_effects()


def public(item: dict[str, Any]) -> dict[str, Any]:
    """A record without internal fields (names starting with ``_``) and without None values."""
    return {k: v for k, v in item.items() if not k.startswith("_") and v is not None}
