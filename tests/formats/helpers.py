"""An inventory shaped as create-env would write it for a blueprint (no cloud needed)."""

from __future__ import annotations

from pathlib import Path

from cloudstack_deploy.blueprint_schema import Blueprint
from cloudstack_deploy.inventory import Host, Inventory, Network, SSHAccess


def inventory_for(bp: Blueprint, env: str = "e1", home: Path = Path("/tmp/csdeploy-test")) -> Inventory:
    hosts: list[Host] = []
    n = 0
    for role in bp.roles.values():
        if role.run_on is not None:  # on its VMs' role's hosts (`also`)
            continue
        also = tuple(r.name for r in bp.roles.values() if r.run_on == role.name)
        for i in range(1, role.count + 1):
            n += 1
            shared = tuple(a.name for a in bp.accessories.values() if a.role == role.name) if i == 1 else ()
            hosts.append(Host(name=f"{env}-{role.name}-{i}", role=role.name, index=i, vm_id=f"vm-{n}",
                              public_ip=f"127.200.9.{n}", ssh_port=22, private_ip=f"10.1.1.{n}", host_key="k",
                              offering=role.service_offering, accessories=shared, proxy=role.proxy is not None,
                              also=also))
    for acc in bp.accessories.values():
        if acc.vm is not None:
            n += 1
            hosts.append(Host(name=f"{env}-{acc.name}-1", role=acc.name, index=1, vm_id=f"vm-{n}",
                              public_ip=f"127.200.9.{n}", ssh_port=22, private_ip=f"10.1.1.{n}", host_key="k",
                              offering=acc.vm.service_offering, accessories=(acc.name,)))
    ssh = SSHAccess(user=bp.cloud.ssh.user, key=home / "envs" / env / "id_ed25519",
                    known_hosts=home / "envs" / env / "known_hosts")
    return Inventory(env=env, service=bp.service, ssh=ssh, hosts=tuple(hosts), network=Network(None, f"csdeploy-{env}"))
