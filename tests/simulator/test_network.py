"""Public IPs of the simulator are reachable exactly as CloudStack's rules allow.

Real sockets on 127.2xx addresses and real asyncssh clients; no mocks.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
import pytest

from cloudstack_deploy.lab.simulator.guest import (
    NO_EXEC_STATUS,
    Guest,
    GuestBackend,
    cloud_config,
    userdata_host_keys,
)
from cloudstack_deploy.lab.simulator.network import PublicRangeInUse
from tests.support.netlab import NetLab, cloud_config_userdata, first_bytes, listening, refused, ssh


@pytest.fixture
async def lab() -> AsyncIterator[NetLab]:
    async with NetLab() as lab:
        yield lab


async def _ssh_vm(lab: NetLab, name: str = "web-1", **vm_kw: object) -> tuple[dict, dict, asyncssh.SSHKey]:
    """A Running VM with keypair, static NAT and a firewall rule for 22."""
    key = lab.keypair(f"kp-{name}")
    vm = lab.vm(name, keypair=f"kp-{name}", **vm_kw)  # type: ignore[arg-type]
    ip = lab.public_ip(vm)
    lab.firewall(ip, 22)
    await lab.settle()
    return vm, ip, key


# ---- reachability ---------------------------------------------------------------------------
async def test_no_firewall_rule_means_refused(lab: NetLab) -> None:
    key = lab.keypair("kp")
    vm = lab.vm("web-1", keypair="kp")
    ip = lab.public_ip(vm)
    await lab.settle()
    assert await refused(ip["ipaddress"], 22)
    assert lab.network.servers == {}
    lab.firewall(ip, 22)
    await lab.settle()
    async with await ssh(ip["ipaddress"], 22, key):
        pass


async def test_ssh_with_keypair_and_userdata_host_key(lab: NetLab) -> None:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    userdata = cloud_config_userdata({"ssh_keys": {
        "ed25519_private": host_key.export_private_key().decode(),
        "ed25519_public": host_key.export_public_key().decode().strip(),
    }})
    vm, ip, key = await _ssh_vm(lab, userdata=userdata)
    async with await ssh(ip["ipaddress"], 22, key) as conn:
        assert conn.get_server_host_key().public_data == host_key.public_data
        result = await conn.run("id")
        assert result.exit_status == NO_EXEC_STATUS == 126
        assert "VM web-1 is a memory-backend simulator VM" in str(result.stderr)
        assert "runs no commands" in str(result.stderr)
        assert (await conn.run("true")).exit_status == 126
    # any user name works with the right key, as with a keypair on a real template
    async with await ssh(ip["ipaddress"], 22, key, username="root"):
        pass
    # known_hosts pinned to the userdata key is accepted
    pinned = asyncssh.import_known_hosts(
        f"{ip['ipaddress']} {host_key.export_public_key().decode()}")
    async with await ssh(ip["ipaddress"], 22, key, known_hosts=pinned):
        pass


async def test_wrong_key_and_password_are_refused(lab: NetLab) -> None:
    _, ip, _ = await _ssh_vm(lab)
    other = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh(ip["ipaddress"], 22, other)
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh(ip["ipaddress"], 22, None, password="debian", preferred_auth="password")


async def test_vm_without_keypair_lets_nobody_in(lab: NetLab) -> None:
    key = lab.keypair("kp")
    vm = lab.vm("nokey")
    ip = lab.public_ip(vm)
    lab.firewall(ip, 22)
    await lab.settle()
    assert (await first_bytes(ip["ipaddress"], 22)).startswith(b"SSH-2.0-")
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh(ip["ipaddress"], 22, key)


async def test_source_outside_cidrlist_is_dropped(lab: NetLab) -> None:
    key = lab.keypair("kp")
    vm = lab.vm("web-1", keypair="kp")
    ip = lab.public_ip(vm)
    rule = lab.firewall(ip, 22, cidrlist="10.0.0.0/8")
    await lab.settle()
    assert await first_bytes(ip["ipaddress"], 22) == b""  # accepted, then closed: no banner
    rule["cidrlist"] = "10.0.0.0/8,127.0.0.1/32"
    await lab.settle()
    async with await ssh(ip["ipaddress"], 22, key):
        pass


async def test_deleting_the_rule_closes_the_port(lab: NetLab) -> None:
    _, ip, key = await _ssh_vm(lab)
    rule_id = next(iter(lab.sim.col("firewall_rules")))
    rule = dict(lab.sim.col("firewall_rules")[rule_id])
    async with await ssh(ip["ipaddress"], 22, key) as conn:
        lab.sim.remove("firewall_rules", rule_id)
        await lab.settle()
        assert await refused(ip["ipaddress"], 22)
        assert (await conn.run("true")).exit_status == 126  # a live session may finish
    lab.sim.add("firewall_rules", rule)
    await lab.settle()
    async with await ssh(ip["ipaddress"], 22, key):
        pass


async def test_disabling_static_nat_and_releasing_the_ip(lab: NetLab) -> None:
    vm, ip, key = await _ssh_vm(lab)
    ip.update(isstaticnat=False, virtualmachineid=None)
    await lab.settle()
    assert await refused(ip["ipaddress"], 22)
    ip.update(isstaticnat=True, virtualmachineid=vm["id"])
    await lab.settle()
    async with await ssh(ip["ipaddress"], 22, key):
        pass
    lab.sim.remove("public_ips", ip["id"])
    await lab.settle()
    assert await refused(ip["ipaddress"], 22)


async def test_stopped_vm_closes_connections(lab: NetLab) -> None:
    vm, ip, key = await _ssh_vm(lab)
    live = await ssh(ip["ipaddress"], 22, key)
    vm["state"] = "Stopped"
    await lab.settle()
    await asyncio.wait_for(live.wait_closed(), 10)  # powering off drops sessions
    assert await first_bytes(ip["ipaddress"], 22) == b""
    assert lab.network.guests == {}
    vm["state"] = "Running"
    await lab.settle()
    async with await ssh(ip["ipaddress"], 22, key):
        pass


async def test_port_forwarding_needs_its_own_firewall_rule(lab: NetLab) -> None:
    key = lab.keypair("kp")
    vm = lab.vm("db-1", keypair="kp")
    ip = lab.public_ip()  # no static NAT
    pf = lab.forward(ip, vm, public=2222, private=22)
    lab.firewall(ip, 22)  # opens 22, which forwards nowhere
    await lab.settle()
    assert await refused(ip["ipaddress"], 2222)
    assert await refused(ip["ipaddress"], 22)
    lab.firewall(ip, 2222)
    await lab.settle()
    async with await ssh(ip["ipaddress"], 2222, key) as conn:
        assert (await conn.run("true")).exit_status == 126
    assert set(lab.network.servers) == {(ip["ipaddress"], 2222)}
    pf["cidrlist"] = "192.168.0.0/16"
    await lab.settle()
    assert await first_bytes(ip["ipaddress"], 2222) == b""


@pytest.mark.parametrize(("protocol", "start", "end"), [("all", None, None), ("tcp", 1, 65535)])
async def test_wide_rules_open_only_what_the_guest_serves(
        lab: NetLab, protocol: str, start: int | None, end: int | None) -> None:
    key = lab.keypair("kp")
    vm = lab.vm("web-1", keypair="kp")
    ip = lab.public_ip(vm)
    lab.firewall(ip, start, end, protocol=protocol)
    await lab.settle()
    assert set(lab.network.servers) == {(ip["ipaddress"], 22)}
    assert await refused(ip["ipaddress"], 80)
    async with await ssh(ip["ipaddress"], 22, key):
        pass


async def test_udp_rule_opens_no_tcp_port(lab: NetLab) -> None:
    vm = lab.vm("web-1", keypair="kp")
    ip = lab.public_ip(vm)
    lab.firewall(ip, 22, protocol="udp")
    await lab.settle()
    assert await refused(ip["ipaddress"], 22)


async def test_bind_failure_is_a_warning(lab: NetLab, caplog: pytest.LogCaptureFixture) -> None:
    key = lab.keypair("kp")
    blocked_ip = lab.public_ip(lab.vm("a", keypair="kp"))
    good_ip = lab.public_ip(lab.vm("b", keypair="kp"))
    with socket.socket() as squatter:
        squatter.bind((blocked_ip["ipaddress"], 22))
        squatter.listen()
        lab.firewall(blocked_ip, 22)
        lab.firewall(good_ip, 22)
        with caplog.at_level(logging.WARNING, logger="csdeploy.lab.simulator.network"):
            await lab.settle()
        assert f"{blocked_ip['ipaddress']}:22 cannot be opened" in caplog.text
        async with await ssh(good_ip["ipaddress"], 22, key):
            pass
    await lab.settle()  # freed: the next reconcile takes it
    async with await ssh(blocked_ip["ipaddress"], 22, key):
        pass


class _HeldOpen:
    """A host's service that keeps its connections open whatever happens, as a docker VM's
    sshd does when its container stops (the network namespace vanishes; no reset is sent)."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def __aenter__(self) -> _HeldOpen:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            writer.write(b"hello\n")
            await writer.drain()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:  # closed explicitly: Server.close() leaves them open (3.12+)
            writer.transport.abort()
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), 10)


