"""Placement on the simulator, checked with `cs`: a role of 2+ VMs with `placement: spread`
(the default) gets one host anti-affinity group `<env>-<role>`, made before its VMs, which
are deployed into it; `root_disk_gb` sizes each VM's ROOT volume; teardown deletes the group
once the VMs are gone and proves it.

CloudStack behaviour checked in apache/cloudstack: CreateAffinityGroupCmd,
AffinityGroupServiceImpl, AffinityGroupResponse, HostAntiAffinityProcessor,
ResourceTag.ResourceObjectType (no AffinityGroup: a group is found by name and description,
never by tags) and UserVmManagerImpl (rootdisksize; affinity groups change only on a stopped VM).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import DEMO, CloudView, cli, create_args

GB = 1024**3
WEBS = ("demo-web-1", "demo-web-2", "demo-web-3")


def groups(cloud_view: CloudView) -> list[dict[str, Any]]:
    return list(cloud_view.cs.listAffinityGroups(listall=True).get("affinitygroup") or [])


def test_a_spread_role_gets_an_anti_affinity_group_with_its_vms(home: Path, cloud_view: CloudView) -> None:
    res = cli("plan", str(DEMO), "--env", "demo", "--set", "roles.web.count=3")
    assert res.exit_code == 0, res.output
    assert "+ create  affinity-group demo-web  (host anti-affinity" in res.stdout
    assert not groups(cloud_view)  # plan changed nothing

    res = cli(*create_args("demo", "roles.web.count=3"))
    assert res.exit_code == 0, res.output
    [group] = groups(cloud_view)
    ids = {cloud_view.vm(name)["id"] for name in WEBS}
    assert (group["name"], group["type"]) == ("demo-web", "host anti-affinity")
    assert set(group["virtualmachineIds"]) == ids  # the worker (count 1) is in no group
    assert [g["name"] for g in cloud_view.vm("demo-web-2")["affinitygroup"]] == ["demo-web"]
    assert not cloud_view.vm("demo-worker-1").get("affinitygroup")
    res = cli("plan", str(DEMO), "--env", "demo", "--set", "roles.web.count=3")
    assert res.stdout.strip() == "environment demo: up to date, nothing to do"

    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0, res.output
    assert "affinity-group demo-web" in res.stderr  # the progress lines
    assert not groups(cloud_view)


def test_placement_any_and_a_single_vm_make_no_group(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo", "roles.web.count=2", "roles.web.placement=any")).exit_code == 0
    assert not groups(cloud_view)


def test_a_running_role_that_gains_a_group_keeps_its_vms_where_they_are(home: Path,
                                                                        cloud_view: CloudView) -> None:
    assert cli(*create_args("demo", "roles.web.count=2", "roles.web.placement=any")).exit_code == 0
    res = cli("plan", str(DEMO), "--env", "demo", "--set", "roles.web.count=3")
    assert res.exit_code == 0, res.output
    assert "demo-web-1, demo-web-2 stay where they are" in res.stdout
    res = cli(*create_args("demo", "roles.web.count=3"))
    assert res.exit_code == 0, res.output
    [group] = groups(cloud_view)
    assert group["virtualmachineIds"] == [cloud_view.vm("demo-web-3")["id"]]
    # a group no role spreads with any more is deleted (after its VMs' changes)
    assert cli(*create_args("demo", "roles.web.count=1")).exit_code == 0
    assert not groups(cloud_view)


def test_root_disk_gb_sizes_the_root_volume(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo", "roles.web.root_disk_gb=12")).exit_code == 0
    web = cloud_view.vm("demo-web-1")
    [root] = cloud_view.volumes(type="ROOT", virtualmachineid=web["id"])
    assert root["size"] == 12 * GB
    [other] = cloud_view.volumes(type="ROOT", virtualmachineid=cloud_view.vm("demo-worker-1")["id"])
    assert other["size"] != 12 * GB


def test_bad_placement_and_root_disk_exit_2_naming_the_line(home: Path, tmp_path: Path,
                                                           cloud_view: CloudView) -> None:
    text = DEMO.read_text()
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace("  web:\n    count: 1\n", "  web:\n    count: 1\n    placement: near\n"
                                "    root_disk_gb: 0\n", 1))
    line = text.splitlines().index("  web:") + 3
    res = cli("create-env", str(bad), "--env", "demo", "--skip-rollout")
    assert res.exit_code == 2, res.output
    assert f"bad.yml:{line}" in res.output and "roles.web.placement" in res.output
    assert "expected one of spread, any" in res.output
    assert f"bad.yml:{line + 1}" in res.output and "roles.web.root_disk_gb" in res.output
    assert not cloud_view.vms() and not groups(cloud_view)
