"""A load-balanced public port spreads real TCP connections over the rule's members.

The memory backend's VMs serve SSH with the host key their user data gives, so which VM
took a connection is told by the host key it presents. Like the virtual router's HAProxy
(HAProxyConfigurator: ``balance <algorithm>``, ``check`` per server, ``retries 3``,
``option redispatch``): only an applied rule (Active) listens, the firewall and the rule's
CIDRs are checked, a member that does not answer is passed over, and a removed member gets
no new connections while its open ones go on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
import pytest

from tests.support.netlab import NetLab, cloud_config_userdata, first_bytes, refused, ssh


@pytest.fixture
async def lab() -> AsyncIterator[NetLab]:
    async with NetLab() as lab:
        yield lab


def _vm(lab: NetLab, name: str) -> tuple[dict[str, Any], bytes]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    userdata = cloud_config_userdata({"ssh_keys": {"ed25519_private": host_key.export_private_key().decode()}})
    return lab.vm(name, keypair="kp", userdata=userdata), host_key.public_data


async def _pool(lab: NetLab, algorithm: str = "roundrobin", n: int = 3,
                cidrlist: str | None = None) -> tuple[dict, dict, list[dict], dict[bytes, str], asyncssh.SSHKey]:
    key = lab.keypair("kp")
    made = [_vm(lab, f"web-{i}") for i in range(1, n + 1)]
    vms = [vm for vm, _ in made]
    by_key = {blob: vm["name"] for vm, blob in made}
    ip = lab.public_ip()
    lab.firewall(ip, 2222)
    rule = lab.balance(ip, vms, public=2222, private=22, algorithm=algorithm, cidrlist=cidrlist)
    await lab.settle()
    return ip, rule, vms, by_key, key


async def _who(ip: dict, key: asyncssh.SSHKey, by_key: dict[bytes, str]) -> str:
    async with await ssh(ip["ipaddress"], 2222, key) as conn:
        return by_key[conn.get_server_host_key().public_data]


async def test_round_robin_takes_the_members_in_turn(lab: NetLab) -> None:
    ip, _, _, by_key, key = await _pool(lab)
    seen = [await _who(ip, key, by_key) for _ in range(6)]
    assert Counter(seen) == {"web-1": 2, "web-2": 2, "web-3": 2}
    assert seen[:3] == seen[3:]  # the same order each round


async def test_only_an_applied_rule_listens_and_only_behind_the_firewall(lab: NetLab) -> None:
    key = lab.keypair("kp")
    vm, _ = _vm(lab, "web-1")
    ip = lab.public_ip()
    rule = lab.balance(ip, [], public=2222, private=22)  # no members: state Add
    lab.firewall(ip, 2222)
    await lab.settle()
    assert await refused(ip["ipaddress"], 2222)
    rule.update(_vms=[vm["id"]], state="Active")
    await lab.settle()
    async with await ssh(ip["ipaddress"], 2222, key):
        pass
    for r in list(lab.sim.col("firewall_rules")):
        lab.sim.remove("firewall_rules", r)
    await lab.settle()
    assert await refused(ip["ipaddress"], 2222)


async def test_a_removed_member_gets_no_new_connections_and_keeps_its_open_ones(lab: NetLab) -> None:
    ip, rule, vms, by_key, key = await _pool(lab)
    async with await ssh(ip["ipaddress"], 2222, key) as held:
        first = by_key[held.get_server_host_key().public_data]
        leaving = next(vm for vm in vms if vm["name"] == first)
        rule["_vms"] = [vm["id"] for vm in vms if vm is not leaving]
        await lab.settle()
        seen = {await _who(ip, key, by_key) for _ in range(6)}
        assert seen == {vm["name"] for vm in vms} - {first}
        assert (await held.run("true")).exit_status == 126  # the open session still answers


async def test_source_keeps_a_client_on_one_member(lab: NetLab) -> None:
    ip, _, _, by_key, key = await _pool(lab, algorithm="source")
    assert len({await _who(ip, key, by_key) for _ in range(5)}) == 1


async def test_leastconn_sends_a_new_connection_to_the_member_with_fewest_open(lab: NetLab) -> None:
    """web-1 holds a connection, web-2's has closed: the next one goes to web-2, where round
    robin's turn would be web-1's."""
    ip, rule, vms, by_key, key = await _pool(lab, algorithm="leastconn", n=2)
    ids = {vm["name"]: vm["id"] for vm in vms}
    held = await ssh(ip["ipaddress"], 2222, key)
    try:
        assert by_key[held.get_server_host_key().public_data] == "web-1"
        assert await _who(ip, key, by_key) == "web-2"  # web-1 is busy
        for _ in range(200):  # the forwarder notices the close
            if lab.network.balancer.open[(rule["id"], ids["web-2"])] == 0:
                break
            await asyncio.sleep(0.01)
        assert await _who(ip, key, by_key) == "web-2"
    finally:
        held.close()
        await held.wait_closed()


async def test_a_member_that_does_not_answer_is_passed_over(lab: NetLab) -> None:
    """A Running member whose service is down (its guest stopped, as a VM whose app is not
    deployed yet): every connection still reaches one of the others."""
    ip, _, vms, by_key, key = await _pool(lab)
    await lab.network.guests[vms[1]["id"]].stop()
    seen = [await _who(ip, key, by_key) for _ in range(6)]
    assert set(seen) == {"web-1", "web-3"}


async def test_the_rules_own_cidrs_are_checked(lab: NetLab) -> None:
    ip, _, _, _, _ = await _pool(lab, cidrlist="10.0.0.0/8 192.168.0.0/16")
    assert await first_bytes(ip["ipaddress"], 2222) == b""  # accepted by the firewall, dropped by the rule


async def test_a_stopped_member_is_skipped(lab: NetLab) -> None:
    ip, _, vms, by_key, key = await _pool(lab)
    vms[0]["state"] = "Stopped"
    await lab.settle()
    assert {await _who(ip, key, by_key) for _ in range(4)} == {"web-2", "web-3"}
