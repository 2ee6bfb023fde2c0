"""The import corpus: real Compose files and Kamal configs from public repositories
(tests/fixtures/corpus/{compose,kamal}/CASE/), each imported as a new user would and compared
with its expected outcome (CASE/expected.yml): roles, the image each role runs, proxy roles
with their app port and health path, accessories and their kinds, volumes, secrets, and every
note on what was not carried over (so nothing unmapped is silent).

Then each blueprint is read back (what `validate` reads) and the scripts a deploy runs are
built against a fake inventory shaped as create-env writes it (tests/formats/helpers.py): each
role starts its own image with its own volumes and environment, each accessory its own image
with its data directory on its disk.

A new case is a folder with the file as its project has it (unedited; `source` names it) and
`expected.yml` beside it; `origin` records where it came from (repository, path, commit,
licence). A real file that exposes an importer bug gets the bug fixed, not its expectation bent.

Accessory kinds and their env contracts follow the official images' entrypoints (postgres,
mysql, mariadb, mongo): see cloudstack_deploy/accessories.py.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudstack_deploy.accessories import kind_of
from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.formats import init_blueprint
from cloudstack_deploy.rollout import stages
from cloudstack_deploy.rollout.contract import accessory_env, image_ref, role_env

from .helpers import inventory_for

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
VERSION = "VERSION"
CASES = sorted(p.parent for p in CORPUS.glob("*/*/expected.yml"))


@functools.cache
def _spec(case: Path) -> dict[str, Any]:
    """The case's expected.yml (read only; read once: collection asks each case whether it is
    refused, in every pytest-xdist worker), with libyaml's loader where PyYAML has it."""
    return yaml.load((case / "expected.yml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _source(case: Path, spec: dict[str, Any]) -> Path:
    return case / spec["source"]


def _import(case: Path, spec: dict[str, Any], out: Path):
    source = _source(case, spec)
    if case.parent.name == "compose":
        return init_blueprint(out, compose=source, env_files=[case / f for f in spec.get("env_files", [])],
                              profiles=spec.get("profiles", []))
    return init_blueprint(out, kamal=source)


def _note(note: Any, source: Path) -> str:
    text = str(note)
    return text[len(str(source)) + 1:] if text.startswith(f"{source}:") else text


def summary(result: Any, source: Path) -> dict[str, Any]:
    """What a user reads off an imported blueprint, in the expected files' terms."""
    bp = result.blueprint
    roles = {}
    for name, role in bp.roles.items():
        entry: dict[str, Any] = {"image": image_ref(role.image, VERSION), "count": role.count}
        if role.build is not None or (bp.build is not None and role.image == bp.image):
            entry["built"] = True
        if role.proxy is not None:
            entry["proxy"] = {"app_port": role.proxy.app_port, "path": role.proxy.healthcheck.path}
        if role.cmd:
            entry["cmd"] = list(role.cmd) if not isinstance(role.cmd, str) else role.cmd
        if role.healthcheck is not None and role.healthcheck.cmd:
            entry["healthcheck"] = role.healthcheck.cmd
        if role.volumes:
            entry["volumes"] = [f"{v.name}:{v.path}" for v in role.volumes]
        if role.env.clear:
            entry["clear"] = dict(role.env.clear)
        if role.env.secret:
            entry["secret"] = list(role.env.secret)
        res = role.container.resources
        if res is not None and (res.cpus or res.memory):
            entry["resources"] = {k: v for k, v in (("cpus", res.cpus), ("memory", res.memory)) if v}
        roles[name] = entry
    accessories = {}
    for name, acc in bp.accessories.items():
        kind = kind_of(acc.image)
        entry = {"kind": kind.name if kind else None, "image": acc.image, "port": acc.port,
                 "on": "own VM" if acc.vm is not None else f"role {acc.role}"}
        if acc.disk is not None:
            entry["disk"] = acc.disk.mount
        if acc.volumes:
            entry["volumes"] = list(acc.volumes)
        if acc.env.clear:
            entry["clear"] = dict(acc.env.clear)
        if acc.env.secret:
            entry["secret"] = list(acc.env.secret)
        accessories[name] = entry
    return {"service": bp.service, "image": bp.image, "roles": roles, "accessories": accessories,
            "secrets": list(bp.secrets), "not_mapped": sorted(_note(n, source) for n in result.notes)}


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_import_matches_its_expected_outcome(case: Path, tmp_path: Path) -> None:
    spec = _spec(case)
    assert {"repo", "path", "commit", "licence"} <= set(spec["origin"]), "record where the file came from"
    out = tmp_path / "csdeploy.yml"
    if "refused" in spec:
        with pytest.raises(BlueprintError) as caught:
            _import(case, spec, out)
        assert str(caught.value).splitlines()[0] == f"{_source(case, spec)}:{spec['refused']}"
        assert not out.exists()
        return
    result = _import(case, spec, out)
    assert load_blueprint(out) == result.blueprint  # what was written is what validated
    got = summary(result, _source(case, spec))
    want = spec["outcome"]
    for key in ("service", "image", "roles", "accessories", "secrets"):
        assert got[key] == want[key], key
    assert got["not_mapped"] == sorted(want["not_mapped"])


@pytest.mark.parametrize("case", [c for c in CASES if "refused" not in _spec(c)],
                         ids=[f"{c.parent.name}/{c.name}" for c in CASES if "refused" not in _spec(c)])
def test_deploy_scripts_run_each_role_with_its_own_image_volumes_and_env(case: Path, tmp_path: Path) -> None:
    """The scripts `deploy` runs (what `deploy --dry-run` shows) for the imported blueprint on a
    fake inventory: every role's container runs its own image at the version, mounts its
    volumes and gets its env (its own, and the addresses of its accessories); every accessory
    runs its image with its data directory on its disk."""
    spec = _spec(case)
    out = tmp_path / "csdeploy.yml"
    bp = _import(case, spec, out).blueprint
    inventory = inventory_for(bp)
    secrets = {name: f"value-of-{name}" for name in bp.secrets}
    for name, role in bp.roles.items():
        env = role_env(bp, name, inventory, secrets, "v7")
        script = (stages.proxy_switch_script if role.proxy is not None else stages.worker_start_script)(
            bp, "e1", role, "v7", env).text()
        assert image_ref(role.image, "v7") in script, name
        for v in role.volumes:
            assert f"{v.name}:{v.path}" in script, (name, v)
        assert set(role.env.clear) <= set(env.clear) and set(role.env.secret) <= set(env.secret)
        for acc in bp.accessories.values():
            kind = kind_of(acc.image)
            if kind is not None and kind.name == "postgres":
                assert env.secret["DATABASE_URL"].startswith("postgresql://"), name
            if kind is not None and "REDIS_URL" in kind.provides and "REDIS_URL" not in role.env.clear:
                assert env.clear["REDIS_URL"].startswith("redis://10.1.1."), name
    for acc in bp.accessories.values():
        host = inventory.accessory_host(acc.name)
        assert host is not None
        script = stages.accessory_script(bp, "e1", acc, accessory_env(acc, secrets), host.private_ip).text()
        assert acc.image in script
        for volume in acc.volumes:
            assert volume in script
