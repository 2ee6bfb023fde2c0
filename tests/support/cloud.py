"""What a user with the `cs` client (not csdeploy) sees in a cloud: the checks of the
provisioning, end-to-end and lab tests, made without any of csdeploy's own code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests
from cs import CloudStack

TAG_ENV = "csdeploy:env"


def tagged(item: dict[str, Any], env: str) -> bool:
    """Whether a listed resource carries ``csdeploy:env=<env>``."""
    return any(t.get("key") == TAG_ENV and t.get("value") == env for t in item.get("tags") or [])


@dataclass
class CloudView:
    """A cloud as listed through `cs` (an admin's view: every account, removed VMs too)."""

    cs: CloudStack
    endpoint: str = ""
    """The API endpoint (``.../client/api``), for the lab's admin calls (faults)."""
    key: str = ""
    """The lab API key, for the admin calls."""

    def _list(self, command: str, response_key: str, /, **params: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in params.items() if v is not None}
        return list(getattr(self.cs, command)(**params).get(response_key) or [])

    def networks(self) -> list[dict[str, Any]]:
        return self._list("listNetworks", "network", listall=True)

    def vms(self) -> list[dict[str, Any]]:
        """Every VM, Destroyed and Error ones included (the caller is an admin)."""
        return self._list("listVirtualMachines", "virtualmachine", listall=True)

    def vm(self, name: str) -> dict[str, Any]:
        found = [v for v in self.vms() if v["name"] == name]
        assert len(found) == 1, f"{len(found)} VMs named {name}: {found}"
        return found[0]

    def vm_names(self) -> Counter[str]:
        return Counter(v["name"] for v in self.vms())

    def public_ips(self) -> list[dict[str, Any]]:
        """Allocated public IPs other than source NAT."""
        return [i for i in self.all_ips() if not i.get("issourcenat")]

    def all_ips(self) -> list[dict[str, Any]]:
        return self._list("listPublicIpAddresses", "publicipaddress", listall=True)

    def volumes(self, **params: Any) -> list[dict[str, Any]]:
        """Data volumes (``type=...`` to list others)."""
        return self._list("listVolumes", "volume", **{"type": "DATADISK", "listall": True, **params})

    def keypairs(self) -> list[dict[str, Any]]:
        return self._list("listSSHKeyPairs", "sshkeypair", listall=True)

    def env_tags(self, env: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"key": TAG_ENV, "listall": True}
        if env:
            params["value"] = env
        return self._list("listTags", "tag", **params)

    def firewall(self, ip_id: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"ipaddressid": ip_id} if ip_id else {"listall": True}
        return self._list("listFirewallRules", "firewallrule", **params)

    def port_forwards(self) -> list[dict[str, Any]]:
        return self._list("listPortForwardingRules", "portforwardingrule", listall=True)

    def lb_rules(self) -> list[dict[str, Any]]:
        return self._list("listLoadBalancerRules", "loadbalancerrule", listall=True)

    def lb_members(self, rule_id: str) -> list[str]:
        """Names of the VMs assigned to a load-balancer rule."""
        return sorted(v["name"] for v in self._list("listLoadBalancerRuleInstances", "loadbalancerruleinstance",
                                                    id=rule_id))

    def everything(self) -> dict[str, list[str]]:
        """A summary of all a tenant has; empty lists mean a clean cloud."""
        return {
            "networks": [n["name"] for n in self.networks()],
            "vms": [f"{v['name']} ({v['state']})" for v in self.vms()],
            "ips": [i["ipaddress"] for i in self.all_ips()],
            "volumes": [v["name"] for v in self.volumes()],
            "keypairs": [k["name"] for k in self.keypairs()],
            "load_balancer_rules": [f"{r['name']} {r['publicip']}:{r['publicport']}" for r in self.lb_rules()],
            "tags": [f"{t['resourcetype']} {t['key']}={t['value']}" for t in self.env_tags()],
        }

    def leftovers(self, env: str, inventory: dict[str, Any]) -> dict[str, list[str]]:
        """What of ``env`` the cloud still lists: by tag, by name, and by the ids and
        addresses its inventory had (empty: nothing left)."""
        hosts = inventory.get("hosts", [])
        vm_ids = {h["vm_id"] for h in hosts}
        vm_names = {h["name"] for h in hosts}
        ips = {h["public_ip"] for h in hosts}
        lb_ips = {lb["public_ip"] for lb in inventory.get("load_balancers", [])}
        disks = {d["name"] for h in hosts for d in h.get("disks", [])}
        net_name = f"csdeploy-{env}"
        net_id = (inventory.get("network") or {}).get("id")
        found = {
            "network": [n["name"] for n in self.networks()
                        if n["name"] == net_name or n["id"] == net_id or tagged(n, env)],
            "vm": [f"{v['name']} ({v.get('state')})" for v in self.vms()
                   if v["id"] in vm_ids or v["name"] in vm_names or tagged(v, env)],
            "public_ip": [i["ipaddress"] for i in self.all_ips()
                          if i["ipaddress"] in ips | lb_ips or i.get("associatednetworkid") == net_id
                          or i.get("associatednetworkname") == net_name or tagged(i, env)],
            "volume": [v["name"] for v in self.volumes(type=None)
                       if v["name"] in disks or v.get("virtualmachineid") in vm_ids or tagged(v, env)],
            "keypair": [k["name"] for k in self.keypairs() if k["name"] == net_name],
            "firewall_rule": [f"{r.get('ipaddress')}:{r.get('startport')}" for r in self.firewall()
                              if r.get("ipaddress") in ips or tagged(r, env)],
            "load_balancer_rule": [f"{r['name']} {r.get('publicip')}:{r.get('publicport')}" for r in self.lb_rules()
                                   if r.get("publicip") in ips | lb_ips or r.get("networkid") == net_id
                                   or tagged(r, env)],
            "tag": [f"{t.get('resourcetype')} {t.get('resourceid')}" for t in self.env_tags(env)],
        }
        return {kind: items for kind, items in found.items() if items}

    # ---- the lab's control plane, as an operator uses it ------------------------------------
    def add_faults(self, *specs: str) -> None:
        """Inject faults the way an operator would: POST /admin/faults with the lab key."""
        resp = requests.post(self._admin("faults"), data=" ".join(specs), headers={"X-Lab-Key": self.key},
                             timeout=10)
        assert resp.status_code == 200, resp.text

    def clear_faults(self) -> None:
        resp = requests.delete(self._admin("faults"), headers={"X-Lab-Key": self.key}, timeout=10)
        assert resp.status_code == 200, resp.text

    def _admin(self, what: str) -> str:
        assert self.endpoint, "CloudView needs the endpoint for admin calls"
        return self.endpoint.replace("/client/api", f"/admin/{what}")
