"""init --template: every template validates; --set fills the form or overrides a path."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import load_blueprint
from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.formats import init_blueprint
from cloudstack_deploy.formats.templates import TEMPLATES, describe_fields


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_template_writes_a_valid_blueprint(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.yml"
    result = init_blueprint(out, template=name)
    assert load_blueprint(out) == result.blueprint
    assert result.blueprint.service == name
    assert result.blueprint.registry is not None and "REGISTRY_PASSWORD" in result.blueprint.secrets


def test_fields_fill_the_form(tmp_path: Path) -> None:
    bp = init_blueprint(tmp_path / "bp.yml", template="rails",
                        sets=["service=shop", "host=shop.example.com", "web_count=3", "job_cmd=bundle exec sidekiq",
                              "db_size=50", "roles.job.count=2"]).blueprint
    web = bp.roles["web"]
    assert web.count == 3 and web.proxy is not None and web.proxy.hosts == ("shop.example.com",)
    assert web.proxy.app_port == 3000 and web.proxy.healthcheck.path == "/up"
    assert bp.roles["job"].cmd == ("bundle", "exec", "sidekiq") and bp.roles["job"].count == 2
    assert bp.accessories["db"].disk is not None and bp.accessories["db"].disk.size == 50
    assert bp.image == "registry.lab:5000/shop" and "RAILS_MASTER_KEY" in bp.secrets


def test_unknown_field_and_bad_number_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a field of template nextjs"):
        init_blueprint(tmp_path / "a.yml", template="nextjs", sets=["colour=blue"])
    with pytest.raises(InvalidInput, match="whole numbers"):
        init_blueprint(tmp_path / "a.yml", template="generic", sets=["web_count=many"])
    with pytest.raises(InvalidInput, match="no template named 'php'"):
        init_blueprint(tmp_path / "a.yml", template="php")
    assert not (tmp_path / "a.yml").exists()


def test_fields_are_listed() -> None:
    lines = describe_fields("django")
    assert lines[0].startswith("template django:") and any(line.split()[0] == "wsgi_app" for line in lines[2:-1])
