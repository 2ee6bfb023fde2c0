"""Data safety on the lab, as a user lives it: the demo's PostgreSQL data is snapshotted,
the environment is torn down, and a new environment recovered from the snapshot holds
exactly the rows written before it (e2e-snap, then e2e-rec).

  a. create-env (demo blueprint, v1); three notes written (rows in PostgreSQL on the db disk)
  b. `snapshot --role db --wait`: PostgreSQL checkpointed, the disk frozen, then BackedUp
  b2. `backup --accessory db`: a pg_dump streamed into $CSDEPLOY_HOME/backups (four notes)
  b3. the db's scheduled backup (`* * * * *`, set at create-env, no `to:`): the host's timer
      has kept a dump on the db disk; `backups` lists it (WHERE host:PATH), `status` its run
  c. two more notes; teardown keeps the snapshot (`snapshots` still lists it once it is gone)
  d. `recover --env e2e-rec --from e2e-snap`: the database holds exactly the first three notes
  d2. `restore --env e2e-rec --accessory db --from e2e-snap --yes` (e2e-snap is gone by now; its
      backup is not): a file that is not a dump is refused first, rows unchanged; then the
      backup's four notes, the app behind maintenance meanwhile and serving after
  d3. Redis (the demo's, on the first web VM, keeping an append-only file): keys set, `backup
      --accessory redis`, changed, `restore --yes`: the values of the backup are back (loaded
      by Redis from the RDB and its AOF rewritten from it), the loading container is gone
  e. teardown of both with --delete-snapshots: nothing of either is left in the cloud

Everything is real: VMs are systemd containers with their own dockerd, the data disk is a
loop device the guest formats and mounts, a snapshot is a copy of it (the simulator's docker
backend), fsfreeze runs in the guest. Checks go through HTTP to the web VM's public IP and
the `cs` client.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, Lab, cloud_leftovers, environment, http, ssh

OLD, NEW = "e2e-snap", "e2e-rec"
#: OLD's PostgreSQL dumped every minute by its host's timer (step b3)
SCHEDULE = ("--set", "accessories.db.backups.schedule='* * * * *'", "--set", "accessories.db.backups.keep=2")
BLUEPRINT = str(REPO / "blueprints" / "demo.yml")

pytestmark = pytest.mark.story


@dataclass
class Story:
    lab: Lab
    first: list[str] = field(default_factory=list)
    created_at: float = 0.0
    later: list[str] = field(default_factory=list)
    backed_up: list[str] = field(default_factory=list)
    inventories: dict[str, dict[str, Any]] = field(default_factory=dict)

    def url(self, env: str) -> str:
        web = next(h for h in self.inventories[env]["hosts"] if h.get("proxy"))
        return f"http://{web['public_ip']}/"


@pytest.fixture(scope="module")
def story(lab: Lab) -> Iterator[Story]:
    for env in (OLD, NEW):  # a killed run's snapshots too: the steps count them
        lab.csdeploy("teardown", "--env", env, "--yes", "--delete-snapshots", check=False)
    with environment(lab, OLD), environment(lab, NEW):
        yield Story(lab)
        for env in (OLD, NEW):
            lab.csdeploy("teardown", "--env", env, "--yes", "--delete-snapshots", check=False)


def notes(url: str, deadline: float = 60) -> list[str]:
    end = time.monotonic() + deadline
    last = ""
    while time.monotonic() < end:
        try:
            status, body = http("GET", url + "notes")
            if status == 200:
                return [n["body"] for n in json.loads(body)]
            last = f"{status} {body[:200]}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"GET {url}notes did not answer 200 within {deadline:.0f}s; last: {last}")


def write(url: str, text: str) -> None:
    status, body = http("POST", url + "notes", text.encode())
    assert status == 201, f"POST /notes: {status} {body}"


def test_a_create_and_write_the_first_rows(story: Story) -> None:
    run = story.lab.csdeploy("create-env", BLUEPRINT, "--env", OLD, "--version", "v1", "--progress", "plain",
                             *SCHEDULE, timeout=600)
    story.created_at = time.monotonic()
    story.lab.record("snapshots", create_env_seconds=round(run.seconds, 1))
    story.inventories[OLD] = story.lab.inventory(OLD)
    tag = secrets.token_hex(4)
    story.first = [f"before the snapshot {tag} #{i}" for i in range(3)]
    for text in story.first:
        write(story.url(OLD), text)
    assert sorted(notes(story.url(OLD))) == sorted(story.first)


def test_b_snapshot_checkpoints_postgres_and_freezes_the_disk(story: Story) -> None:
    run = story.lab.csdeploy("snapshot", "--env", OLD, "--role", "db", "--wait", "--json", timeout=300)
    story.lab.record("snapshots", snapshot_seconds=round(run.seconds, 1))
    [item] = json.loads(run.stdout)["snapshots"]
    assert item["state"] == "BackedUp", item
    assert item["consistency"] == "PostgreSQL checkpoint + filesystem frozen", item
    assert item["notes"] == [], item
    # the disk was thawed: the database takes writes again
    write(story.url(OLD), "right after the snapshot")
    story.later.append("right after the snapshot")


def test_b2_backup_streams_a_dump_with_its_manifest(story: Story) -> None:
    run = story.lab.csdeploy("backup", "--env", OLD, "--accessory", "db", "--json", timeout=120)
    story.lab.record("snapshots", backup_seconds=round(run.seconds, 1))
    made = json.loads(run.stdout)
    assert (made["env"], made["accessory"], made["kind"]) == (OLD, "db", "postgres"), made
    assert made["size"] > 0 and len(made["sha256"]) == 64, made
    story.backed_up = story.first + ["right after the snapshot"]
    listed = json.loads(story.lab.csdeploy("backups", "--env", OLD, "--json").stdout)
    assert [b["id"] for b in listed if b["by"] != "schedule"] == [made["id"]]


def test_b3_the_hosts_timer_keeps_a_scheduled_dump(story: Story) -> None:
    deadline = story.created_at + 75  # the timer fires each minute from create-env's prepare on
    start = time.monotonic()
    while True:
        listed = json.loads(story.lab.csdeploy("backups", "--env", OLD, "--accessory", "db", "--json").stdout)
        scheduled = [b for b in listed if b["by"] == "schedule"]
        if scheduled or time.monotonic() > deadline:
            break
        time.sleep(2)
    story.lab.record("snapshots", scheduled_backup_wait_seconds=round(time.monotonic() - start, 1))
    assert scheduled, f"no scheduled dump on the db host within 75 s of create-env: {listed}"
    m = scheduled[0]
    assert m["destination"] == "host:/data/db/csdeploy-backups/db" and m["kind"] == "postgres", m
    assert m["size"] > 0 and len(m["sha256"]) == 64, m
    hosts = json.loads(story.lab.csdeploy("status", "--env", OLD, "--json").stdout)
    [entry] = [b for h in hosts for b in h.get("backups", [])]
    assert (entry["accessory"], entry["run_by"]) == ("db", "host"), entry
    assert entry["last_run"]["result"] == "ok", entry


def test_c_more_rows_then_teardown_keeps_the_snapshot(story: Story) -> None:
    write(story.url(OLD), "after the snapshot, lost on recovery")
    story.later.append("after the snapshot, lost on recovery")
    assert set(story.first + story.later) <= set(notes(story.url(OLD)))
    run = story.lab.csdeploy("teardown", "--env", OLD, "--yes", "--progress", "plain", timeout=300)
    assert "1 snapshot(s) kept" in run.stdout, run.explain()
    left = cloud_leftovers(story.lab, OLD, story.inventories[OLD])
    assert set(left) == {"tag"} and all(t.startswith("Snapshot ") for t in left["tag"]), left
    listed = json.loads(story.lab.csdeploy("snapshots", "--env", OLD, "--json").stdout)
    assert [(s["role"], s["disk"], s["kind"], s["state"]) for s in listed] == [("db", "csd-db", "manual", "BackedUp")]


def test_d_recover_holds_exactly_the_rows_before_the_snapshot(story: Story) -> None:
    run = story.lab.csdeploy("recover", BLUEPRINT, "--env", NEW, "--from", OLD, "--version", "v1",
                             "--progress", "plain", timeout=600)
    story.lab.record("snapshots", recover_seconds=round(run.seconds, 1))
    assert f"from {OLD}'s snapshot" in run.stdout, run.explain()
    story.inventories[NEW] = story.lab.inventory(NEW)
    assert sorted(notes(story.url(NEW))) == sorted(story.first), run.explain()


def test_d2_restore_into_another_env_gives_the_backed_up_rows(story: Story, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.csv"
    bogus.write_text("id,body\n1,not a dump\n")
    run = story.lab.csdeploy("restore", "--env", NEW, "--accessory", "db", str(bogus), "--yes", check=False)
    assert run.code == 2 and "is not a PostgreSQL custom-format dump" in run.stderr, run.explain()
    assert sorted(notes(story.url(NEW))) == sorted(story.first), "refused: nothing changed"
    run = story.lab.csdeploy("restore", "--env", NEW, "--accessory", "db", "--from", OLD, "--yes", "--json",
                             timeout=300)
    story.lab.record("snapshots", restore_seconds=round(run.seconds, 1))
    assert json.loads(run.stdout)["maintenance"] == "on during the restore", run.explain()
    assert sorted(notes(story.url(NEW))) == sorted(story.backed_up), run.explain()


def test_d3_redis_backup_then_restore_gives_the_old_values_back(story: Story) -> None:
    host = next(h["name"] for h in story.inventories[NEW]["hosts"] if "redis" in h.get("accessories", []))

    def redis(*argv: str) -> str:
        code, out, err = ssh(story.lab, NEW, host, "docker exec demo-redis redis-cli " + " ".join(argv))
        assert code == 0, f"redis-cli {' '.join(argv)}: {err}"
        return out.strip()

    assert redis("CONFIG", "GET", "appendonly").splitlines()[-1] == "yes", "the lab's Redis keeps an AOF"
    redis("SET", "story:greeting", "before-the-backup")
    redis("RPUSH", "story:queue", "a", "b")
    run = story.lab.csdeploy("backup", "--env", NEW, "--accessory", "redis", "--json", timeout=120)
    story.lab.record("snapshots", redis_backup_seconds=round(run.seconds, 1))
    assert json.loads(run.stdout)["kind"] == "redis", run.explain()
    redis("SET", "story:greeting", "changed-after-the-backup")
    redis("SET", "story:later", "x")
    run = story.lab.csdeploy("restore", "--env", NEW, "--accessory", "redis", "--yes", "--json", timeout=300)
    story.lab.record("snapshots", redis_restore_seconds=round(run.seconds, 1))
    assert json.loads(run.stdout)["maintenance"] == "on during the restore", run.explain()
    assert redis("GET", "story:greeting") == "before-the-backup", run.explain()
    assert redis("LRANGE", "story:queue", "0", "-1").splitlines() == ["a", "b"]
    assert redis("EXISTS", "story:later") == "0"
    code, out, _ = ssh(story.lab, NEW, host, "docker ps -a --format '{{.Names}}'")
    assert "demo-redis-csdeploy-restore" not in out.split(), out
    assert sorted(notes(story.url(NEW))) == sorted(story.backed_up), "the app serves after the restore"


def test_e_teardown_with_the_snapshots_leaves_nothing(story: Story) -> None:
    for env in (NEW, OLD):
        story.lab.csdeploy("teardown", "--env", env, "--yes", "--delete-snapshots", "--progress", "plain",
                           timeout=300)
    for env in (NEW, OLD):
        left = cloud_leftovers(story.lab, env, story.inventories[env])
        assert left == {}, f"the cloud still lists resources of {env}: {left}"