class _HostGuest(Guest):
    """Like the docker backend's guest: it forwards to a real service and its stop does nothing."""

    def __init__(self, vm_id: str, port: int) -> None:
        super().__init__(vm_id)
        self.port = port

    def target(self, private_port: int) -> tuple[str, int] | None:
        return ("127.0.0.1", self.port) if private_port == 22 else None

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class _HostBackend(GuestBackend):
    def __init__(self, port: int) -> None:
        self.port = port

    def declared_ports(self, vm: dict[str, Any]) -> frozenset[int]:
        return frozenset({22})

    def create(self, vm: dict[str, Any]) -> Guest:
        return _HostGuest(vm["id"], self.port)


async def test_a_stopped_vm_loses_its_connections_even_if_its_host_keeps_them() -> None:
    async with _HeldOpen() as host, NetLab(backend=lambda sim: _HostBackend(host.port)) as lab:
        vm = lab.vm("web-1")
        ip = lab.public_ip(vm)
        lab.firewall(ip, 22)
        await lab.settle()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip["ipaddress"], 22), 10)
        try:
            assert await asyncio.wait_for(reader.readline(), 10) == b"hello\n"
            vm["state"] = "Stopped"
            await lab.settle()
            try:
                rest = await asyncio.wait_for(reader.read(), 10)  # EOF, not a hang
            except ConnectionResetError:
                rest = b""
            assert rest == b""
        finally:
            writer.transport.abort()


