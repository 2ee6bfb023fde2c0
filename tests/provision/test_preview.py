"""`csdeploy preview up | down` on the simulator with a real PowerDNS: the preview's name
resolves (dig on loopback) to its entry point, a second `up` keeps the same VMs, `down`
leaves nothing in the cloud and no record in the zone, and `reap` removes an unclosed
preview past its TTL with its record. Checked with `cs` and `dig`, not with csdeploy's code.

Tags: CloudStack's `createTags`/`listTags`/`deleteTags` (api/command/user/tag/*Cmd.java) and
its admin guide ("Using Tags to Organize Resources in the Cloud": a tag is at most 255
characters), which is why `dns.settings_tags` refuses longer values.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloudstack_deploy import service
from cloudstack_deploy.dns import TAG_DNS, TAG_DNS_NAMES
from cloudstack_deploy.provision.desired import network_name
from tests.dns.conftest import DnsZone

from .conftest import REPO, SSH_TIMEOUT, CloudView, cli
from .test_reap import owned

MINIMAL = REPO / "blueprints" / "minimal.yml"


def preview_blueprint(tmp_path: Path, zone: DnsZone) -> Path:
    path = tmp_path / "preview.yml"
    path.write_text(MINIMAL.read_text() + "\n" + zone.section())
    return path


def up(bp: Path, *args: str) -> list[str]:
    return ["preview", "up", str(bp), "--skip-rollout", "--progress", "plain", "--ssh-timeout", str(SSH_TIMEOUT),
            *args]


def entry_point(view: CloudView, env: str) -> str:
    """The web role's public address as `cs` lists it (static NAT to its VM)."""
    (vm,) = [v for v in view.vms() if v["name"] == f"{env}-web-1"]
    (ip,) = [i for i in view.public_ips() if i.get("virtualmachineid") == vm["id"]]
    return ip["ipaddress"]


