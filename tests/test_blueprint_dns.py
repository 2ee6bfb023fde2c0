"""The blueprint's `dns:` section (file:line problems, nothing guessed), the records it asks
for, the network tags that carry them to teardown and reap, and what CI gets from a preview
(`preview.py`): pure parts, no cloud and no DNS server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, loads_blueprint
from cloudstack_deploy.dns import (
    TAG_DNS,
    TAG_DNS_NAMES,
    desired_records,
    settings_tags,
    spec_from_tags,
)
from cloudstack_deploy.errors import InvalidInput
from cloudstack_deploy.preview import ci_files, preview_name, write_ci_files
from tests.support.cli import REPO

MINIMAL = (REPO / "blueprints" / "minimal.yml").read_text()
DNS = """
dns:
  provider: powerdns
  zone: preview.example.com
  name: "{env}.preview.example.com"
  credentials: {key: PDNS_API_KEY}
  options: {host: 127.0.0.1, port: 8081, api_version: v1}
"""


def bp(text: str = MINIMAL + DNS):  # type: ignore[no-untyped-def]
    return loads_blueprint(text, filename="app.yml")


def problems(text: str) -> str:
    with pytest.raises(BlueprintError) as caught:
        bp(text)
    return str(caught.value)


def test_a_dns_section_is_read_with_its_defaults() -> None:
    spec = bp().dns
    assert spec is not None and spec.provider == "powerdns" and spec.zone == "preview.example.com"
    assert spec.credentials == {"key": "PDNS_API_KEY"} and spec.options["port"] == 8081 and spec.ttl == 60
    assert bp(MINIMAL).dns is None
    records = desired_records(bp(), "pr-12")
    assert [(r.name, r.role, r.address) for r in records] == [("pr-12.preview.example.com", "web", None)]


@pytest.mark.parametrize(("change", "message"), [
    (("{env}.preview", "{who}.preview"), "dns.name: unknown placeholder"),
    (("{env}.preview.example.com", "static.preview.example.com"), "must contain {env}"),
    (("{env}.preview.example.com", "{env}.elsewhere.org"), "not in zone 'preview.example.com'"),
    (("{env}.preview.example.com", "{env}..bad"), "does not make a DNS name"),
    (("zone: preview.example.com", "zone: Preview.Example.com"), "lower-case DNS zone"),
    (("provider: powerdns", "provider: Power DNS!"), "libcloud DNS provider name"),
    (("key: PDNS_API_KEY", "key: s3cr3t-value"), "not a secret name"),
    (("  options:", "  colour: blue\n  options:"), "unknown key 'colour'"),
    (("api_version: v1}", "api_version: [v1]}"), "a string, number or boolean"),
])
def test_bad_dns_sections_name_the_line(change: tuple[str, str], message: str) -> None:
    text = (MINIMAL + DNS).replace(*change)
    assert text != MINIMAL + DNS
    found = problems(text)
    assert message in found and "app.yml:" in found
    assert "s3cr3t-value" not in found


def test_a_missing_field_is_named() -> None:
    assert "dns.zone: missing required field" in problems(MINIMAL + DNS.replace("  zone: preview.example.com\n", ""))


def test_two_proxy_roles_need_role_in_the_name() -> None:
    two = MINIMAL.replace("roles:\n", "roles:\n  api:\n    proxy:\n      app_port: 9000\n      host: api.example.com\n"
                          "    count: 1\n") + DNS
    with pytest.raises(InvalidInput, match=r"gives every proxy role \(api, web\) the same name") as caught:
        desired_records(bp(two), "pr-1")
    assert "{role}" in (caught.value.hint or "")
    both = bp(two.replace('name: "{env}.preview', 'name: "{role}-{env}.preview'))
    assert sorted(r.name for r in desired_records(both, "pr-1")) == ["api-pr-1.preview.example.com",
                                                                     "web-pr-1.preview.example.com"]


def test_the_tags_carry_the_settings_and_names_but_no_secret_value() -> None:
    spec = bp().dns
    assert spec is not None
    tags = settings_tags(spec, ["pr-1.preview.example.com"])
    assert tags[TAG_DNS_NAMES] == "pr-1.preview.example.com"
    back, names = spec_from_tags(tags) or (None, [])
    assert back is not None and names == ["pr-1.preview.example.com"]
    assert (back.provider, back.zone, back.credentials, back.options) == (spec.provider, spec.zone,
                                                                       spec.credentials, spec.options)
    assert spec_from_tags({}) is None
    with pytest.raises(InvalidInput, match="a CloudStack tag holds 255"):
        settings_tags(spec, [f"pr-{i}-with-a-long-name.preview.example.com" for i in range(9)])
    assert TAG_DNS in tags


def test_libcloud_is_imported_only_when_dns_records_are_made(tmp_path: Path) -> None:
    path = tmp_path / "app.yml"
    path.write_text(MINIMAL + DNS)
    code = ("import sys; from cloudstack_deploy import service, load_blueprint; import cloudstack_deploy.cli; "
            f"b = load_blueprint({str(path)!r}); import cloudstack_deploy.dns; "
            "assert b.dns is not None; print('libcloud' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("name", "pr", "expected"), [("pr-123", None, "pr-123"), (None, "42", "pr-42"),
                                                      ("review-x", None, "review-x")])
def test_preview_names(name: str | None, pr: str | None, expected: str) -> None:
    assert preview_name(name, pr) == expected


@pytest.mark.parametrize(("name", "pr"), [("PR-1", None), ("pr_1", None), (None, "1e3"), (None, "0"), (None, "x"),
                                          (None, "1234567890"), ("pr-1", "1"), (None, None), ("a" * 21, None)])
def test_bad_preview_names_are_invalid_input(name: str | None, pr: str | None) -> None:
    with pytest.raises(InvalidInput):
        preview_name(name, pr)


def test_ci_files_get_one_line_values_and_a_summary(tmp_path: Path) -> None:
    env = {"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(tmp_path / "sum")}
    files = ci_files(True, str(tmp_path / "preview.env"), environ=env)
    write_ci_files(files, env="pr-1", url="http://pr-1.example.com/\ninjected=1", up=True, version="v1",
                   created=True, expires="2026-12-09T00:00:00Z")
    assert (tmp_path / "out").read_text() == "url=http://pr-1.example.com/ injected=1\nenv=pr-1\n"
    assert (tmp_path / "preview.env").read_text() == "PREVIEW_URL=http://pr-1.example.com/ injected=1\nPREVIEW_ENV=pr-1\n"
    summary = (tmp_path / "sum").read_text()
    assert "### Preview `pr-1`" in summary and "| version | `v1` |" in summary and "created" in summary
    with pytest.raises(InvalidInput, match="GITHUB_STEP_SUMMARY is not set"):
        ci_files(True, None, environ={"GITHUB_OUTPUT": str(tmp_path / "out")})
    with pytest.raises(InvalidInput, match="cannot write"):
        ci_files(False, str(tmp_path / "no" / "such" / "dir" / "x.env"), environ={})
