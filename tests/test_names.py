"""Every name pattern is a full match: a trailing newline (which `$` lets through) is refused.

`re.match(r"^...$")` accepts "web\\n", and such a name reaches CloudStack (and host names,
container names, env files) before anything notices; these tests pin the full-match rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.rollout.contract import check_version
from cloudstack_deploy.state import validate_env_name

DEMO = Path(__file__).resolve().parents[1] / "blueprints" / "demo.yml"


@pytest.mark.parametrize("name", ["ab\n", "demo\n", "a\n\n"])
def test_an_env_name_with_a_trailing_newline_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate_env_name(name)


@pytest.mark.parametrize("override, field", [
    ('service="demo\\n"', "service"),
    ('image="registry.lab:5000/demo-app\\n"', "image"),
    ('roles={"web\\n": {count: 1}}', "roles.web\\n"),
    ('accessories.redis.image="redis:7\\n"', "accessories.redis.image"),
    ('registry.server="registry.lab:5000\\n"', "registry.server"),
    ('registry.password="REGISTRY_PASSWORD\\n"', "registry.password"),
    ('secrets=["REGISTRY_PASSWORD\\n", POSTGRES_PASSWORD]', "secrets[0]"),
    ('env.clear={"NAME\\n": x}', "env.clear.NAME\\n"),
    ('cloud.ssh.user="root\\n"', "cloud.ssh.user"),
    ('roles.web.proxy.host="example.com\\n"', "roles.web.proxy.host"),
    ('roles.web.proxy.healthcheck.path="/up\\n"', "roles.web.proxy.healthcheck.path"),
    ('accessories.db.disk.mount="/data/db\\n"', "accessories.db.disk.mount"),
    ('accessories.db.volumes=["/data/db/x:/var/lib/x\\n"]', "accessories.db.volumes[0]"),
])
def test_a_blueprint_name_with_a_trailing_newline_is_refused(override: str, field: str) -> None:
    with pytest.raises(BlueprintError) as err:
        load_blueprint(DEMO, [override])
    fields = [p.field.replace("\n", "\\n") for p in err.value.problems]
    assert any(f.startswith(field) for f in fields), str(err.value)


def test_a_version_with_a_trailing_newline_is_refused() -> None:
    assert check_version("v1") == "v1"
    with pytest.raises(InvalidInput):
        check_version("v1\n")