def test_preview_up_names_it_a_second_up_keeps_its_vms_and_down_leaves_nothing(
        home: Path, cloud_view: CloudView, dns_zone: DnsZone, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bp = preview_blueprint(tmp_path, dns_zone)
    name = f"pr-1.{dns_zone.zone}"
    outputs, summary = tmp_path / "gh-output", tmp_path / "gh-summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    planned = cli("plan", str(bp), "--env", "pr-1")
    assert planned.exit_code == 0, planned.output
    assert f"dns: A {name} -> the entry point of role web (powerdns, zone {dns_zone.zone})" in planned.output

    first = cli(*up(bp, "--pr", "1", "--github-output"))
    assert first.exit_code == 0, first.output
    address = entry_point(cloud_view, "pr-1")
    assert dns_zone.server.dig(name) == [address]
    assert f"http://{name}/" in first.stdout and "created" in first.stdout
    assert f"url=http://{name}/\nenv=pr-1\n" in outputs.read_text()
    assert f"http://{name}/" in summary.read_text() and "pr-1" in summary.read_text()
    vm_ids = {v["id"] for v in cloud_view.vms()}
    (net,) = [n for n in cloud_view.networks() if n["name"] == network_name("pr-1")]
    tags = {t["key"]: t["value"] for t in cloud_view.cs.listTags(resourceid=net["id"]).get("tag", [])}
    assert tags[TAG_DNS_NAMES] == name and dns_zone.server.api_key not in json.dumps(tags)
    assert json.loads(tags[TAG_DNS])["credentials"] == {"key": "PDNS_API_KEY"}

    second = cli(*up(bp, "--name", "pr-1", "--json"))
    assert second.exit_code == 0, second.output
    doc = json.loads(second.stdout)
    assert doc["created"] is False and doc["vms_created"] == 0 and doc["url"] == f"http://{name}/"
    assert {v["id"] for v in cloud_view.vms()} == vm_ids        # the same VMs: a redeploy, not a new env
    assert dns_zone.server.dig(name) == [address]

    down = cli("preview", "down", "--pr", "1", "--github-output")
    assert down.exit_code == 0, down.output
    assert "removed" in down.stdout and name in down.stdout
    assert dns_zone.server.dig(name) == []
    assert owned(cloud_view, "pr-1") == {}
    assert "removed" in summary.read_text()

    again = cli("preview", "down", "--name", "pr-1")          # closed twice: still fine
    assert again.exit_code == 0 and "already gone" in again.stdout


def test_teardown_removes_the_record_too(home: Path, cloud_view: CloudView, dns_zone: DnsZone,
                                         tmp_path: Path) -> None:
    bp = preview_blueprint(tmp_path, dns_zone)
    made = cli("create-env", str(bp), "--env", "pr-5", "--skip-rollout", "--progress", "plain",
               "--ssh-timeout", str(SSH_TIMEOUT))
    assert made.exit_code == 0, made.output
    assert dns_zone.server.dig(f"pr-5.{dns_zone.zone}") == [entry_point(cloud_view, "pr-5")]
    assert f"dns: pr-5.{dns_zone.zone} -> {entry_point(cloud_view, 'pr-5')}" in made.stdout
    gone = cli("teardown", "--env", "pr-5", "--yes")
    assert gone.exit_code == 0, gone.output
    assert dns_zone.server.dig(f"pr-5.{dns_zone.zone}") == [] and owned(cloud_view, "pr-5") == {}


def test_reap_removes_an_unclosed_preview_past_its_ttl_with_its_record(
        home: Path, cloud_view: CloudView, dns_zone: DnsZone, tmp_path: Path) -> None:
    bp = preview_blueprint(tmp_path, dns_zone)
    for pr, ttl in (("2", "1h"), ("3", "3d")):
        made = cli(*up(bp, "--pr", pr, "--ttl", ttl))
        assert made.exit_code == 0, made.output
    later = datetime.now(UTC) + timedelta(hours=2)        # pr-2's TTL has passed, pr-3's has not
    result = asyncio.run(service.reap(now=later))
    assert [i.env for i in result.items] == ["pr-2"] and result.ok
    assert dns_zone.server.dig(f"pr-2.{dns_zone.zone}") == [] and owned(cloud_view, "pr-2") == {}
    assert dns_zone.server.dig(f"pr-3.{dns_zone.zone}") == [entry_point(cloud_view, "pr-3")]


@pytest.mark.parametrize(("args", "message"), [
    (("--name", "PR_1"), "environment name 'PR_1' is not valid"),
    (("--pr", "12abc"), "a pull request number is a positive whole number"),
    (("--pr", "-3"), "a pull request number is a positive whole number"),
    (("--name", "pr-1", "--pr", "1"), "one of them"),
    ((), "one of them"),
    (("--pr", "1", "--from-env", "staging"), "environment 'staging' has no usable snapshots"),
    (("--pr", "1", "--ttl", "soon"), "--ttl"),
])
def test_bad_input_exits_2_and_creates_nothing(home: Path, cloud_view: CloudView, dns_zone: DnsZone,
                                               tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    bp = preview_blueprint(tmp_path, dns_zone)
    result = cli(*up(bp, *args))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert cloud_view.networks() == [] and cloud_view.vms() == []


def test_a_missing_dns_secret_or_github_file_creates_nothing(home: Path, cloud_view: CloudView, dns_zone: DnsZone,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bp = preview_blueprint(tmp_path, dns_zone)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    no_gh = cli(*up(bp, "--pr", "1", "--github-output"))
    assert no_gh.exit_code == 2 and "GITHUB_OUTPUT is not set" in no_gh.output
    monkeypatch.delenv("PDNS_API_KEY")
    no_key = cli(*up(bp, "--pr", "1"))
    assert no_key.exit_code == 2 and "secret PDNS_API_KEY is not set" in no_key.output
    assert cloud_view.networks() == [] and cloud_view.vms() == []


def test_a_reap_that_cannot_remove_the_record_keeps_the_environment(
        home: Path, cloud_view: CloudView, dns_zone: DnsZone, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the DNS credentials the record cannot go: the environment stays (its tags still
    name the record) and the reap fails naming it; with them the next reap removes both."""
    bp = preview_blueprint(tmp_path, dns_zone)
    made = cli(*up(bp, "--pr", "4", "--ttl", "1h"))
    assert made.exit_code == 0, made.output
    name = f"pr-4.{dns_zone.zone}"
    later = datetime.now(UTC) + timedelta(hours=2)
    monkeypatch.delenv("PDNS_API_KEY")
    failed = asyncio.run(service.reap(now=later))
    (item,) = failed.items
    assert not failed.ok and item.env == "pr-4" and "PDNS_API_KEY" in item.reason
    assert dns_zone.server.dig(name) == [entry_point(cloud_view, "pr-4")]
    monkeypatch.setenv("PDNS_API_KEY", dns_zone.server.api_key)
    done = asyncio.run(service.reap(now=later))
    assert done.ok and [i.env for i in done.items] == ["pr-4"]
    assert dns_zone.server.dig(name) == [] and owned(cloud_view, "pr-4") == {}
