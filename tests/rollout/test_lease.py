"""The deploy lock as a lease: the lock scripts under a real `sh` (a temporary HOME plays the
primary host), and the judgement of a holder (dead or alive) in Python.

A deploy killed with SIGKILL cannot release its lock; the next deploy must take it over as
soon as the holder is known dead (its process gone from this machine, or its lease not
renewed for `lease.LEASE` seconds), from that holder only, and by one run only."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cloudstack_deploy.errors import Locked
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.rollout import history, lease
from cloudstack_deploy.rollout.commands import host as host_cmds
from cloudstack_deploy.rollout.commands.script import Script
from cloudstack_deploy.rollout.deploy import Rollout
from cloudstack_deploy.rollout.hosts import Connection, HostError, Result

from .test_commands import SECRETS, run_script
from .test_strategy import blueprint, inventory

LOCK = ".csdeploy/demo/lock"


def owner(token: str, **extra: Any) -> str:
    data = {"user": "alice", "host": "ci-1", "version": "v1", "since": int(time.time()), "ttl": 1800,
            "pid": 1, "machine": "elsewhere", "lease": lease.LEASE, "id": token, **extra}
    return json.dumps(data)


def sh(script: Script, home: Path) -> subprocess.CompletedProcess[str]:
    return run_script(script, {"PATH": os.environ["PATH"], "HOME": str(home)}, home)


def age(home: Path, seconds: float) -> None:
    """Make the lease look last renewed ``seconds`` ago."""
    when = time.time() - seconds
    for name in ("renewed", "owner.json"):
        os.utime(home / LOCK / name, (when, when))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ---- the scripts, under sh --------------------------------------------------------------------

def test_a_refused_lock_names_its_holder_and_the_age_of_its_lease(tmp_path: Path) -> None:
    assert sh(host_cmds.lock("demo", owner("aaaa1111"), break_lock=False), tmp_path).returncode == 0
    assert (tmp_path / LOCK / "renewed").exists()
    age(tmp_path, 100)
    refused = sh(host_cmds.lock("demo", owner("bbbb2222"), break_lock=False), tmp_path)
    assert refused.returncode == host_cmds.LOCK_EXIT
    holder = lease.Holder.parse(refused.stdout)
    assert holder.token == "aaaa1111" and holder.who == "alice@ci-1 deploying v1"
    assert holder.lease_age is not None and 99 <= holder.lease_age <= 110


def test_a_holder_that_died_before_writing_its_owner_file_has_a_lease_age_too(tmp_path: Path) -> None:
    (tmp_path / LOCK).mkdir(parents=True)
    refused = sh(host_cmds.lock("demo", owner("bbbb2222"), break_lock=False), tmp_path)
    assert refused.returncode == host_cmds.LOCK_EXIT
    assert lease.Holder.parse(refused.stdout).lease_age is not None


def test_take_over_takes_from_the_named_holder_only_and_only_once(tmp_path: Path) -> None:
    sh(host_cmds.lock("demo", owner("aaaa1111"), break_lock=False), tmp_path)
    wrong = sh(host_cmds.lock("demo", owner("bbbb2222"), break_lock=False, take_over="cccc3333"), tmp_path)
    assert wrong.returncode == host_cmds.LOCK_EXIT  # not the holder it judged dead: refused
    taken = sh(host_cmds.lock("demo", owner("bbbb2222"), break_lock=False, take_over="aaaa1111"), tmp_path)
    assert taken.returncode == 0, taken.stderr
    assert json.loads((tmp_path / LOCK / "owner.json").read_text())["id"] == "bbbb2222"
    # a third run that judged the same holder dead at the same moment loses the race
    again = sh(host_cmds.lock("demo", owner("dddd4444"), break_lock=False, take_over="aaaa1111"), tmp_path)
    assert again.returncode == host_cmds.LOCK_EXIT
    assert lease.Holder.parse(again.stdout).token == "bbbb2222"


def test_renew_touches_the_lease_of_its_holder_and_tells_a_holder_it_lost_the_lock(tmp_path: Path) -> None:
    sh(host_cmds.lock("demo", owner("aaaa1111"), break_lock=False), tmp_path)
    age(tmp_path, 100)
    assert sh(host_cmds.renew("demo", "aaaa1111"), tmp_path).returncode == 0
    assert time.time() - (tmp_path / LOCK / "renewed").stat().st_mtime < 5
    sh(host_cmds.lock("demo", owner("bbbb2222"), break_lock=False, take_over="aaaa1111"), tmp_path)
    lost = sh(host_cmds.renew("demo", "aaaa1111"), tmp_path)
    assert lost.returncode == host_cmds.LOST_EXIT
    assert lease.Holder.parse(lost.stdout).token == "bbbb2222"


def test_a_taken_over_run_does_not_release_its_successors_lock(tmp_path: Path) -> None:
    sh(host_cmds.lock("demo", owner("aaaa1111"), break_lock=False), tmp_path)
    sh(host_cmds.lock("demo", owner("bbbb2222"), break_lock=False, take_over="aaaa1111"), tmp_path)
    assert sh(host_cmds.unlock("demo", None, token="aaaa1111"), tmp_path).returncode == 0
    assert (tmp_path / LOCK).is_dir()
    assert sh(host_cmds.unlock("demo", None, token="bbbb2222"), tmp_path).returncode == 0
    assert not (tmp_path / LOCK).exists()


# ---- the judgement, in Python -------------------------------------------------------------

def holder(lease_age: int | None = 0, **extra: Any) -> lease.Holder:
    return lease.Holder(json.loads(owner("aaaa1111", **extra)), lease_age)


def test_a_live_holder_elsewhere_with_a_fresh_lease_is_alive() -> None:
    assert lease.why_dead(holder(5), here="mine") is None


def test_an_expired_lease_is_dead_from_any_machine() -> None:
    why = lease.why_dead(holder(lease.LEASE + 1), here="mine")
    assert why is not None and f"{lease.LEASE + 1} s ago" in why


def test_a_gone_process_on_this_machine_is_dead_at_once() -> None:
    pid = dead_pid()
    why = lease.why_dead(holder(0, pid=pid, machine=lease.machine()))
    assert why == f"its process {pid} on ci-1 is gone"
    assert lease.why_dead(holder(0, pid=os.getpid(), machine=lease.machine())) is None
    # the same pid on another machine (or another pid namespace) says nothing
    assert lease.why_dead(holder(0, pid=pid, machine=lease.machine() + "x")) is None


def test_a_holder_of_an_older_csdeploy_is_left_to_its_ttl_and_break_lock() -> None:
    old = lease.Holder({"user": "alice", "host": "ci-1", "version": "v1", "since": 1, "ttl": 1800}, 9999)
    assert lease.why_dead(old) is None
    hostile = lease.Holder({**json.loads(owner("x")), "id": "../../etc"}, 9999)
    assert hostile.token is None and lease.why_dead(hostile) is None


def test_a_refused_holder_is_looked_at_again_only_while_it_may_be_dead() -> None:
    due = lease.RENEW_EVERY + lease.RENEW_SLACK
    assert lease.next_look(holder(2), probed=False) == due - 2 + 1   # once, after its next renewal
    assert lease.next_look(holder(2), probed=True) is None           # it renewed since: alive
    assert lease.next_look(holder(30), probed=True) == lease.LEASE - 30 + 1  # missed: until it runs out
    old = lease.Holder({"user": "alice", "version": "v1", "since": 1}, 30)
    assert lease.next_look(old, probed=False) is None                # an older csdeploy: no lease


def test_the_interrupted_record_names_the_dead_deploy() -> None:
    record = lease.interrupted_record(holder(0, since=0), "its lease expired", "bob@laptop")
    assert (record.version, record.status, record.by, record.at) == ("v1", "interrupted", "alice",
                                                                     "1970-01-01T00:00:00Z")
    assert "taken over by bob@laptop" in (record.error or "")


# ---- the Rollout: take over, record, renew ----------------------------------------------------

class LocalConnection(Connection):
    """The primary host played by a directory: scripts run under the local `sh`."""

    def __init__(self, host: Any, home: Path) -> None:
        super().__init__(host, None, Counter())
        self.home = home
        self.whats: list[str] = []

    async def run(self, command: Any, *, input: str | None = None, timeout: float = 600, check: bool = True,
                  what: str = "command", read_only: bool = False) -> Result:
        self.whats.append(what)
        proc = await asyncio.create_subprocess_exec(
            "sh", "-s", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.home, env={"PATH": os.environ["PATH"], "HOME": str(self.home)})
        out, err = await proc.communicate(command.text().encode())
        res = Result(proc.returncode or 0, out.decode(), err.decode())
        if check and res.exit_status:
            raise HostError(self.host.name, f"{what} failed (exit {res.exit_status})", res.stderr)
        return res


class LocalPool:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.conns: dict[str, LocalConnection] = {}

    async def connect(self, host: Any) -> LocalConnection:
        return self.conns.setdefault(host.name, LocalConnection(host, self.home))

    async def each(self, fn: Any, hosts: Any) -> list[Any]:
        return [await fn(await self.connect(h)) for h in hosts]


def rollout() -> Rollout:
    r = Rollout(blueprint(), inventory(1), SECRETS, Recorder())
    r._facts_script = lambda host, version: Script()  # type: ignore[method-assign]  # the lock only
    return r


async def take(r: Rollout, pool: LocalPool, version: str) -> None:
    await r.read_facts(pool, [r.inv.primary], version, lock=r.lock_script(version, False))  # type: ignore[arg-type]


def test_a_deploy_takes_over_the_lock_of_a_killed_deploy_here_at_once(tmp_path: Path) -> None:
    async def scenario() -> tuple[Rollout, LocalPool]:
        first, pool = rollout(), LocalPool(tmp_path)
        await take(first, pool, "v1")
        await first._renewal.stop()  # type: ignore[union-attr]  # killed: no renewal, no unlock
        owner_file = tmp_path / ".csdeploy" / first.bp.service / "lock" / "owner.json"
        held = json.loads(owner_file.read_text())
        assert {"pid", "machine", "lease", "id"} <= held.keys()
        owner_file.write_text(json.dumps({**held, "pid": dead_pid()}))  # its process is gone
        second = rollout()
        await take(second, pool, "v2")
        await second.unlock(pool, None)  # type: ignore[arg-type]
        return second, pool

    second, pool = asyncio.run(scenario())
    (level, text), = [n for n in second.progress.notes if n[0] == "warning"]  # type: ignore[attr-defined]
    assert "took over the deploy lock of " in text and "deploying v1" in text and "is gone" in text
    records = history.parse(sh(history.read_script(second.bp.service), tmp_path).stdout)
    assert [(r.version, r.status) for r in records] == [("v1", "interrupted")]


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leases of seconds, not a minute: renewed every 0.5 s, a renewal late after 1 s more,
    dead after 3 s (file times have one-second resolution)."""
    monkeypatch.setattr(lease, "RENEW_EVERY", 0.5)
    monkeypatch.setattr(lease, "RENEW_SLACK", 1)
    monkeypatch.setattr(lease, "LEASE", 3)


