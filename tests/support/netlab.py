"""A simulator's public network without HTTP: records added directly, SSH and TCP probes.

For the public-network tests of the simulator and the provisioner's SSH wait. Each NetLab
takes a loopback /24 of its own (tests.support.sim.public_range), so listeners of other tests
and of running labs never collide with it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import yaml

from cloudstack_deploy.lab.simulator.engine import Settings, Simulator
from cloudstack_deploy.lab.simulator.guest import GuestBackend
from cloudstack_deploy.lab.simulator.network import PublicNetwork

from .sim import public_range as random_range

TIMEOUT = 10.0


def cloud_config_userdata(config: dict[str, Any]) -> str:
    """Base64 user data of a ``#cloud-config`` document, as deployVirtualMachine takes it."""
    return base64.b64encode(("#cloud-config\n" + yaml.safe_dump(config)).encode()).decode()


class NetLab:
    """A simulator plus its public network, with shortcuts to add cloud records."""

    def __init__(self, public_range: str | None = None, state_file: Path | None = None,
                 backend: Callable[[Simulator], GuestBackend] | None = None) -> None:
        self.public_range = public_range or random_range()
        self.sim = Simulator(Settings(public_range=self.public_range), state_file)
        self.network = PublicNetwork(self.sim, backend(self.sim) if backend else None)

    async def start(self) -> None:
        await self.network.start()

    async def stop(self) -> None:
        await self.network.stop()

    async def __aenter__(self) -> NetLab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def settle(self) -> None:
        """Notify listeners as the API would after a change, and wait for the network."""
        self.sim.changed()
        await asyncio.wait_for(self.network.settled(), TIMEOUT)

    # -- records --
    def keypair(self, name: str) -> asyncssh.SSHKey:
        key = asyncssh.generate_private_key("ssh-ed25519")
        self.sim.add("keypairs", {"name": name, "fingerprint": name,
                                  "_publickey": key.export_public_key().decode().strip()})
        return key

    def vm(self, name: str, keypair: str | None = None, userdata: str | None = None,
           state: str = "Running") -> dict[str, Any]:
        vm: dict[str, Any] = {"name": name, "state": state,
                              "nic": [{"networkid": "n1", "ipaddress": "10.1.1.10", "isdefault": True}]}
        if keypair:
            vm["keypairs"] = keypair
        if userdata:
            vm["_userdata"] = userdata
        return self.sim.add("vms", vm)

    def public_ip(self, vm: dict[str, Any] | None = None) -> dict[str, Any]:
        """A public IP, with static NAT to ``vm`` if given."""
        ip = self.sim.add("public_ips", {
            "ipaddress": self.sim.allocate_public_address(), "issourcenat": False,
            "isstaticnat": vm is not None, "associatednetworkid": "n1",
        })
        if vm is not None:
            ip["virtualmachineid"] = vm["id"]
        return ip

    def firewall(self, ip: dict[str, Any], start: int | None, end: int | None = None,
                 protocol: str = "tcp", cidrlist: str = "0.0.0.0/0") -> dict[str, Any]:
        return self.sim.add("firewall_rules", {
            "ipaddressid": ip["id"], "protocol": protocol, "startport": start,
            "endport": end if end is not None else start, "cidrlist": cidrlist, "state": "Active",
        })

    def forward(self, ip: dict[str, Any], vm: dict[str, Any], public: int, private: int,
                cidrlist: str = "") -> dict[str, Any]:
        return self.sim.add("pf_rules", {
            "ipaddressid": ip["id"], "protocol": "tcp", "publicport": str(public),
            "publicendport": str(public), "privateport": str(private),
            "privateendport": str(private), "virtualmachineid": vm["id"], "cidrlist": cidrlist,
            "state": "Active",
        })

    def balance(self, ip: dict[str, Any], vms: list[dict[str, Any]], public: int, private: int,
                algorithm: str = "roundrobin", cidrlist: str | None = None) -> dict[str, Any]:
        """An applied load-balancer rule (state Active) over ``vms``."""
        rule: dict[str, Any] = {
            "name": f"lb-{public}", "publicipid": ip["id"], "publicip": ip["ipaddress"], "publicport": str(public),
            "privateport": str(private), "algorithm": algorithm, "networkid": "n1",
            "state": "Active" if vms else "Add", "_vms": [vm["id"] for vm in vms],
        }
        if cidrlist is not None:
            rule["cidrlist"] = cidrlist
        return self.sim.add("lb_rules", rule)


# -- probes --
async def refused(host: str, port: int) -> bool:
    """True if nothing listens at host:port (the connection is refused)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def first_bytes(host: str, port: int) -> bytes:
    """Connect and read what the server says first (b"" if it closes without a word)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    try:
        return await asyncio.wait_for(reader.read(64), TIMEOUT)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()
        await writer.wait_closed()


async def ssh(host: str, port: int, key: asyncssh.SSHKey | None, **kw: Any) -> asyncssh.SSHClientConnection:
    """An asyncssh client using only ``key``: no agent, no ~/.ssh, host key not checked."""
    options: dict[str, Any] = {"known_hosts": None, "config": None, "agent_path": None,
                               "client_keys": [key] if key else None, "username": "debian"}
    options.update(kw)
    return await asyncio.wait_for(asyncssh.connect(host, port, **options), TIMEOUT)


def listening(prefix: str) -> set[tuple[str, int]]:
    """TCP sockets in LISTEN state whose address starts with ``prefix`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":
            continue
        hex_addr, hex_port = fields[1].split(":")
        addr = ".".join(str(int(hex_addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
        if addr.startswith(prefix):
            found.add((addr, int(hex_port, 16)))
    return found
