"""`csdeploy preview up | down` on the lab with a real PowerDNS: one short story.

  a. `preview up --pr 1 --version v1`: the preview serves `demo v1`, at the address its DNS
     name resolves to (dig against the local PowerDNS), asked with that name as Host
  b. a second `up` with v2 redeploys the same environment: the same VMs, now `demo v2`
  c. `preview down`: the record is gone (dig), and nothing of pr-1 is left in the cloud

Checked with `dig`, plain HTTP and the `cs` client, never with csdeploy's own code.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.dns.conftest import DnsZone, pdns  # noqa: F401  (the session's PowerDNS, a fixture)
from tests.support.cli import Run, run_cli

from .conftest import REPO, Lab, page_version
from .test_nightly import in_cloud

ENV = "pr-1"
BARE = REPO / "tests" / "e2e" / "blueprints" / "bare.yml"

pytestmark = pytest.mark.story


@dataclass
class Story:
    lab: Lab
    zone: DnsZone
    blueprint: Path
    vms: set[str] = field(default_factory=set)

    def csdeploy(self, *args: str) -> Run:
        run = run_cli(list(args), {**self.lab.env, "PDNS_API_KEY": self.zone.server.api_key}, timeout=600)
        assert run.code == 0, run.explain()
        return run

    @property
    def name(self) -> str:
        return f"{ENV}.{self.zone.zone}"


@pytest.fixture(scope="module")
def story(lab: Lab, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    server = request.getfixturevalue("pdns")
    zone = DnsZone(server, "lab.preview.test")
    server.create_zone(zone.zone)
    path = tmp_path_factory.mktemp("preview") / "bare-dns.yml"
    path.write_text(BARE.read_text() + "\n" + zone.section())
    the_story = Story(lab, zone, path)
    env = {**lab.env, "PDNS_API_KEY": server.api_key}   # teardown removes the DNS record too
    clear = run_cli(["preview", "down", "--name", ENV, "--progress", "plain"], env, timeout=600)
    assert clear.code == 0, "could not clear leftovers of pr-1\n" + clear.explain()
    try:
        yield the_story
    finally:
        done = run_cli(["preview", "down", "--name", ENV, "--progress", "plain"], env, timeout=600)
        assert done.code == 0, "final preview down of pr-1 failed\n" + done.explain()


def page_by_name(story: Story, version: str) -> str:
    """GET / at the address the name resolves to, with the name as Host, until `demo VERSION`."""
    import time

    (address,) = story.zone.server.dig(story.name)
    last = ""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        req = urllib.request.Request(f"http://{address}/", headers={"Host": story.name})
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
                body = resp.read().decode(errors="replace")
                if page_version(body) == version:
                    return address
                last = body[:200]
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"{story.name} ({address}) does not show demo {version}: {last}")


def vm_ids(story: Story) -> set[str]:
    return {v["id"] for v in story.lab.view().vms() if v["name"].startswith(f"{ENV}-")}


def test_a_preview_up_serves_at_its_name(story: Story) -> None:
    run = story.csdeploy("preview", "up", str(story.blueprint), "--pr", "1", "--version", "v1", "--progress", "plain")
    assert f"http://{story.name}/" in run.stdout
    address = page_by_name(story, "v1")
    assert address == story.lab.inventory(ENV)["hosts"][0]["public_ip"]
    story.vms = vm_ids(story)
    assert story.vms


def test_b_a_second_up_redeploys_the_same_vms(story: Story) -> None:
    run = story.csdeploy("preview", "up", str(story.blueprint), "--name", ENV, "--version", "v2",
                         "--progress", "plain")
    assert "updated (same VMs)" in run.stdout
    page_by_name(story, "v2")
    assert vm_ids(story) == story.vms


def test_c_preview_down_leaves_nothing(story: Story) -> None:
    run = story.csdeploy("preview", "down", "--pr", "1", "--progress", "plain")
    assert story.name in run.stdout
    assert story.zone.server.dig(story.name) == []
    assert in_cloud(story.lab, ENV) == []
