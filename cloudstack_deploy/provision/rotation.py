"""The cloud's part of `csdeploy hosts upgrade` (`rollout.upkeep.Rotation`): a VM out of its
role's load-balancer rules and back (removeFromLoadBalancerRule / assignToLoadBalancerRule,
the calls create-env's scaling makes), and its reboot (rebootVirtualMachine: the VM stays
Running in CloudStack's records while its guest restarts).
"""

from __future__ import annotations

from ..cloud import Cloud
from ..inventory import Host, Inventory
from .desired import lb_rule_name


class CloudRotation:
    def __init__(self, cloud: Cloud, inventory: Inventory) -> None:
        self.cloud = cloud
        self.inv = inventory
        self._left: dict[str, list[str]] = {}   # host name -> the rules it left

    async def _rules(self, host: Host) -> list[str]:
        """Ids of the rules of the host's role that have it as a member."""
        lb = self.inv.load_balancer(host.app_role) if host.app_role else None
        if lb is None:
            return []
        names = {lb_rule_name(self.inv.env, lb.role, port) for port in lb.ports}
        params = {"networkid": self.inv.network.id} if self.inv.network.id else {}
        rules = [r for r in await self.cloud.list("listLoadBalancerRules", **params) if r.get("name") in names]
        out = []
        for rule in rules:
            members = await self.cloud.list("listLoadBalancerRuleInstances", id=rule["id"])
            if any(vm.get("id") == host.vm_id for vm in members):
                out.append(rule["id"])
        return out

    async def leave(self, host: Host) -> bool:
        rules = await self._rules(host)
        for rule_id in rules:
            await self.cloud.job("removeFromLoadBalancerRule", id=rule_id, virtualmachineids=[host.vm_id])
        self._left[host.name] = rules
        return bool(rules)

    async def join(self, host: Host) -> None:
        for rule_id in self._left.pop(host.name, []):
            await self.cloud.job("assignToLoadBalancerRule", id=rule_id, virtualmachineids=[host.vm_id])

    async def reboot(self, host: Host) -> None:
        await self.cloud.job("rebootVirtualMachine", id=host.vm_id)
