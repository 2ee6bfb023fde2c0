"""The blueprint's `dns:` section: which DNS zone gets an A record for each proxy role's entry
point, through one of apache-libcloud's DNS drivers.

    dns:
      provider: powerdns                 # a libcloud DNS provider (powerdns, route53, ...)
      zone: preview.example.com
      name: "{env}.preview.example.com"  # {env}, {role} and {service} are filled in
      credentials: {key: PDNS_API_KEY}   # the driver's arguments -> secret NAMES
      options: {host: 127.0.0.1, port: 8081, api_version: v1}   # plain driver arguments
      ttl: 60

Only the rules of the section live here (file:line problems through `Ctx`); what the records
are and how they are made is `cloudstack_deploy.dns`, which imports libcloud lazily.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any

from .blueprint_rules import (
    BAD,
    Ctx,
    TreePath,
    check_secret_name,
    check_str,
    describe,
    int_checker,
    show_key,
)

_PROVIDER_RE = re.compile(r"[a-z][a-z0-9_]{1,39}")
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})+\.?")
_ARG_RE = re.compile(r"[a-z_][a-z0-9_]{0,39}")
PLACEHOLDERS = ("env", "role", "service")
#: A sample filling of the placeholders, to check that a pattern yields DNS names.
_SAMPLE = {"env": "pr-123", "role": "web", "service": "app"}


@dataclass(frozen=True, kw_only=True)
class DnsSpec:
    """Where the A records of an environment's entry points go."""

    provider: str
    zone: str                                   # without the trailing dot
    name: str                                   # the pattern, e.g. "{env}.preview.example.com"
    credentials: dict[str, str] = field(default_factory=dict)   # driver argument -> secret name
    options: dict[str, Any] = field(default_factory=dict)       # driver argument -> plain value
    ttl: int = 60

    def record_name(self, env: str, role: str, service: str) -> str:
        return self.name.format(env=env, role=role, service=service).rstrip(".")


def _check_name(ctx: Ctx, path: TreePath, value: Any, zone: str | None) -> Any:
    if check_str(ctx, path, value) is BAD:
        return BAD
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        sample = value.format(**_SAMPLE).rstrip(".")
    except (ValueError, KeyError, IndexError):
        fields, sample = {"?"}, ""
    if not fields <= set(PLACEHOLDERS):
        ctx.add(path, f"unknown placeholder in {describe(value)}: use only "
                      + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
        return BAD
    if "env" not in fields:
        ctx.add(path, "the name must contain {env}: each environment needs names of its own")
        return BAD
    if not _DOMAIN_RE.fullmatch(sample):
        ctx.add(path, f"{describe(value)} does not make a DNS name (e.g. '{{env}}.preview.example.com')")
        return BAD
    if zone is not None and not (sample == zone or sample.endswith("." + zone)):
        ctx.add(path, f"names made by {describe(value)} are not in zone '{zone}'")
        return BAD
    return value


def _check_mapping(ctx: Ctx, path: TreePath, value: Any, item: Any) -> Any:
    if not isinstance(value, dict):
        return ctx.type_error(path, "a mapping", value)
    out: dict[str, Any] = {}
    for key, v in value.items():
        if not isinstance(key, str) or not _ARG_RE.fullmatch(key):
            ctx.add(path + (key,), f"'{show_key(str(key))}' is not a driver argument name")
            continue
        checked = item(ctx, path + (key,), v)
        if checked is not BAD:
            out[key] = checked
    return out if len(out) == len(value) else BAD


def _check_option(ctx: Ctx, path: TreePath, value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) and not (isinstance(value, str) and not value):
        return value
    return ctx.type_error(path, "a string, number or boolean", value)


_KEYS = ("provider", "zone", "name", "credentials", "options", "ttl")


def check_dns(ctx: Ctx, path: TreePath, value: Any) -> Any:
    """The `dns:` section, every problem with its line; a `DnsSpec` when it is all good."""
    if not isinstance(value, dict):
        return ctx.type_error(path, "a mapping", value)
    bad = False
    for key in value:
        if key not in _KEYS:
            ctx.add(path + (key,), f"unknown key '{show_key(str(key))}' (known: {', '.join(_KEYS)})")
            bad = True
    for key in ("provider", "zone", "name"):
        if value.get(key) is None:
            ctx.add(path + (key,), "missing required field")
            bad = True
    out: dict[str, Any] = {}
    provider = value.get("provider")
    if provider is not None:
        if not isinstance(provider, str) or not _PROVIDER_RE.fullmatch(provider):
            ctx.add(path + ("provider",), f"expected a libcloud DNS provider name (e.g. powerdns, route53), "
                                          f"got {describe(provider)}")
            bad = True
        else:
            out["provider"] = provider
    zone = value.get("zone")
    if zone is not None:
        if not isinstance(zone, str) or not _DOMAIN_RE.fullmatch(zone.lower()) or zone != zone.lower():
            ctx.add(path + ("zone",), f"expected a lower-case DNS zone such as preview.example.com, got {describe(zone)}")
            bad, zone = True, None
        else:
            zone = out["zone"] = zone.rstrip(".")
    if value.get("name") is not None:
        name = _check_name(ctx, path + ("name",), value["name"], zone)
        bad |= name is BAD
        out["name"] = name
    if value.get("credentials") is not None:
        creds = _check_mapping(ctx, path + ("credentials",), value["credentials"], check_secret_name)
        bad |= creds is BAD
        out["credentials"] = creds
    if value.get("options") is not None:
        opts = _check_mapping(ctx, path + ("options",), value["options"], _check_option)
        bad |= opts is BAD
        out["options"] = opts
    if value.get("ttl") is not None:
        ttl = int_checker(1, 86400)(ctx, path + ("ttl",), value["ttl"])
        bad |= ttl is BAD
        out["ttl"] = ttl
    return BAD if bad else DnsSpec(**out)
