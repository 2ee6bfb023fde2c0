"""`init --from-kamal` reads a Kamal config as Kamal reads it: the default builder and its arch,
host tags, aliases, Kamal's local registry, an ssh.user the VMs lack.

Kamal's behaviour checked in basecamp/kamal: lib/kamal/commands/builder/base.rb
(`platform_options`: each arch is `linux/<arch>` for `--platform`; `build_dockerfile`: a missing
Dockerfile is an error), lib/kamal/cli/app.rb (`exec`: a new container unless `--reuse`,
`--interactive` on the primary host); env.tags apply to the hosts tagged in `servers`.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.formats import init_blueprint
from cloudstack_deploy.formats.kamal_aliases import translate
from cloudstack_deploy.rollout.commands import image as image_cmd

RAILS8 = Path(__file__).resolve().parents[1] / "fixtures" / "kamal" / "rails8"


@pytest.fixture
def rails8(tmp_path: Path) -> Path:
    shutil.copytree(RAILS8, tmp_path / "notes")
    return tmp_path / "notes" / "config" / "deploy.yml"


def _notes(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(n) for n in result.notes]


def test_a_rails_8_config_keeps_its_storage_volume_and_builds_its_dockerfile(rails8: Path, tmp_path: Path) -> None:
    out = tmp_path / "csdeploy.yml"
    result = init_blueprint(out, kamal=rails8)
    bp = load_blueprint(out)
    assert bp == result.blueprint
    assert [(v.name, v.path) for v in bp.roles["web"].volumes] == [("notes_storage", "/rails/storage")]
    assert bp.build is not None and bp.build.platform == "linux/amd64"
    assert bp.build_context() == rails8.parent.parent.resolve()
    assert bp.build.dockerfile == "Dockerfile"
    notes = _notes(result)
    assert (f"{rails8}:46: builder.arch: csdeploy builds one platform per image: linux/amd64 (the VMs' "
            "architecture); the others (arm64) are not built") in notes
    assert (f"{rails8}:49: builder.cache: Kamal's registry build cache is not configured: csdeploy builds "
            "with the local BuildKit cache") in notes


def test_the_build_platform_reaches_docker_build() -> None:
    argv = image_cmd.build("docker", buildx=True, context=".", dockerfile="Dockerfile", tag="a:v1", labels={},
                           args={}, secrets=(), platform="linux/arm64")
    assert argv[argv.index("--platform") + 1] == "linux/arm64" and argv[-1] == "."
    assert "--platform" not in image_cmd.build("docker", buildx=True, context=".", dockerfile="D", tag="a:v1",
                                               labels={}, args={}, secrets=())


def test_a_bad_build_platform_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bp.yml"
    path.write_text("service: a\nimage: acme/a\nbuild:\n  platform: amd64\ncloud: {zone: z, template: t, "
                    "service_offering: s, ssh: {allow_from: [127.0.0.0/8]}}\nroles: {web: {}}\n")
    with pytest.raises(BlueprintError) as err:
        load_blueprint(path)
    assert str(err.value) == (f"{path}:4: build.platform: expected an OS/ARCH platform such as linux/amd64, "
                              "got 'amd64'")


def test_without_a_dockerfile_there_is_no_build_and_it_says_so(rails8: Path, tmp_path: Path) -> None:
    (rails8.parent.parent / "Dockerfile").unlink()
    result = init_blueprint(tmp_path / "csdeploy.yml", kamal=rails8)
    assert result.blueprint.build is None
    assert any("builder: no Dockerfile in the project: no build: section" in n for n in _notes(result))


def test_kamal_s_local_registry_is_not_taken_for_a_real_one(rails8: Path, tmp_path: Path) -> None:
    result = init_blueprint(tmp_path / "csdeploy.yml", kamal=rails8)
    bp = result.blueprint
    assert bp.image == "registry.lab:5000/notes"
    assert bp.registry is not None and bp.registry.server == "registry.lab:5000"
    assert any(n.startswith(f"{rails8}:18: registry: localhost:5555 is Kamal's local registry") for n in _notes(result))
    assert "localhost:5555" not in "".join(ln for ln in (tmp_path / "csdeploy.yml").read_text().splitlines()
                                           if not ln.startswith("#"))


def test_an_ssh_user_the_vms_lack_is_not_copied(rails8: Path, tmp_path: Path) -> None:
    """Copying `ssh.user: deploy` made create-env wait 5 minutes for a login that cannot work."""
    result = init_blueprint(tmp_path / "csdeploy.yml", kamal=rails8)
    assert result.blueprint.cloud.ssh.user == "root"
    assert (f"{rails8}:53: ssh.user: csdeploy logs in as the template's user (root) with the key it makes; "
            "'deploy' is not created on the VMs: build it into the template, then set cloud.ssh.user") in _notes(result)


def test_host_tags_give_their_env_to_the_role_whose_hosts_all_have_them(rails8: Path, tmp_path: Path) -> None:
    result = init_blueprint(tmp_path / "csdeploy.yml", kamal=rails8)
    bp = result.blueprint
    assert bp.roles["job"].env.clear["JOB_CONCURRENCY"] == "3"
    assert "JOB_CONCURRENCY" not in bp.roles["web"].env.clear
    assert f"{rails8}:29: env.tags.unused: no host of a role has tag unused: its env is not carried over" in \
        _notes(result)


def test_a_tag_on_some_hosts_of_a_role_is_noted(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    source = config / "deploy.yml"
    source.write_text("service: a\nimage: acme/a\nservers:\n  web:\n    hosts:\n      - 192.0.2.1: [eu]\n"
                      "      - 192.0.2.2\nenv:\n  tags:\n    eu: {REGION: eu}\n")
    result = init_blueprint(tmp_path / "csdeploy.yml", kamal=source)
    assert "REGION" not in result.blueprint.roles["web"].env.clear
    assert (f"{source}:5: servers.web.hosts: tag eu (env.tags.eu) is on some of the role's hosts only: csdeploy's "
            "env is per role; give those hosts a role of their own to keep it") in _notes(result)


def test_aliases_become_csdeploy_aliases_where_they_mean_the_same(rails8: Path, tmp_path: Path) -> None:
    result = init_blueprint(tmp_path / "csdeploy.yml", kamal=rails8)
    aliases = result.blueprint.aliases
    assert aliases["console"] == "exec -it --primary --role web -- bin/rails console"
    assert aliases["logs"] == "logs --role web -f"
    assert aliases["migrate"] == "exec --primary --new --role web -- sh -c 'bin/rails db:migrate && echo done'"
    assert "proxy-apps" not in aliases
    assert (f"{rails8}:38: aliases.proxy-apps: `kamal server exec` has no csdeploy alias equivalent (csdeploy "
            "translates app exec and app logs)") in _notes(result)


@pytest.mark.parametrize("line, expected", [
    ("app exec --reuse -r job 'ls /'", "exec --role job -- ls /"),
    ("app exec -i --reuse --roles=job bash", "exec -it --primary --role job -- bash"),
    ("app logs -n 20 --roles job", "logs --role job -n 20"),
    ("app exec --reuse 'echo $(id)'", "exec --role web -- sh -c 'echo $(id)'"),
])
def test_kamal_command_lines_as_csdeploy_ones(line: str, expected: str) -> None:
    roles = {"web": "web", "job": "job"}
    assert translate(line, "web", roles.get) == expected
    assert shlex.split(expected)  # a line csdeploy's alias runner can split


@pytest.mark.parametrize("line, why", [
    ("app exec --hosts 1.2.3.4 ls", "--hosts names Kamal's hosts"),
    ("app exec -r web,job ls", "a csdeploy alias runs on one role"),
    ("app exec -r db ls", "no role db"),
    ("app exec --weird ls", "the option --weird has no csdeploy equivalent"),
    ("app exec 'unterminated", "not a command line"),
    ("accessory reboot db", "`kamal accessory reboot` has no csdeploy alias equivalent"),
])
def test_kamal_command_lines_without_an_equivalent_say_why(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("(", r"\(")):
        translate(line, "web", {"web": "web", "job": "job"}.get)


def _kamal(tmp_path: Path, servers: str, tail: str = "") -> Path:
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    source = config / "deploy.yml"
    source.write_text("service: shop\nimage: acme/shop\nservers:\n" + servers + tail)
    return source


def test_roles_listing_the_same_hosts_run_on_the_same_vms(tmp_path: Path) -> None:
    """Kamal's `rails new` template (its job role uncommented): web and job on one server."""
    source = _kamal(tmp_path, "  web:\n    - 192.0.2.1\n    - 192.0.2.2\n"
                              "  job:\n    hosts:\n      - 192.0.2.2\n      - 192.0.2.1\n    cmd: bin/jobs\n"
                              "  admin:\n    hosts: [192.0.2.1, 192.0.2.2]\n    proxy: {app_port: 3000, path_prefix: /admin}\n"
                              "  batch:\n    hosts: [192.0.2.9]\n    cmd: bin/batch\n",
                    "proxy: {app_port: 3000}\naccessories:\n  redis: {image: redis:7, host: 192.0.2.1}\n")
    out = tmp_path / "csdeploy.yml"
    result = init_blueprint(out, kamal=source)
    bp = load_blueprint(out)
    assert bp == result.blueprint
    assert {n: (r.run_on, r.count) for n, r in bp.roles.items()} == {
        "web": (None, 2), "job": ("web", 2), "admin": ("web", 2), "batch": (None, 1)}
    assert bp.roles["admin"].proxy is not None and bp.roles["admin"].proxy.path_prefix == ("/admin",)
    assert bp.accessories["redis"].role == "web"