# ---- one simulator per range (issue 20) -------------------------------------------------------
async def test_a_second_network_on_a_held_range_refuses_to_start() -> None:
    """Two labs on one range would share addresses (both hand out .2 first): the second must
    not start, or its users' traffic reaches the first lab's VMs."""
    async with NetLab() as first:
        _, ip, key = await _ssh_vm(first)
        second = NetLab(public_range=first.public_range)
        second.sim.add("vms", {"name": "other", "state": "Running"})
        with pytest.raises(PublicRangeInUse) as refused_start:
            await second.start()
        message = str(refused_start.value)
        assert first.public_range in message and "another lab" in message, message
        assert "\n" not in message
        assert second.network.servers == {} and second.network.guests == {}
        async with await ssh(ip["ipaddress"], 22, key):  # the first lab serves on
            pass
    async with NetLab(public_range=first.public_range):  # released when the first stopped
        pass


async def test_an_address_the_state_opens_held_elsewhere_refuses_the_start() -> None:
    lab = NetLab()
    key = lab.keypair("kp")
    ip = lab.public_ip(lab.vm("web-1", keypair="kp"))
    lab.firewall(ip, 22)
    prefix = ip["ipaddress"].rsplit(".", 1)[0] + "."
    with socket.socket() as squatter:
        squatter.bind((ip["ipaddress"], 22))
        squatter.listen()
        with pytest.raises(PublicRangeInUse, match=rf"{ip['ipaddress']}:22 cannot be opened"):
            await lab.start()
        assert listening(prefix) == {(ip["ipaddress"], 22)}  # the squatter's only
        assert lab.network.guests == {}
    await lab.start()  # nothing of the refused start is left over: the range is free again
    try:
        async with await ssh(ip["ipaddress"], 22, key):
            pass
    finally:
        await lab.stop()


