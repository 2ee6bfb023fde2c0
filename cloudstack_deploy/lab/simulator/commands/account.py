"""SSH key pairs and resource tags."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..engine import RESOURCE_TYPES, Simulator, public
from ..errors import ApiError, invalid_value
from ..registry import TAG_FILTER, AsyncResult, Param, Request, command, finisher
from ._common import owner


def fingerprint(public_key: str) -> str:
    """MD5 colon fingerprint of an OpenSSH public key line, as CloudStack shows it."""
    parts = public_key.strip().split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise invalid_value("Public key is invalid")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_value("Public key is invalid") from None
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _find_keypair(sim: Simulator, name: str) -> dict[str, Any] | None:
    return next((k for k in sim.col("keypairs").values() if k["name"] == name), None)


def _render_keypair(sim: Simulator, kp: dict[str, Any]) -> dict[str, Any]:
    return public(kp) | owner(sim)


def _store_keypair(sim: Simulator, name: str, public_key: str) -> dict[str, Any]:
    if _find_keypair(sim, name) is not None:
        raise invalid_value(f"A key pair with name '{name}' already exists.")
    fp = fingerprint(public_key)
    if any(k["fingerprint"] == fp for k in sim.col("keypairs").values()):
        raise invalid_value(f"A key pair with key '{public_key.strip()}' already exists for this account.")
    return sim.add("keypairs", {"name": name, "fingerprint": fp, "_publickey": public_key.strip()})


@command("registerSSHKeyPair", Param("name", required=True), Param("publickey", required=True, length=5120),
         Param("account"), Param("domainid", "uuid"), Param("projectid", "uuid"), key="keypair")
def register_ssh_keypair(sim: Simulator, req: Request) -> dict[str, Any]:
    """Register a public key in a keypair under a certain name."""
    return _render_keypair(sim, _store_keypair(sim, req.get("name"), req.get("publickey")))


@command("createSSHKeyPair", Param("name", required=True), Param("account"), Param("domainid", "uuid"),
         Param("projectid", "uuid"), key="keypair")
def create_ssh_keypair(sim: Simulator, req: Request) -> dict[str, Any]:
    """Create a new keypair and returns the private key (only this once)."""
    if _find_keypair(sim, req.get("name")) is not None:
        raise invalid_value(f"A key pair with name '{req.get('name')}' already exists.")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()
    kp = _store_keypair(sim, req.get("name"), pub)
    return _render_keypair(sim, kp) | {"privatekey": priv}


@command("deleteSSHKeyPair", Param("name", required=True), Param("account"), Param("domainid", "uuid"),
         Param("projectid", "uuid"), kind="success")
def delete_ssh_keypair(sim: Simulator, req: Request) -> None:
    """Deletes a keypair by name."""
    kp = _find_keypair(sim, req.get("name"))
    if kp is None:
        raise invalid_value(
            f"A key pair with name '{req.get('name')}' does not exist for account admin in specified domain id"
        )
    sim.remove("keypairs", kp["id"])


@command("listSSHKeyPairs", Param("id", "uuid", entity="keypairs"), Param("name"), Param("fingerprint"), TAG_FILTER,
         key="sshkeypair", listing=True)
def list_ssh_keypairs(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """List registered keypairs (the public key itself is never returned)."""
    out = []
    for kp in sim.col("keypairs").values():
        if req.get("name") is not None and kp["name"] != req.get("name"):
            continue  # name is an exact match for key pairs
        if req.get("id") is not None and kp["id"] != req.get("id"):
            continue
        if req.get("fingerprint") is not None and kp["fingerprint"] != req.get("fingerprint"):
            continue
        if req.get("keyword") is not None and req.get("keyword").lower() not in kp["name"].lower():
            continue
        out.append(_render_keypair(sim, kp))
    return out


# ---- tags ---------------------------------------------------------------------------------

def _check_resources(sim: Simulator, req: Request) -> tuple[str, str]:
    """Resolve resourcetype (case-insensitive) and check every resource id exists."""
    wanted = req.get("resourcetype").lower()
    rtype = next((n for n in RESOURCE_TYPES if n.lower() == wanted), None)
    if rtype is None:
        raise invalid_value(f"Invalid resource type {req.get('resourcetype')}")
    col = RESOURCE_TYPES[rtype]
    for rid in req.get("resourceids"):
        if not sim.exists(col, rid):
            raise invalid_value(f"Unable to find resource by id {rid} and type {rtype}")
    return rtype, col


@command("createTags", Param("resourceids", "list", required=True), Param("resourcetype", required=True),
         Param("tags", "map", required=True), Param("customer"), isasync=True)
def create_tags(sim: Simulator, req: Request) -> AsyncResult:
    """Creates resource tag(s)."""
    rtype, _ = _check_resources(sim, req)
    tags = [{"key": t.get("key"), "value": t.get("value", "")} for t in req.get("tags")]
    for t in tags:
        if not t["key"]:
            raise invalid_value("Tag key can't be empty")
    return AsyncResult("create_tags", {"rtype": rtype, "ids": req.get("resourceids"), "tags": tags},
                       database_only=True)


@finisher("create_tags")
def _finish_create_tags(sim: Simulator, rtype: str, ids: list[str], tags: list[dict[str, str]]) -> dict[str, Any]:
    col = RESOURCE_TYPES[rtype]
    for rid in ids:
        if not sim.exists(col, rid):
            raise ApiError(530, f"Unable to find resource by id {rid} and type {rtype}")
        have = {t["key"] for t in sim.tags_on(rid)}
        for t in tags:
            if t["key"] in have:
                raise ApiError(530, f"tag {t['key']} already on {rtype} with id {rid}")
    for rid in ids:
        for t in tags:
            sim.add("tags", {"key": t["key"], "value": t["value"], "resourcetype": rtype, "resourceid": rid,
                             **owner(sim)})
    return {"success": True}


@command("deleteTags", Param("resourceids", "list", required=True), Param("resourcetype", required=True),
         Param("tags", "map"), isasync=True)
def delete_tags(sim: Simulator, req: Request) -> AsyncResult:
    """Deleting resource tag(s)."""
    rtype, _ = _check_resources(sim, req)
    tags = [{"key": t.get("key"), "value": t.get("value")} for t in req.get("tags") or []]
    return AsyncResult("delete_tags", {"rtype": rtype, "ids": req.get("resourceids"), "tags": tags},
                       database_only=True)


@finisher("delete_tags")
def _finish_delete_tags(sim: Simulator, rtype: str, ids: list[str], tags: list[dict[str, Any]]) -> dict[str, Any]:
    for rid in ids:
        for t in sim.tags_on(rid):
            if tags and not any(t["key"] == w["key"] and w.get("value") in (None, t["value"]) for w in tags):
                continue
            sim.forget("tags", t["id"])
    return {"success": True}


@command("listTags", Param("resourcetype"), Param("resourceid"), Param("key"), Param("value"), Param("customer"),
         key="tag", listing=True)
def list_tags(sim: Simulator, req: Request) -> list[dict[str, Any]]:
    """List resource tag(s)."""
    out = []
    for t in sim.col("tags").values():
        if req.get("resourcetype") and t["resourcetype"].lower() != req.get("resourcetype").lower():
            continue
        if req.get("resourceid") and t["resourceid"] != req.get("resourceid"):
            continue
        # key and value: equality under MySQL's case-insensitive default collation
        if req.get("key") is not None and str(t["key"]).lower() != req.get("key").lower():
            continue
        if req.get("value") is not None and str(t["value"]).lower() != req.get("value").lower():
            continue
        out.append({k: v for k, v in t.items() if k != "id"})
    return out
