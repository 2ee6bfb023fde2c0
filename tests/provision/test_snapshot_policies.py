"""Snapshot policies from the blueprint (disk.snapshots): create-env makes, changes and removes
them like any other resource, `plan` shows them, teardown removes them; checked with `cs`.

CloudStack behaviour relied on (apache/cloudstack, checked in SnapshotManagerImpl.createPolicy
and persistSnapshotPolicy, CreateSnapshotPolicyCmd, ListSnapshotPoliciesCmd,
DeleteSnapshotPoliciesCmd, DateUtil.getNextRunTime): one policy per volume and interval
(a second createSnapshotPolicy for that interval replaces it, tags included); the schedule is
MM (hourly), MM:HH (daily), MM:HH:DD (weekly, monthly); policies need a Ready volume and are
listed per volume; a deleted volume's policies go with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.errors import InvalidInput

from .conftest import DEMO, CloudView, cli, create_args

DAILY = 'accessories.db.disk.snapshots=[{every: daily, at: "03:00", keep: 3}]'


def policies(cloud_view: CloudView, volume: str = "demo-db-1-db") -> list[dict[str, Any]]:
    vol = next(v for v in cloud_view.volumes() if v["name"] == volume)
    return list(cloud_view.cs.listSnapshotPolicies(volumeid=vol["id"]).get("snapshotpolicy") or [])


def tags(item: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in item.get("tags") or []}


def test_the_demo_blueprints_db_disk_has_a_daily_policy_and_cs_lists_it(home: Path, cloud_view: CloudView) -> None:
    res = cli(*create_args("demo"))
    assert res.exit_code == 0, res.stderr
    [pol] = policies(cloud_view)
    # daily (DateUtil.IntervalType 1) at 03:00 = schedule MM:HH "00:03", in UTC, 3 kept
    assert (int(pol["intervaltype"]), pol["schedule"], pol["timezone"], pol["maxsnaps"]) == (1, "00:03", "Etc/UTC", 3)
    t = tags(pol)
    assert t["csdeploy:env"] == "demo" and t["csdeploy:role"] == "db" and t["csdeploy:disk"] == "csd-db"
    assert t["csdeploy:kind"] == "snapshot-policy" and "csdeploy:expires" in t
    # A second run changes nothing.
    again = cli("plan", str(DEMO), "--env", "demo")
    assert again.exit_code == 0 and "nothing to do" in again.stdout, again.stdout


def test_plan_shows_create_update_delete_and_create_env_does_them(home: Path, cloud_view: CloudView) -> None:
    none = "accessories.db.disk.snapshots=[]"
    assert cli(*create_args("demo", none)).exit_code == 0
    assert policies(cloud_view) == []
    shown = cli("plan", str(DEMO), "--env", "demo", "--set", DAILY)
    assert shown.exit_code == 0, shown.stderr
    assert "+ create  snapshot-policy demo-db-1-db daily  (daily at 03:00 Etc/UTC, keep 3)" in shown.stdout
    assert policies(cloud_view) == []  # plan changes nothing
    assert cli(*create_args("demo", DAILY)).exit_code == 0
    [daily] = policies(cloud_view)

    changed = ['accessories.db.disk.snapshots=[{every: daily, at: "04:15", keep: 5, timezone: Europe/Paris},'
               ' {every: weekly, day: sunday, at: "02:00", keep: 2}]']
    shown = cli("plan", str(DEMO), "--env", "demo", "--set", changed[0])
    assert "~ update  snapshot-policy demo-db-1-db daily  (-> daily at 04:15 Europe/Paris, keep 5)" in shown.stdout
    assert "+ create  snapshot-policy demo-db-1-db weekly" in shown.stdout
    res = cli(*create_args("demo", *changed))
    assert res.exit_code == 0, res.stderr
    found = {int(p["intervaltype"]): p for p in policies(cloud_view)}
    assert set(found) == {1, 2}
    assert found[1]["id"] == daily["id"]  # the same policy, changed in place
    assert (found[1]["schedule"], found[1]["timezone"], found[1]["maxsnaps"]) == ("15:04", "Europe/Paris", 5)
    assert found[2]["schedule"] == "00:02:1"  # Sunday is day 1
    assert tags(found[1])["csdeploy:env"] == "demo"  # a replaced policy keeps its tags

    shown = cli("plan", str(DEMO), "--env", "demo", "--set", none)
    assert "- delete  snapshot-policy demo-db-1-db daily" in shown.stdout
    assert "- delete  snapshot-policy demo-db-1-db weekly" in shown.stdout
    assert cli(*create_args("demo", none)).exit_code == 0
    assert policies(cloud_view) == []


def test_a_policy_made_by_hand_is_left_alone(home: Path, cloud_view: CloudView) -> None:
    """Only csdeploy's (tagged) policies are removed when the blueprint drops them."""
    assert cli(*create_args("demo")).exit_code == 0
    vol = next(v for v in cloud_view.volumes() if v["name"] == "demo-db-1-db")
    cloud_view.cs.createSnapshotPolicy(volumeid=vol["id"], intervaltype="HOURLY", schedule="30", maxsnaps=2,
                                       timezone="Etc/UTC")
    shown = cli("plan", str(DEMO), "--env", "demo")
    assert "nothing to do" in shown.stdout, shown.stdout
    assert sorted(int(p["intervaltype"]) for p in policies(cloud_view)) == [0, 1]