def test_a_live_holder_is_refused_after_one_look_at_its_renewal(tmp_path: Path, quick: None) -> None:
    async def scenario() -> Rollout:
        first, pool = rollout(), LocalPool(tmp_path)
        await take(first, pool, "v1")
        second = rollout()
        try:
            with pytest.raises(Locked, match="locked for deploys by .* deploying v1"):
                await take(second, pool, "v2")
        finally:
            await first.unlock(pool, None)  # type: ignore[arg-type]
        return second

    started = time.monotonic()
    second = asyncio.run(scenario())
    assert time.monotonic() - started < 10
    assert [text for _, text in second.progress.notes if "looking again" in text]  # type: ignore[attr-defined]


def test_a_killed_holder_on_another_machine_is_taken_over_once_its_lease_runs_out(
        tmp_path: Path, quick: None) -> None:
    async def scenario() -> Rollout:
        first, pool = rollout(), LocalPool(tmp_path)
        await take(first, pool, "v1")
        await first._renewal.stop()  # type: ignore[union-attr]  # killed
        owner_file = tmp_path / ".csdeploy" / first.bp.service / "lock" / "owner.json"
        owner_file.write_text(json.dumps({**json.loads(owner_file.read_text()), "machine": "another"}))
        second = rollout()
        await take(second, pool, "v2")  # no --break-lock
        await second.unlock(pool, None)  # type: ignore[arg-type]
        return second

    started = time.monotonic()
    second = asyncio.run(scenario())
    assert 2 <= time.monotonic() - started < 15
    took = [text for level, text in second.progress.notes if "took over" in text]  # type: ignore[attr-defined]
    assert len(took) == 1 and "its lease was last renewed" in took[0]
    records = history.parse(sh(history.read_script(second.bp.service), tmp_path).stdout)
    assert [(r.version, r.status) for r in records] == [("v1", "interrupted")]


def test_the_holder_renews_its_lease_until_it_unlocks_and_notices_a_take_over(tmp_path: Path) -> None:
    async def scenario() -> lease.Renewal:
        r, pool = rollout(), LocalPool(tmp_path)
        await take(r, pool, "v1")
        await r._renewal.stop()  # type: ignore[union-attr]
        conn = await pool.connect(r.inv.primary)
        renewed = tmp_path / ".csdeploy" / r.bp.service / "lock" / "renewed"
        os.utime(renewed, (1, 1))
        renewal = lease.Renewal(conn, r.bp.service, r._owner["id"], r.progress, every=0.05).start()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if renewed.stat().st_mtime > 1:
                break
        assert renewed.stat().st_mtime > 1, "the lease was not renewed"
        sh(host_cmds.lock(r.bp.service, owner("bbbb2222"), break_lock=False, take_over=r._owner["id"]), tmp_path)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if renewal.lost:
                break
        await renewal.stop()
        return renewal

    renewal = asyncio.run(scenario())
    assert renewal.lost == "alice@ci-1 deploying v1"
