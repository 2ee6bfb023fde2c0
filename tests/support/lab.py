"""A whole lab for a test: ``csdeploy lab up`` in a CSDEPLOY_HOME of the test's own.

Every lab test and end-to-end test works on a lab of its own (its own registry, simulator,
ports, loopback range and docker labels; see cloudstack_deploy/lab/config.py), never on the
developer's lab in ~/.csdeploy, and two test runs on one machine never meet. The images
are shared and cached, and a new lab's registry starts from the machine's seed (a copy of
the lab's images pushed once; cloudstack_deploy/lab/registry.py), so a second lab costs a
registry and a simulator: seconds (a push of the images took about a minute). At the end ``csdeploy lab down --purge`` removes everything of
that lab (its registry data, state and slot) and keeps the shared images.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudstack_deploy.lab.config import LabConfig

from .cli import REPO, Run, run_cli
from .cloud import CloudView
from .sim import cs_client

ASSETS = REPO / "cloudstack_deploy" / "lab" / "assets" / "apps"
FIGURES = Path(os.environ.get("CSDEPLOY_E2E_FIGURES") or "/tmp/csdeploy-e2e-figures.json")
"""Where the session's figures go; scripts/test gives each lab shard a file of its own (a second
session would start it afresh) and merges them into the default one at the end."""
LAB_SECRET_NAMES = ("REGISTRY_PASSWORD", "POSTGRES_PASSWORD")
UP_TIMEOUT = 1800.0


@dataclass
class Lab:
    """A running lab and the CLI's environment that targets it."""

    env: dict[str, str]              # the CLI's environment (CSDEPLOY_HOME = home)
    home: Path                       # CSDEPLOY_HOME
    endpoint: str
    key: str
    secret: str
    config: LabConfig                # the lab's lab.json
    up: Run | None = None            # the `lab up` that started it
    figures: dict[str, Any] = field(default_factory=dict)

    def csdeploy(self, *args: str, check: bool = True, timeout: float = 300) -> Run:
        """Run the CLI; with ``check`` a non-zero exit fails the test with the whole output."""
        run = run_cli(list(args), self.env, timeout=timeout)
        if check and run.code != 0:
            raise AssertionError(f"csdeploy {args[0]} failed\n" + run.explain())
        return run

    def cs(self) -> Any:
        return cs_client(self.endpoint, self.key, self.secret, poll_interval=0.2, job_timeout=300)

    @property
    def secrets(self) -> dict[str, str]:
        """The lab's secret values (what its demo blueprint deploys with): canaries for leaks."""
        lines = (self.home / "lab" / "secrets.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))

    def view(self) -> CloudView:
        return CloudView(self.cs(), self.endpoint, self.key)

    def inventory(self, env: str) -> dict[str, Any]:
        return json.loads((self.home / "envs" / env / "inventory.json").read_text())

    def record(self, section: str, **values: Any) -> None:
        """Keep a figure for the lead: printed (``-s`` shows it) and written to FIGURES."""
        self.figures.setdefault(section, {}).update(values)
        print(f"\n[e2e figures] {section}: {json.dumps(values, sort_keys=True)}")
        try:
            have = json.loads(FIGURES.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            have = {}
        have.setdefault(section, {}).update(values)
        have["written"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        FIGURES.write_text(json.dumps(have, indent=2, sort_keys=True) + "\n")


def lab_env(home: Path) -> dict[str, str]:
    """The CLI's environment for the lab in ``home``: no CLOUDSTACK_* and no lab secrets from
    the shell, so csdeploy resolves the lab as its default cloud and takes the lab's secrets
    (the path a user takes)."""
    drop = {"CLOUDSTACK_CONFIG", "CLOUDSTACK_REGION", *LAB_SECRET_NAMES}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSTACK_") and k not in drop}
    env.update(CSDEPLOY_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def _resolved_cloud(env: dict[str, str]) -> tuple[bool, str]:
    code = ("from cloudstack_deploy.cloud import read_cloud_config as r; c = r(); "
            "print(c.is_lab, c.endpoint)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        return False, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
    is_lab, endpoint = proc.stdout.split()
    return is_lab == "True", endpoint


def attach(home: Path, env: dict[str, str] | None = None, up: Run | None = None) -> Lab:
    """The lab running in ``home``, with a CLI environment that targets it and only it.

    If a ``cloudstack.ini`` (~/, ./) would make csdeploy target another cloud, the CLI gets
    the lab's endpoint explicitly, with the lab's secrets: a test never deploys elsewhere.
    """
    env = dict(env or lab_env(home))
    parser = configparser.ConfigParser()
    parser.read(home / "lab" / "cloudstack.ini")
    profile = parser["lab"]
    is_lab, endpoint = _resolved_cloud(env)
    if not is_lab:
        print(f"\n[lab] csdeploy would target {endpoint}; pointing the CLI at the lab explicitly")
        secrets = dict(line.split("=", 1) for line in (home / "lab" / "secrets.env").read_text().splitlines()
                       if "=" in line and not line.startswith("#"))
        env.update(CLOUDSTACK_ENDPOINT=profile["endpoint"], CLOUDSTACK_KEY=profile["key"],
                   CLOUDSTACK_SECRET=profile["secret"], CLOUDSTACK_POLL_INTERVAL="0.25", **secrets)
        _, endpoint = _resolved_cloud(env)
    assert endpoint == profile["endpoint"], f"the CLI targets {endpoint}, not the lab {profile['endpoint']}"
    config = LabConfig.from_json((home / "lab" / "lab.json").read_text())
    return Lab(env=env, home=home, endpoint=profile["endpoint"], key=profile["key"],
               secret=profile["secret"], config=config, up=up)


@contextmanager
def own_lab(home: Path, *up_args: str, timeout: float = UP_TIMEOUT) -> Iterator[Lab]:
    """A lab of its own in ``home``: `csdeploy lab up` there and, at the end, whatever
    happened, `csdeploy lab down --purge` (the shared images stay)."""
    env = lab_env(home)
    failed = True
    try:
        up = run_cli(["lab", "up", "--progress", "plain", *up_args], env, timeout=timeout)
        assert up.code == 0, "csdeploy lab up failed\n" + up.explain()
        yield attach(home, env, up)
        failed = False
    finally:
        down = run_cli(["lab", "down", "--purge"], env, timeout=600)
        if down.code != 0 and not failed:  # never hide the test's own failure behind this one
            raise AssertionError("csdeploy lab down --purge failed\n" + down.explain())
