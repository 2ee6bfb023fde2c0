"""The provisioner on what CloudStack really does, where the simulator used to be kinder.

Two behaviours the provisioner could have leaned on (issue 13) and does not:

- listAsyncJobs lists pending jobs only (AsyncJobManagerImpl.completeAsyncJob marks a
  finished job removed; QueryManagerImpl's search skips removed rows). The job watcher
  (cloud/client.py) takes a job missing from the listing as finished and queries it, so it
  batches its polls on both the old simulator and a real cloud.
- Several tag filters on a list call are ORed by CloudStack. The provisioner never sends
  more than one: it finds an environment by ``listTags key=csdeploy:env value=<env>`` (key
  AND value of one tag, ListTagsCmd) and by what hangs off its network, so two
  environments of one service never see each other's resources.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cs import CloudStack

from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.cloud import Cloud, CloudConfig
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from cloudstack_deploy.progress import Recorder
from cloudstack_deploy.provision.actual import read_actual
from cloudstack_deploy.provision.run import CreateOptions, create_env
from cloudstack_deploy.state import EnvState

from .cloudkit import catalog, network
from .conftest import KEY, SECRET

MINIMAL = Path(__file__).resolve().parents[2] / "blueprints" / "minimal.yml"


def _config(sim: ThreadedSimulator) -> CloudConfig:
    return CloudConfig(endpoint=sim.endpoint, key=KEY, secret=SECRET, source="test", poll_interval=0.05,
                       timeout=10)


@pytest.mark.simulator(job_seconds=0.4)
def test_the_job_watcher_does_not_need_finished_jobs_listed(simulator: ThreadedSimulator, cs: CloudStack,
                                                           cs_raw: CloudStack) -> None:
    """Fifteen jobs at once: all finish, with about one query per job (the listing told the
    watcher which were pending), although no finished job ever shows in listAsyncJobs."""
    net = network(cs, catalog(cs))

    async def run() -> tuple[list[dict], Cloud]:
        async with Cloud(_config(simulator)) as cloud:
            results = await asyncio.gather(*(
                cloud.job("createTags", resourceids=[net["id"]], resourcetype="Network",
                          tags=[{"key": f"k{i}", "value": "v"}]) for i in range(15)))
        return results, cloud

    results, cloud = asyncio.run(run())
    assert results == [{"success": True}] * 15
    assert cloud.calls["listAsyncJobs"] >= 1
    assert cloud.calls["queryAsyncJobResult"] <= 15 + 3, cloud.calls
    assert cs_raw.listAsyncJobs() == {}  # finished jobs are never listed
    assert len(cs.listTags(resourceid=net["id"])["tag"]) == 15


def test_two_environments_of_one_service_see_only_their_own(simulator: ThreadedSimulator, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two environments share every tag but csdeploy:env (service, role, kind): reading either
    finds exactly its own network, VM and address."""
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path))
    bp = load_blueprint(MINIMAL)

    async def run() -> dict[str, tuple]:
        out = {}
        async with Cloud(_config(simulator)) as cloud:
            for env in ("blue", "green"):
                await create_env(cloud, bp, env, EnvState(env, tmp_path), Recorder(),
                                 CreateOptions(ssh_timeout=30))
            for env in ("blue", "green"):
                actual = await read_actual(cloud, env)
                assert actual.network is not None
                out[env] = (actual.network["name"], sorted(actual.vms), [ip["ipaddress"] for ip in actual.ips])
        return out

    seen = asyncio.run(run())
    assert seen["blue"][0] != seen["green"][0]
    assert seen["blue"][1] == ["blue-web-1"] and seen["green"][1] == ["green-web-1"]
    assert len(seen["blue"][2]) == len(seen["green"][2]) == 1 and seen["blue"][2] != seen["green"][2]