# ---- lifecycle --------------------------------------------------------------------------------
async def test_stop_leaves_no_listening_sockets() -> None:
    lab = NetLab()
    await lab.start()
    _, ip, key = await _ssh_vm(lab)
    conn = await ssh(ip["ipaddress"], 22, key)
    guest_port = lab.network.guests[next(iter(lab.network.guests))].target(22)
    assert guest_port is not None
    prefix = ip["ipaddress"].rsplit(".", 1)[0] + "."
    assert listening(prefix) == {(ip["ipaddress"], 22)}
    await lab.stop()
    assert listening(prefix) == set()
    assert await refused(*guest_port)
    assert lab.network.changed not in lab.sim.listeners
    await asyncio.wait_for(conn.wait_closed(), 10)
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert not [t for t in tasks if "_accept" in repr(t.get_coro())]


async def test_generated_host_key_survives_restart(tmp_path) -> None:
    state = tmp_path / "state.json"
    lab = NetLab(state_file=state)
    await lab.start()
    try:
        _, ip, key = await _ssh_vm(lab)
        async with await ssh(ip["ipaddress"], 22, key) as conn:
            first = conn.get_server_host_key().public_data
    finally:
        await lab.stop()
    lab.sim.save()
    again = NetLab(public_range=lab.public_range, state_file=state)
    await again.start()
    try:
        async with await ssh(ip["ipaddress"], 22, key) as conn:
            assert conn.get_server_host_key().public_data == first
    finally:
        await again.stop()


async def test_bursts_of_changes_coalesce(lab: NetLab) -> None:
    _, ip, key = await _ssh_vm(lab)
    for _ in range(200):
        lab.network.changed()
    await lab.network.settled()
    async with await ssh(ip["ipaddress"], 22, key):
        pass


# ---- cloud-init user data ---------------------------------------------------------------------
def test_cloud_config_forms() -> None:
    doc = "#cloud-config\nssh_keys: {}\n"
    plain = base64.b64encode(doc.encode()).decode()
    zipped = base64.b64encode(gzip.compress(doc.encode())).decode()
    mime = base64.b64encode((
        'Content-Type: multipart/mixed; boundary="XX"\nMIME-Version: 1.0\n\n--XX\n'
        "Content-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n--XX\n"
        f"Content-Type: text/cloud-config\n\n{doc}--XX--\n").encode()).decode()
    for userdata in (plain, zipped, mime):
        assert cloud_config(userdata) == {"ssh_keys": {}}
    script = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    for userdata in (None, "", script, "!!not base64!!"):
        assert cloud_config(userdata) is None


def test_userdata_host_keys_of_each_type() -> None:
    keys = {f"{alg}_private": asyncssh.generate_private_key(name).export_private_key().decode()
            for alg, name in (("rsa", "ssh-rsa"), ("ecdsa", "ecdsa-sha2-nistp256"),
                              ("ed25519", "ssh-ed25519"))}
    keys["dsa_private"] = "ignored"
    found = userdata_host_keys(cloud_config_userdata({"ssh_keys": keys}))
    assert sorted(k.get_algorithm() for k in found) == [
        "ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]
    assert userdata_host_keys(cloud_config_userdata({"ssh_keys": {"ed25519_private": "junk"}})) == []
