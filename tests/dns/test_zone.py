"""`cloudstack_deploy.dns.Zone` against a real PowerDNS (Debian's pdns-server, SQLite backend)
through libcloud's PowerDNS driver; every answer is checked with `dig` on loopback, never
with csdeploy's own code."""

from __future__ import annotations

import pytest

from cloudstack_deploy.blueprint_dns import DnsSpec
from cloudstack_deploy.dns import DnsRecord, Zone
from cloudstack_deploy.errors import InvalidInput, OperationFailed

from .conftest import DnsZone


def spec(z: DnsZone, **changes: object) -> DnsSpec:
    base: dict[str, object] = {"provider": "powerdns", "zone": z.zone, "name": "{env}." + z.zone,
                               "credentials": {"key": "PDNS_API_KEY"},
                               "options": {"host": "127.0.0.1", "port": z.server.api_port, "api_version": "v1"},
                               "ttl": 30}
    base.update(changes)
    return DnsSpec(**base)  # type: ignore[arg-type]


def test_set_update_and_delete_are_what_dig_answers(dns_zone: DnsZone) -> None:
    z = Zone(spec(dns_zone), {"key": dns_zone.server.api_key})
    a, b = f"pr-1.{dns_zone.zone}", f"pr-2.{dns_zone.zone}"
    first = z.set([DnsRecord(a, "web", "127.0.0.11"), DnsRecord(b, "web", "127.0.0.12")])
    assert sorted(first.created) == [a, b]
    assert dns_zone.server.dig(a) == ["127.0.0.11"] and dns_zone.server.dig(b) == ["127.0.0.12"]

    again = z.set([DnsRecord(a, "web", "127.0.0.11"), DnsRecord(b, "web", "127.0.0.12")])
    assert sorted(again.unchanged) == [a, b] and not again.created and not again.updated

    moved = z.set([DnsRecord(a, "web", "127.0.0.21")], stale=[b])   # a new address; b is no longer wanted
    assert moved.updated == [a] and moved.removed == [b]
    assert dns_zone.server.dig(a) == ["127.0.0.21"] and dns_zone.server.dig(b) == []

    assert z.delete([a, b]) == [a]
    assert dns_zone.server.dig(a) == [] and dns_zone.server.dig(b) == []
    assert z.delete([a]) == []            # deleting what is gone is fine (idempotent)


def test_records_outside_the_names_are_never_touched(dns_zone: DnsZone) -> None:
    other = f"keep.{dns_zone.zone}"
    dns_zone.server.request("PATCH", f"/zones/{dns_zone.zone}.", {"rrsets": [{
        "name": other + ".", "type": "A", "ttl": 60, "changetype": "REPLACE",
        "records": [{"content": "127.0.0.99", "disabled": False}]}]})
    z = Zone(spec(dns_zone), {"key": dns_zone.server.api_key})
    z.set([DnsRecord(f"pr-3.{dns_zone.zone}", "web", "127.0.0.13")])
    z.delete([f"pr-3.{dns_zone.zone}"])
    assert dns_zone.server.dig(other) == ["127.0.0.99"]


def test_a_wrong_key_fails_clearly_without_the_key(dns_zone: DnsZone) -> None:
    wrong = "wrong-key-" + "x" * 12
    with pytest.raises(OperationFailed) as caught:
        Zone(spec(dns_zone), {"key": wrong})
    assert "powerdns" in str(caught.value) and wrong not in str(caught.value)
    assert dns_zone.server.api_key not in str(caught.value)


def test_a_missing_zone_and_an_unknown_provider_are_named(dns_zone: DnsZone) -> None:
    with pytest.raises(OperationFailed, match="no zone nosuch.test"):
        Zone(spec(dns_zone, zone="nosuch.test"), {"key": dns_zone.server.api_key})
    with pytest.raises(InvalidInput, match="not one of libcloud's DNS providers"):
        Zone(spec(dns_zone, provider="nosuchdns"), {"key": "k"})
