"""The preview workflow's own steps (examples/github/preview.yml), run as a GitHub runner runs
them, against the simulator and a real PowerDNS: `up` on a pull request's push leaves the URL
in GITHUB_OUTPUT and the step summary and a name that resolves; `down` on close removes it.
No secret value (CloudStack key and secret, the DNS key, the SSH private key, a registry
password) is in any output file or any step's log."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import asyncssh

from tests.dns.conftest import DnsZone
from tests.support.workflow import load, run_job

from .conftest import KEY, REPO, SECRET, CloudView
from .test_reap import owned

WORKFLOW = REPO / "examples" / "github" / "preview.yml"


def _checkout(tmp_path: Path, zone: DnsZone) -> Path:
    work = tmp_path / "checkout"
    work.mkdir()
    text = (REPO / "blueprints" / "minimal.yml").read_text()
    text = text.replace("    allow_from: [127.0.0.0/8]", "    allow_from: [127.0.0.0/8]\n    key: ~/.ssh/csdeploy_ed25519")
    assert "csdeploy_ed25519" in text
    (work / "preview.yml").write_text(text + "\n" + zone.section())
    return work


def _runner_env(tmp_path: Path, home: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    csdeploy = bindir / "csdeploy"     # what `pip install` puts on PATH: the package's entry point
    csdeploy.write_text(f"#!/bin/sh\nexec {sys.executable} -m cloudstack_deploy \"$@\"\n")
    csdeploy.chmod(0o755)
    (tmp_path / "runner-home").mkdir()
    (tmp_path / "runner-temp").mkdir()
    return {
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path / "runner-home"),
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO)), "CSDEPLOY_HOME": str(home),
        "CLOUDSTACK_POLL_INTERVAL": "0.05", "CI": "true", "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request", "GITHUB_REPOSITORY": "example/app", "GITHUB_RUN_ID": "4242",
        "GITHUB_SHA": "0" * 40, "GITHUB_WORKSPACE": str(tmp_path / "checkout"),
        "GITHUB_ENV": str(tmp_path / "github-env"), "GITHUB_PATH": str(tmp_path / "github-path"),
        "RUNNER_TEMP": str(tmp_path / "runner-temp"), "RUNNER_OS": "Linux",
    }


def test_the_preview_workflow_steps_publish_the_url_and_never_a_secret(
        home: Path, cloud_view: CloudView, dns_zone: DnsZone, tmp_path: Path) -> None:
    endpoint = os.environ["CLOUDSTACK_ENDPOINT"]   # the simulator's, set by the `home` fixture
    ssh_key = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    secret_values = {"CLOUDSTACK_ENDPOINT": endpoint, "CLOUDSTACK_KEY": KEY, "CLOUDSTACK_SECRET": SECRET,
                     "PDNS_API_KEY": dns_zone.server.api_key, "CSDEPLOY_SSH_KEY": ssh_key,
                     "REGISTRY_PASSWORD": "rp-" + secrets.token_hex(10), "CSDEPLOY_STATE_URL": ""}
    work = _checkout(tmp_path, dns_zone)
    base = _runner_env(tmp_path, home)
    workflow = load(WORKFLOW)
    head = "ab12cd34ef56" + "0" * 28

    def ctx(action: str) -> dict[str, object]:
        return {"secrets": secret_values,
                "inputs": {"blueprint": "preview.yml", "ttl": "3d", "build": False, "csdeploy": "unused",
                           "extra-args": "--skip-rollout --ssh-timeout 20"},
                "github": {"repository": "example/app", "run_id": "4242",
                           "event": {"action": action, "pull_request": {"number": 7, "head": {"sha": head}}}}}

    (tmp_path / "up").mkdir()
    up = run_job(workflow, "up", ctx=ctx("synchronize"), base_env=base, cwd=work, tmp=tmp_path / "up",
                 skip=("install csdeploy",))
    assert up.ok and [s.name for s in up.steps] == ["SSH key", "version", "preview up"], up.explain()
    name = f"pr-7.{dns_zone.zone}"
    step = up.steps[-1]
    assert step.outputs == {"url": f"http://{name}/", "env": "pr-7"}, up.explain()
    assert f"http://{name}/" in step.summary and "`ab12cd34ef56`" not in step.summary  # provision only
    (vm,) = [v for v in cloud_view.vms() if v["name"] == "pr-7-web-1"]
    (ip,) = [i for i in cloud_view.public_ips() if i.get("virtualmachineid") == vm["id"]]
    assert dns_zone.server.dig(name) == [ip["ipaddress"]]
    assert (Path(base["HOME"]) / ".ssh" / "csdeploy_ed25519").stat().st_mode & 0o077 == 0

    (tmp_path / "down").mkdir()
    down = run_job(workflow, "down", ctx=ctx("closed"), base_env=base, cwd=work, tmp=tmp_path / "down",
                   skip=("install csdeploy",))
    assert down.ok and [s.name for s in down.steps] == ["preview down"], down.explain()
    assert down.steps[0].outputs["env"] == "pr-7" and "removed" in down.steps[0].summary
    assert dns_zone.server.dig(name) == [] and owned(cloud_view, "pr-7") == {}

    logs = [s.stdout + s.stderr + s.summary + repr(s.outputs) for s in up.steps + down.steps]
    files = [p.read_text(errors="replace") for d in ("up", "down") for p in (tmp_path / d).iterdir()
             if p.name.startswith(("output-", "summary-"))]
    for value_name, value in secret_values.items():
        if value_name == "CLOUDSTACK_ENDPOINT" or not value:
            continue
        for text in logs + files:
            assert value not in text, f"{value_name}'s value leaked"
        for line in value.splitlines()[1:-1]:   # no line of the private key either
            assert all(line not in text for text in logs + files), f"{value_name}'s value leaked"
