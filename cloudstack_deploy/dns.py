"""DNS names for an environment's entry points, through apache-libcloud's DNS drivers.

A blueprint's `dns:` section (`blueprint_dns.DnsSpec`) gives each proxy role's entry point
(its load balancer's address, else its first host's) an A record named by a pattern such as
``{env}.preview.example.com``. `publish` (create-env, preview up) creates or corrects them
and re-reads the zone to prove they answer with the right address; `unpublish` (teardown,
preview down, reap) deletes them and re-reads the zone to prove they are gone.

The cloud stays the source of truth: before any record is made, the environment's network
is tagged with the DNS settings (provider, zone, options, the credentials' secret NAMES;
never a value) and the record names. Teardown and reap read those tags, so they remove the
records from any machine, with no blueprint at hand; the tags go with the network.

libcloud is imported only here and only when a blueprint has `dns:` (the extra
``csdeploy[dns]``); its drivers are synchronous, so every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .blueprint_dns import DnsSpec
from .errors import InvalidInput, OperationFailed

if TYPE_CHECKING:
    from .blueprint import Blueprint
    from .cloud import Cloud
    from .inventory import Inventory

TAG_DNS = "csdeploy:dns"               # the settings, compact JSON (no secret values)
TAG_DNS_NAMES = "csdeploy:dns-names"   # the record names, comma-separated
#: A CloudStack tag is at most 255 characters (CloudStack's admin guide, "Using Tags to
#: Organize Resources in the Cloud"; the resource_tags table's value column).
TAG_MAX = 255


@dataclass(frozen=True)
class DnsRecord:
    """One A record: ``name`` (no trailing dot) -> ``address`` for proxy role ``role``."""

    name: str
    role: str
    address: str | None = None     # None in a plan made before the environment exists

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DnsResult:
    records: list[DnsRecord]
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    removed: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"records": [r.to_dict() for r in self.records], "created": self.created,
                "updated": self.updated, "unchanged": self.unchanged, "removed": self.removed}


# ---- what the records are (pure) -------------------------------------------------------------

def desired_records(bp: Blueprint, env: str, inventory: Inventory | None = None) -> list[DnsRecord]:
    """The A records ``env`` should have: one per proxy role, at its entry point."""
    spec = bp.dns
    if spec is None:
        return []
    proxies = [r.name for r in bp.roles.values() if r.proxy is not None]
    if len(proxies) > 1 and "{role}" not in spec.name:
        raise InvalidInput(f"dns.name '{spec.name}' gives every proxy role ({', '.join(proxies)}) the same name",
                           hint="put {role} in dns.name, e.g. '{role}-{env}.preview.example.com'")
    out = []
    for role in proxies:
        address = inventory.entrypoint(role) if inventory is not None else None
        out.append(DnsRecord(spec.record_name(env, role, bp.service), role, address))
    return out


def settings_tags(spec: DnsSpec, names: Iterable[str]) -> dict[str, str]:
    """The network tags that let teardown and reap find the records without the blueprint."""
    settings = json.dumps({"provider": spec.provider, "zone": spec.zone, "credentials": spec.credentials,
                           "options": spec.options, "ttl": spec.ttl}, separators=(",", ":"), sort_keys=True)
    tags = {TAG_DNS: settings, TAG_DNS_NAMES: ",".join(sorted(names))}
    for key, value in tags.items():
        if len(value) > TAG_MAX:
            raise InvalidInput(f"the dns section's {'settings' if key == TAG_DNS else 'record names'} take "
                               f"{len(value)} characters; a CloudStack tag holds {TAG_MAX}",
                               hint="shorten dns.options or the name pattern")
    return tags


def spec_from_tags(tags: Mapping[str, str]) -> tuple[DnsSpec, list[str]] | None:
    """The settings and names `settings_tags` wrote, or None when the network has none."""
    raw = tags.get(TAG_DNS)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        spec = DnsSpec(provider=data["provider"], zone=data["zone"], name="{env}." + data["zone"],
                       credentials=dict(data.get("credentials") or {}), options=dict(data.get("options") or {}),
                       ttl=int(data.get("ttl") or 60))
    except (ValueError, KeyError, TypeError) as exc:
        raise OperationFailed(f"the network's {TAG_DNS} tag is not csdeploy's ({exc})",
                              hint="remove the DNS records by hand, then delete the tag") from None
    names = [n for n in tags.get(TAG_DNS_NAMES, "").split(",") if n]
    return spec, names


def credential_values(spec: DnsSpec, bp: Blueprint | None = None,
                      environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's credentials by their secret names: the environment, then the cloud
    profile's secrets file, then the blueprint's ``secrets_file``. Registered for redaction."""
    from .log import register_secrets
    from .secrets import read_dotenv

    sources: list[Mapping[str, str]] = [environ if environ is not None else os.environ]
    try:
        from .cloud import read_cloud_config

        config = read_cloud_config()
        if config.secrets_file is not None and config.secrets_file.is_file():
            sources.append(read_dotenv(config.secrets_file))
    except Exception:  # noqa: BLE001  (no cloud profile: the environment alone)
        pass
    path = bp.secrets_file_path() if bp is not None else None
    if path is not None and path.is_file():
        sources.append(read_dotenv(path))
    out: dict[str, str] = {}
    for arg, name in spec.credentials.items():
        value = next((s[name] for s in sources if s.get(name)), None)
        if value is None:
            raise InvalidInput(f"dns.credentials.{arg}: secret {name} is not set",
                               hint=f"export {name} (a CI secret), or put it in the secrets file")
        out[arg] = value
    register_secrets(out.values())
    return out


