"""A throwaway PowerDNS authoritative server for tests: Debian's ``pdns_server`` with the
SQLite backend, its database and config in a temp dir, DNS (UDP/TCP) and the HTTP API on
127.0.0.1 and free ports, an API key made per run; stopped and removed after.

The same pattern as ``tests/store/pgserver.py``: the test starts the server itself, no
system service is touched. ``scripts/lab-prereqs --test`` installs the packages
(pdns-server, pdns-backend-sqlite3, dnsutils for ``dig``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

PDNS = "/usr/sbin/pdns_server"
SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")


def installed() -> bool:
    return os.access(PDNS, os.X_OK) and SCHEMA.is_file() and shutil.which("dig") is not None


@dataclass
class PdnsServer:
    host: str
    dns_port: int
    api_port: int
    api_key: str
    dir: Path

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.api_port}/api/v1/servers/localhost"

    def request(self, method: str, path: str, body: object | None = None) -> object:
        """The HTTP API directly (checks made without libcloud or csdeploy)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={"X-API-Key": self.api_key, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def create_zone(self, zone: str) -> None:
        name = zone.rstrip(".") + "."
        self.request("POST", "/zones", {"name": name, "kind": "Native", "nameservers": [f"ns1.{name}"]})

    def dig(self, name: str, rtype: str = "A") -> list[str]:
        """What the server answers for ``name`` (``dig +short``), asked on loopback."""
        out = subprocess.run(["dig", "+short", "+time=2", "+tries=2", f"@{self.host}", "-p", str(self.dns_port),
                              name, rtype], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, f"dig failed: {out.stdout}{out.stderr}"
        return [line for line in out.stdout.split() if line]


@contextlib.contextmanager
def pdns_server() -> Iterator[PdnsServer]:
    assert installed(), "PowerDNS is not installed (apt-get install pdns-server pdns-backend-sqlite3 dnsutils)"
    top = Path(tempfile.mkdtemp(prefix="csdeploy-pdns-"))
    db = top / "pdns.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA.read_text())
    key = "pdns-" + secrets.token_hex(12)
    dns_port, api_port = free_port(udp=True), free_port()  # PowerDNS answers on TCP and UDP
    conf = "\n".join([
        "launch=gsqlite3", f"gsqlite3-database={db}", "local-address=127.0.0.1", f"local-port={dns_port}",
        "api=yes", f"api-key={key}", "webserver=yes", "webserver-address=127.0.0.1",
        f"webserver-port={api_port}", "webserver-allow-from=127.0.0.0/8", f"socket-dir={top}",
        "guardian=no", "daemon=no", "disable-syslog=yes", "loglevel=4", "setuid=", "setgid=",
        "default-soa-content=ns1.@ hostmaster.@ 0 10800 3600 604800 60", "query-cache-ttl=0",
        "cache-ttl=0", "negquery-cache-ttl=0", "zone-cache-refresh-interval=0", "",
    ])
    (top / "pdns.conf").write_text(conf)
    os.chmod(top / "pdns.conf", 0o600)
    log = open(top / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([PDNS, f"--config-dir={top}"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = PdnsServer("127.0.0.1", dns_port, api_port, key, top)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.request("GET", "/zones")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                assert proc.poll() is None, "pdns_server exited: " + (top / "server.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "pdns_server did not answer its API in 30 s"
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(top, ignore_errors=True)
