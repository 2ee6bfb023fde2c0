"""teardown: nothing left (checked with `cs`), idempotent, works without local state, and
loud when something stays."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.errors import OperationFailed
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.provision.teardown import remaining, teardown_env
from cloudstack_deploy.state import EnvState

from .conftest import CloudView, cli, cloud_session, create, create_args


def assert_clean(cloud_view: CloudView) -> None:
    everything = cloud_view.everything()
    assert not any(everything.values()), everything


def test_teardown_leaves_nothing_in_the_cloud(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo", "roles.web.count=2")).exit_code == 0
    state = EnvState("demo")
    assert state.inventory_path.exists()
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0, res.stderr
    assert "nothing left" in res.stdout
    assert_clean(cloud_view)  # networks, VMs (Destroyed too), IPs, volumes, keypairs, tags
    # The local cache goes too: no later command targets dead addresses.
    assert not state.dir.exists()


def test_teardown_without_local_state(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    shutil.rmtree(home / "envs" / "demo")
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0, res.stderr
    assert_clean(cloud_view)


def test_teardown_of_a_port_forwarding_environment(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo", "cloud.public_access=port_forwarding")).exit_code == 0
    assert len(cloud_view.port_forwards()) == 5
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0, res.stderr
    assert_clean(cloud_view)
    assert cloud_view.port_forwards() == []


def test_teardown_is_idempotent(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    assert cli("teardown", "--env", "demo", "--yes").exit_code == 0
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0
    assert "nothing left" in res.stdout
    assert_clean(cloud_view)


def test_teardown_without_yes_and_no_terminal_refuses(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    res = cli("teardown", "--env", "demo")
    assert res.exit_code == 2 and "--yes" in res.stderr
    assert len(cloud_view.vms()) == 3


async def test_teardown_touches_only_its_environment(home: Path, cloud_view: CloudView) -> None:
    await create("demo")
    other, _ = await create("other")
    async with cloud_session() as cloud:
        await teardown_env(cloud, "demo", Recorder())
        assert await remaining(cloud, "demo") == []
    assert sorted(v["name"] for v in cloud_view.vms()) == ["other-db-1", "other-web-1", "other-worker-1"]
    assert all(v["state"] == "Running" for v in cloud_view.vms())
    assert [n["name"] for n in cloud_view.networks()] == ["csdeploy-other"]
    assert [v["name"] for v in cloud_view.volumes()] == ["other-db-1-db"]
    assert [k["name"] for k in cloud_view.keypairs()] == ["csdeploy-other"]
    assert len(cloud_view.public_ips()) == 3
    again, _ = await create("other")
    assert again.plan.empty


async def test_teardown_names_what_it_could_not_delete(home: Path, cloud_view: CloudView) -> None:
    await create("demo")
    network_id = cloud_view.networks()[0]["id"]
    cloud_view.add_faults("deleteNetwork:job:530:always")
    with pytest.raises(OperationFailed) as err:
        async with cloud_session() as cloud:
            await teardown_env(cloud, "demo", Recorder())
    assert "csdeploy-demo" in str(err.value) or network_id in str(err.value)
    assert "still in the cloud" in str(err.value)
    # Everything else went; the network stayed.
    assert cloud_view.vms() == [] and cloud_view.volumes() == [] and cloud_view.public_ips() == []
    assert [n["id"] for n in cloud_view.networks()] == [network_id]


def test_teardown_exits_1_naming_what_is_left_then_finishes(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    cloud_view.add_faults("deleteNetwork:job:530:always")
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 1
    assert "csdeploy-demo" in res.stderr and "not fully removed" in res.stderr
    assert EnvState("demo").key_path.exists()  # the state is kept while the env is not gone
    cloud_view.clear_faults()
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0, res.stderr
    assert_clean(cloud_view)


def test_teardown_finds_an_untagged_volume_left_by_a_killed_run(home: Path, cloud_view: CloudView) -> None:
    """A run killed between createVolume and createTags leaves `<env>-...` untagged; teardown
    removes it, but not the volume of another environment whose name has ours as a prefix."""
    assert cli(*create_args("demo")).exit_code == 0
    assert cli(*create_args("demo-x")).exit_code == 0
    zone = cloud_view.cs.listZones()["zone"][0]["id"]
    custom = next(o for o in cloud_view.cs.listDiskOfferings()["diskoffering"] if o["iscustomized"])
    for name in ("demo-web-1-cache", "demo-x-web-1-cache"):
        cloud_view.cs.createVolume(name=name, zoneid=zone, diskofferingid=custom["id"], size=1)
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0, res.stderr
    names = {v["name"] for v in cloud_view.volumes()}
    assert "demo-web-1-cache" not in names
    assert "demo-x-web-1-cache" in names, "another environment's volume must be left alone"


# ---- VMs the account may not expunge ---------------------------------------------------------------
def test_a_530_on_destroy_is_reported_as_it_is_not_as_a_missing_permission(
        home: Path, cloud_view: CloudView) -> None:
    """CloudStack's standard 530 text says "...contact your system administrator": teardown
    used to read "admin" in it as "may not expunge", destroy again without expunge and
    report a failure that was not the one that happened."""
    assert cli(*create_args("demo")).exit_code == 0
    cloud_view.add_faults("destroyVirtualMachine:job:530:1")
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 1
    assert "Internal error executing command" in res.stderr and "(error 530)" in res.stderr
    assert "may not expunge" not in res.stderr
    assert not [v for v in cloud_view.vms() if v["state"] == "Destroyed"]  # nothing half-done
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 0, res.stderr
    assert_clean(cloud_view)


def test_a_531_to_expunge_destroys_without_it_and_says_so(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    cloud_view.add_faults("destroyVirtualMachine:http:531:3")  # one per VM: expunge refused
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")
    assert res.exit_code == 1
    assert "this account may not expunge" in res.stderr and "expunge.delay" in res.stderr
    assert {v["state"] for v in cloud_view.vms()} == {"Destroyed"}  # destroyed, waiting for expunge
    res = cli("teardown", "--env", "demo", "--yes", "--progress", "plain")  # (expunge allowed again)
    assert res.exit_code == 0, res.stderr
    assert_clean(cloud_view)


async def test_an_account_the_cloud_says_may_not_expunge_never_asks_to(home: Path, cloud_view: CloudView) -> None:
    """listCapabilities' allowuserexpungerecovervm=false (a user account on a default cloud):
    destroy without expunge, no failed attempt first. The simulator answers as an admin, so
    only that one answer is stood in for here."""
    await create("demo")
    calls: list[str] = []
    async with cloud_session() as cloud:
        async def user_account() -> dict[str, Any]:
            return {"allowuserexpungerecovervm": False}

        cloud.capabilities = user_account  # type: ignore[method-assign]
        cloud._on_call = calls.append
        with pytest.raises(OperationFailed) as err:
            await teardown_env(cloud, "demo", Recorder())
    assert calls.count("destroyVirtualMachine") == 3
    assert {v["state"] for v in cloud_view.vms()} == {"Destroyed"}
    assert "this account may not expunge" in str(err.value)


async def test_the_capabilities_are_read_once_however_many_vms_ask(home: Path, cloud_view: CloudView) -> None:
    """Every VM's destroy asks whether to expunge; the VMs go together, so they ask at once:
    one listCapabilities per session, not one per VM (a 200-VM teardown made 200)."""
    await create("demo")
    calls: list[str] = []
    async with cloud_session() as cloud:
        cloud._on_call = calls.append
        await teardown_env(cloud, "demo", Recorder())
    assert calls.count("destroyVirtualMachine") == 3 and calls.count("listCapabilities") == 1, calls
    assert_clean(cloud_view)