# ---- the zone, through libcloud (synchronous: run in a thread) ----------------------------------

def _fqdn(name: str | None, zone: str) -> str:
    """A record name as listed by any driver (absolute with a dot, relative, or empty for the
    apex), as an absolute name without the trailing dot."""
    name = (name or "").rstrip(".")
    if not name or name == "@":
        return zone
    return name if name == zone or name.endswith("." + zone) else f"{name}.{zone}"


class Zone:
    """One DNS zone of one provider: list, set and delete A records, and re-read to prove it."""

    def __init__(self, spec: DnsSpec, credentials: Mapping[str, str]) -> None:
        self.spec = spec
        try:
            from libcloud.dns.providers import get_driver
            from libcloud.dns.types import RecordType
        except ImportError:
            raise InvalidInput("the blueprint has a dns section, and apache-libcloud is not installed",
                               hint="pip install 'cloudstack-deploy[dns]'") from None
        self._a = RecordType.A
        try:
            driver_cls = get_driver(spec.provider)
        except AttributeError:
            raise InvalidInput(f"dns.provider '{spec.provider}' is not one of libcloud's DNS providers",
                               hint="see libcloud's list of supported DNS providers (powerdns, route53, ...)") from None
        options = dict(spec.options)
        if "port" in options and isinstance(options["port"], str) and options["port"].isdigit():
            options["port"] = int(options["port"])
        self._driver = self._call("connect", lambda: driver_cls(**dict(credentials), **options))
        self._zone = self._find_zone()

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except (InvalidInput, OperationFailed):
            raise
        except Exception as exc:  # noqa: BLE001  (every driver raises its own kinds)
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise OperationFailed(f"DNS {self.spec.provider} zone {self.spec.zone}: {what} failed: {text}",
                                  hint="check dns.options (where the DNS API is) and the credentials' secrets") from None

    def _find_zone(self) -> Any:
        zones = self._call("listing zones", self._driver.list_zones)
        found = next((z for z in zones if (z.domain or "").rstrip(".") == self.spec.zone), None)
        if found is None:
            raise OperationFailed(f"DNS {self.spec.provider}: no zone {self.spec.zone} there",
                                  hint="create the zone first (csdeploy manages records, never zones)")
        return found

    def _driver_name(self, fqdn: str) -> str:
        """The name as the driver takes it: PowerDNS wants it absolute with the dot, the
        others relative to the zone."""
        if self.spec.provider == "powerdns":
            return fqdn + "."
        return "" if fqdn == self.spec.zone else fqdn[: -len(self.spec.zone) - 1]

    def a_records(self) -> dict[str, list[Any]]:
        """Every A record in the zone, by absolute name."""
        out: dict[str, list[Any]] = {}
        for r in self._call("listing records", lambda: self._driver.list_records(self._zone)):
            if str(r.type) == "A" or r.type == self._a:
                out.setdefault(_fqdn(r.name, self.spec.zone), []).append(r)
        return out

    def addresses(self, names: Iterable[str]) -> dict[str, list[str]]:
        have = self.a_records()
        return {n: sorted(r.data for r in have.get(n, [])) for n in names}

    def set(self, records: list[DnsRecord], stale: Iterable[str] = ()) -> DnsResult:
        """Make each record answer with its address (replacing another address), delete the
        ``stale`` names, then re-read the zone: anything not as wanted is an error."""
        result = DnsResult(records=records, created=[], updated=[], unchanged=[], removed=[])
        have = self.a_records()
        extra = {"ttl": self.spec.ttl}
        for rec in records:
            assert rec.address, rec
            current = have.get(rec.name, [])
            if [r.data for r in current] == [rec.address]:
                result.unchanged.append(rec.name)
                continue
            if current:
                self._call(f"updating {rec.name}", lambda rec=rec, current=current: self._driver.update_record(
                    current[0], self._driver_name(rec.name), self._a, rec.address, extra=extra))
                for r in current[1:]:
                    self._call(f"deleting {rec.name}", lambda r=r: self._driver.delete_record(r))
                result.updated.append(rec.name)
            else:
                self._call(f"creating {rec.name}", lambda rec=rec: self._driver.create_record(
                    self._driver_name(rec.name), self._zone, self._a, rec.address, extra=extra))
                result.created.append(rec.name)
        wanted = {r.name for r in records}
        gone = self.delete([n for n in stale if n not in wanted])
        result.removed = gone
        now = self.addresses(wanted)
        wrong = [f"{r.name} -> {', '.join(now[r.name]) or 'nothing'} (wanted {r.address})"
                 for r in records if now[r.name] != [r.address]]
        if wrong:
            raise OperationFailed(f"DNS {self.spec.provider} zone {self.spec.zone}: records not as set after "
                                  "writing them:\n  " + "\n  ".join(wrong), hint="re-run; check the DNS server's log")
        return result

    def delete(self, names: Iterable[str]) -> list[str]:
        """Delete the A records of ``names``, then prove none is left. Returns the names that had one."""
        names = list(names)
        if not names:
            return []
        have = self.a_records()
        removed = []
        for name in names:
            for r in have.get(name, []):
                ok = self._call(f"deleting {name}", lambda r=r: self._driver.delete_record(r))
                if ok is False:
                    raise OperationFailed(f"DNS {self.spec.provider}: deleting {name} was refused",
                                          hint="check the credentials' rights on the zone")
            if have.get(name):
                removed.append(name)
        left = {n: a for n, a in self.addresses(names).items() if a}
        if left:
            raise OperationFailed(f"DNS {self.spec.provider} zone {self.spec.zone}: still there after deleting: "
                                  + ", ".join(f"{n} -> {', '.join(a)}" for n, a in left.items()),
                                  hint="re-run the command; check the DNS server's log")
        return removed