def test_a_new_volume_gets_the_policy(home: Path, cloud_view: CloudView) -> None:
    """A disk whose volume is replaced (here: deleted by hand) gets its policy on the new volume."""
    assert cli(*create_args("demo")).exit_code == 0
    old = next(v for v in cloud_view.volumes() if v["name"] == "demo-db-1-db")
    cloud_view.cs.detachVolume(id=old["id"], fetch_result=True)
    cloud_view.cs.deleteVolume(id=old["id"])
    res = cli(*create_args("demo"))
    assert res.exit_code == 0, res.stderr
    new = next(v for v in cloud_view.volumes() if v["name"] == "demo-db-1-db")
    assert new["id"] != old["id"]
    [pol] = policies(cloud_view)
    assert pol["volumeid"] == new["id"]


def test_teardown_removes_the_policies(home: Path, cloud_view: CloudView) -> None:
    assert cli(*create_args("demo")).exit_code == 0
    assert len(policies(cloud_view)) == 1
    res = cli("teardown", "--env", "demo", "--yes")
    assert res.exit_code == 0, res.stderr
    assert cloud_view.env_tags("demo") == []  # the policy's tags went with it


@pytest.mark.parametrize(("snapshots", "message"), [
    ("[{every: daily, keep: 9}]", "snapshots[0].keep: must be 1-8"),
    ('[{every: daily, at: "3pm", keep: 1}]', 'snapshots[0].at: expected a time of day "HH:MM"'),
    ("[{every: daily, keep: 1}, {every: daily, keep: 2}]", "snapshots[1]: a second daily schedule"),
    ("[{every: daily, keep: 1, timezone: Europe/Pariss}]", "unknown time zone 'Europe/Pariss' (did you mean 'Europe/Paris'?)"),
    ("[{every: hourly, at: '03:00', keep: 1}]", "an hourly schedule takes `minute: M`"),
    ("[{every: monthly, day: 31, keep: 1}]", "snapshots[0].day: must be 1-28"),
    ("[{every: weekly, day: 8, keep: 1}]", "snapshots[0].day: must be a day name or 1-7"),
    ("[{every: daily}]", "snapshots[0].keep: missing required field"),
    ("[{every: yearly, keep: 1}]", "expected one of hourly, daily, weekly, monthly"),
])
def test_bad_schedules_name_the_field(snapshots: str, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        load_blueprint(DEMO, overrides=[f"accessories.db.disk.snapshots={snapshots}"])
    assert f"accessories.db.disk.{message}" in str(err.value) or message in str(err.value), str(err.value)
    assert "accessories.db.disk.snapshots" in str(err.value)


def test_schedules_in_cloudstack_terms() -> None:
    bp = load_blueprint(DEMO, overrides=['roles.web.disk={size: 5, snapshots: [{every: hourly, minute: 7, keep: 2},'
                                         ' {every: monthly, day: 28, at: "23:59", keep: 1}]}'])
    hourly, monthly = bp.roles["web"].disk.snapshots
    assert (hourly.interval, hourly.schedule) == ("HOURLY", "07")
    assert (monthly.interval, monthly.schedule) == ("MONTHLY", "59:23:28")