def test_a_second_http_service_claiming_the_same_path_keeps_vms_of_its_own(tmp_path: Path) -> None:
    source = _kamal(tmp_path, "  web: [192.0.2.1]\n  api:\n    hosts: [192.0.2.1]\n    proxy: {app_port: 8080}\n",
                    "proxy: {app_port: 3000}\n")
    result = init_blueprint(tmp_path / "csdeploy.yml", kamal=source)
    assert result.blueprint.roles["api"].run_on is None
    assert any("servers.api: the same hosts as role web, serving the same host and path" in n
               for n in _notes(result)), _notes(result)


def test_kamal_proxy_options_are_carried_over(tmp_path: Path) -> None:
    source = _kamal(tmp_path, "  web: [192.0.2.1]\n",
                    "proxy:\n  app_port: 3000\n  path_prefix: /app\n  strip_path_prefix: false\n"
                    "  forward_headers: true\n  buffering: {requests: true, max_request_body: 1048576, colour: red}\n")
    result = init_blueprint(tmp_path / "csdeploy.yml", kamal=source)
    proxy = result.blueprint.roles["web"].proxy
    assert proxy is not None
    assert (proxy.path_prefix, proxy.strip_path_prefix, proxy.forward_headers) == (("/app",), False, True)
    assert proxy.buffering.max_request_body == 1048576
    notes = _notes(result)
    assert any("proxy.buffering.colour: not a kamal-proxy buffering setting" in n for n in notes), notes
    assert not any("path_prefix" in n or "forward_headers" in n for n in notes), notes