# ---- the life cycle, tied to the environment's network tags ---------------------------------------

async def network_tags(cloud: Cloud, network_id: str) -> dict[str, str]:
    tags = await cloud.list("listTags", resourcetype="Network", resourceid=network_id)
    return {t["key"]: t.get("value", "") for t in tags if t.get("resourceid") == network_id}


async def _retag(cloud: Cloud, network_id: str, tags: dict[str, str], have: dict[str, str]) -> None:
    changed = [k for k, v in tags.items() if have.get(k) != v]
    if not changed:
        return
    old = [{"key": k} for k in changed if k in have]
    if old:
        await cloud.job("deleteTags", resourceids=[network_id], resourcetype="Network", tags=old)
    await cloud.job("createTags", resourceids=[network_id], resourcetype="Network",
                    tags=[{"key": k, "value": tags[k]} for k in changed])


async def publish(cloud: Cloud, bp: Blueprint, env: str, inventory: Inventory,
                  credentials: Mapping[str, str] | None = None) -> DnsResult | None:
    """Create or correct ``env``'s A records (None without a `dns:` section). The network is
    tagged first, so a run killed half way leaves records that teardown still finds."""
    if bp.dns is None:
        return None
    if inventory.network.id is None:
        raise OperationFailed(f"environment '{env}' has no network: no DNS records to make")
    records = desired_records(bp, env, inventory)
    missing = [r.role for r in records if not r.address]
    if missing:
        raise OperationFailed(f"no entry point for role(s) {', '.join(missing)}: no DNS record can point there")
    creds = dict(credentials) if credentials is not None else credential_values(bp.dns, bp)
    have = await network_tags(cloud, inventory.network.id)
    before = spec_from_tags(have)
    old_names = before[1] if before is not None else []
    names = {r.name for r in records} | set(old_names)
    await _retag(cloud, inventory.network.id, settings_tags(bp.dns, names), have)
    result: DnsResult = await asyncio.to_thread(lambda: Zone(bp.dns, creds).set(records, stale=old_names))
    if set(old_names) - {r.name for r in records}:  # the stale names are gone: the tag lists the current ones
        await _retag(cloud, inventory.network.id, settings_tags(bp.dns, [r.name for r in records]),
                     await network_tags(cloud, inventory.network.id))
    return result


async def unpublish(cloud: Cloud, network_id: str | None, bp: Blueprint | None = None) -> list[str]:
    """Delete the records the network's tags name and prove them gone; the names that had a
    record. Nothing to do (an empty list) when the network is gone or carries no DNS tags."""
    if network_id is None:
        return []
    found = spec_from_tags(await network_tags(cloud, network_id))
    if found is None:
        return []
    spec, names = found
    creds = credential_values(spec, bp)
    return await asyncio.to_thread(lambda: Zone(spec, creds).delete(names))


async def env_network_id(cloud: Cloud, env: str) -> str | None:
    """The id of ``env``'s network, found by its name (None when there is none)."""
    from .provision.desired import network_name

    nets = await cloud.list("listNetworks", name=network_name(env))
    return next((n["id"] for n in nets if n.get("name") == network_name(env)), None)
