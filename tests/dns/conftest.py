"""DNS fixtures: a real PowerDNS server per test session (see `pdnsserver.py`), with a zone
of its own per test. Without the packages the tests are skipped on a developer's machine and
fail in CI (``CI`` set), where ``scripts/lab-prereqs --test`` installs them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .pdnsserver import PdnsServer, installed, pdns_server


@pytest.fixture(scope="session")
def pdns() -> Iterator[PdnsServer]:
    if not installed():
        if os.environ.get("CI"):
            pytest.fail("PowerDNS is not installed: scripts/lab-prereqs --test installs it")
        pytest.skip("PowerDNS is not installed (apt-get install pdns-server pdns-backend-sqlite3 dnsutils)")
    with pdns_server() as server:
        yield server


@dataclass
class DnsZone:
    server: PdnsServer
    zone: str

    def section(self, name: str = "{env}") -> str:
        """A blueprint's `dns:` section for this zone (the key in PDNS_API_KEY)."""
        return (f"dns:\n  provider: powerdns\n  zone: {self.zone}\n  name: \"{name}.{self.zone}\"\n"
                f"  credentials: {{key: PDNS_API_KEY}}\n"
                f"  options: {{host: 127.0.0.1, port: {self.server.api_port}, api_version: v1}}\n  ttl: 30\n")


@pytest.fixture
def dns_zone(pdns: PdnsServer, monkeypatch: pytest.MonkeyPatch) -> DnsZone:
    """A fresh zone on the session's PowerDNS; its API key in the environment as PDNS_API_KEY."""
    zone = f"t{secrets.token_hex(4)}.preview.test"
    pdns.create_zone(zone)
    monkeypatch.setenv("PDNS_API_KEY", pdns.api_key)
    return DnsZone(pdns, zone)
