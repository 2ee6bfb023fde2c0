"""Shortcuts for the behaviour tests: the seeded catalog, a network, a VM, error assertions.

Everything goes through the real `cs` client over HTTP, as a user's tool would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cs import CloudStack, CloudStackApiException


@dataclass
class Catalog:
    zone: str
    offerings: dict[str, str]  # name -> id
    template: str
    isolated: str  # network offering id
    disks: dict[str, str]  # name -> id


def catalog(cs: CloudStack) -> Catalog:
    return Catalog(
        zone=cs.listZones()["zone"][0]["id"],
        offerings={o["name"]: o["id"] for o in cs.listServiceOfferings()["serviceoffering"]},
        template=cs.listTemplates(templatefilter="featured")["template"][0]["id"],
        isolated=cs.listNetworkOfferings(guestiptype="Isolated")["networkoffering"][0]["id"],
        disks={d["name"]: d["id"] for d in cs.listDiskOfferings()["diskoffering"]},
    )


def network(cs: CloudStack, cat: Catalog, name: str = "net-1") -> dict[str, Any]:
    return cs.createNetwork(name=name, zoneid=cat.zone, networkofferingid=cat.isolated)["network"]


def vm_params(cat: Catalog, net: dict[str, Any], name: str | None = None, **kw: Any) -> dict[str, Any]:
    params: dict[str, Any] = dict(zoneid=cat.zone, serviceofferingid=cat.offerings["micro"],
                                  templateid=cat.template, networkids=net["id"])
    if name is not None:
        params["name"] = name
    params.update(kw)
    return params


def deploy(cs: CloudStack, cat: Catalog, net: dict[str, Any], name: str | None = None,
           **kw: Any) -> dict[str, Any]:
    """Deploy and wait (the `cs` fixture has fetch_result=True); returns the VM of the job."""
    return cs.deployVirtualMachine(**vm_params(cat, net, name, **kw))["virtualmachine"]


def vm_state(cs: CloudStack, vm_id: str) -> str:
    return cs.listVirtualMachines(id=vm_id)["virtualmachine"][0]["state"]


def public_key(comment: str = "test") -> str:
    """A fresh OpenSSH ed25519 public key line (fast to make, unique each call)."""
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{raw} {comment}"


def http_error(code: int, fn: Any, /, **params: Any) -> str:
    """Assert the request itself fails with HTTP ``code`` and CloudStack's error body; return its text."""
    with pytest.raises(CloudStackApiException) as info:
        fn(**params)
    err = info.value.error
    assert info.value.response.status_code == code, err
    assert err["errorcode"] == code, err
    assert "cserrorcode" in err and err["uuidList"] == [], err
    return err["errortext"]


def job_error(code: int, fn: Any, /, **params: Any) -> str:
    """Assert the command is accepted but its async job fails with ``code``; return the text.

    ``fn`` must be a command of a `cs` client with fetch_result=True: the submit answers 200
    with a jobid, and queryAsyncJobResult (itself HTTP 200) reports jobstatus 2.
    """
    with pytest.raises(CloudStackApiException) as info:
        fn(**params)
    err = info.value.error
    assert info.value.response.status_code == 200, err  # the failing job's query, not the submit
    assert err["errorcode"] == code, err
    return err["errortext"]


def wait_job(cs_raw: CloudStack, jobid: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll queryAsyncJobResult (without cs's own waiting) until the job is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        job = cs_raw.queryAsyncJobResult(jobid=jobid, fetch_result=False)
        if job["jobstatus"] != 0:
            return job
        assert time.monotonic() < deadline, f"job {jobid} still pending after {timeout}s"
        time.sleep(0.02)
