"""Real apps' settings in a blueprint: role images (tags, digests), volumes, resources, options,
restart, logging, scheduled jobs and kamal-proxy's options; bad ones are exit 2 with file:line,
and what is accepted reaches `docker run` / `kamal-proxy deploy` as the words meant."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import BlueprintError, load_blueprint
from cloudstack_deploy.rollout.commands import docker as d
from cloudstack_deploy.rollout.commands import proxy as p
from cloudstack_deploy.rollout.contract import image_ref, volume_directory
from cloudstack_deploy.rollout.stages import proxy_switch_script, worker_start_script
from tests.support.cli import cli

HEAD = """\
service: shop
image: registry.example.com/shop
cloud: {zone: z, template: t, service_offering: small, ssh: {allow_from: [127.0.0.0/8]}}
roles:
"""
DIGEST = "sha256:" + "ab" * 32


def _load(tmp_path: Path, roles: str, tail: str = "") -> object:
    path = tmp_path / "bp.yml"
    path.write_text(HEAD + roles + tail)
    return load_blueprint(path)


def _problems(tmp_path: Path, roles: str, tail: str = "") -> list[str]:
    with pytest.raises(BlueprintError) as info:
        _load(tmp_path, roles, tail)
    return [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems]


def test_a_role_runs_its_own_image_pinned_or_at_the_deploy_version(tmp_path: Path) -> None:
    bp = _load(tmp_path, f"""\
  web: {{proxy: {{app_port: 3000}}}}
  dashboard: {{image: ghcr.io/saleor/saleor-dashboard, proxy: {{app_port: 80}}}}
  grafana: {{image: grafana/grafana:11.2.0, proxy: {{app_port: 3000}}}}
  immich: {{image: "ghcr.io/immich-app/immich-server:v1.119@{DIGEST}"}}
""")
    roles = bp.roles  # type: ignore[attr-defined]
    assert image_ref(roles["web"].image, "v7") == "registry.example.com/shop:v7"
    assert image_ref(roles["dashboard"].image, "v7") == "ghcr.io/saleor/saleor-dashboard:v7"
    assert image_ref(roles["grafana"].image, "v7") == "grafana/grafana:11.2.0"
    assert image_ref(roles["immich"].image, "v7") == f"ghcr.io/immich-app/immich-server:v1.119@{DIGEST}"


def test_each_role_starts_the_image_it_names(tmp_path: Path) -> None:
    """The bug this replaces: every role ran the blueprint's image, whatever it said."""
    bp = _load(tmp_path, """\
  web: {proxy: {app_port: 3000}}
  nginx: {image: nginx:1.27, proxy: {app_port: 80}}
  worker: {cmd: bin/jobs}
""")
    from cloudstack_deploy.rollout.contract import ContainerEnv
    roles = bp.roles  # type: ignore[attr-defined]
    nginx = proxy_switch_script(bp, "e", roles["nginx"], "v2", ContainerEnv()).text()  # type: ignore[arg-type]
    worker = worker_start_script(bp, "e", roles["worker"], "v2", ContainerEnv()).text()  # type: ignore[arg-type]
    assert " nginx:1.27" in nginx and "registry.example.com/shop" not in nginx
    assert " registry.example.com/shop:v2 bin/jobs" in worker


@pytest.mark.parametrize("roles, expected", [
    ("  web: {volumes: ['/etc:/etc/app']}\n",
     "bp.yml:5: roles.web.volumes[0]: /etc is outside the allowed roots: use a named volume (this role has no "
     "data disk), e.g. NAME:/etc/app"),
    ("  web: {disk: {size: 5, mount: /data}, volumes: ['/srv/x:/x']}\n",
     "bp.yml:5: roles.web.volumes[0]: /srv/x is outside the allowed roots: use a directory below /data"),
    ("  web: {volumes: ['storage:/proc/x']}\n",
     "bp.yml:5: roles.web.volumes[0].path: /proc/x is a kernel filesystem in the container"),
    ("  web: {count: 2, volumes: ['storage:/rails/storage']}\n",
     "bp.yml:5: roles.web.volumes[0]: role web has 2 VMs and no shared storage: each would keep its own copy "
     "of storage"),
    ("  web: {options: {shm-sise: 1g}}\n",
     "bp.yml:5: roles.web.options.shm-sise: unknown option 'shm-sise' (allowed: add-host, cap-add"),
    ("  web: {options: {privileged: true}}\n",
     "bp.yml:5: roles.web.options.privileged: 'privileged' is not allowed here: it gives the container the whole host"),
    ("  web: {options: {ulimit: ['nofile=a']}}\n",
     "bp.yml:5: roles.web.options.ulimit[0]: expected NAME=SOFT[:HARD]"),
    ("  web: {resources: {memory: 1x}}\n",
     "bp.yml:5: roles.web.resources.memory: expected a size such as 512m or 1g, got '1x'"),
    ("  web: {resources: {memory: 256m, memory_reservation: 1g}}\n",
     "bp.yml:5: roles.web.resources.memory_reservation: must not be more than memory"),
    ("  web: {restart: sometimes}\n",
     "bp.yml:5: roles.web.restart: expected no, always, unless-stopped, on-failure or on-failure:N"),
    ("  web: {schedule: {nightly: '0 25 * * *'}}\n",
     "bp.yml:5: roles.web.schedule.nightly.cron: cannot read the cron line '0 25 * * *': hour: 25 is outside 0-23"),
    ("  web: {schedule: {nightly: {cmd: x}}}\n",
     "bp.yml:5: roles.web.schedule.nightly.cron: missing"),
    (f"  web: {{image: 'nginx@sha256:{'z' * 64}'}}\n",
     "bp.yml:5: roles.web.image: not a valid image reference"),
    ("  web: {image: 'nginx:1.27', build: {context: .}}\n",
     "bp.yml:5: roles.web.image: csdeploy builds this role's image (build:), so each deploy tags it"),
    ("  web: {proxy: {buffering: {requests: false, max_request_body: 1m}}}\n",
     "bp.yml:5: roles.web.proxy.buffering.max_request_body: a request body limit needs requests buffered"),
    ("  web: {proxy: {path_prefix: 'api'}}\n",
     "bp.yml:5: roles.web.proxy.path_prefix: expected a URL path starting with /"),
])
def test_bad_settings_are_refused_with_their_line(tmp_path: Path, roles: str, expected: str) -> None:
    problems = _problems(tmp_path, roles)
    assert any(p.startswith(expected) for p in problems), problems


def test_two_http_services_may_not_claim_the_same_host_and_path(tmp_path: Path) -> None:
    problems = _problems(tmp_path, """\
  web: {proxy: {app_port: 3000, host: shop.example.com}}
  admin:
    image: grafana/grafana:11.2.0
    proxy: {app_port: 3000, host: shop.example.com}
  api: {proxy: {app_port: 3000, host: shop.example.com, path_prefix: /api}}
""")
    assert problems == ["bp.yml:8: roles.admin.proxy: role web already serves shop.example.com/: give one of "
                        "them another proxy.host or proxy.path_prefix"]


def test_validate_exits_2_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bp.yml"
    path.write_text(HEAD + "  web: {schedule: {x: 'not cron'}, volumes: ['/etc:/etc']}\n")
    result = cli("validate", str(path))
    assert result.exit_code == 2
    assert [line.split(": ", 1)[0] for line in result.stderr.splitlines()] == [f"{path}:5"] * 2


def test_container_settings_reach_docker_run_as_single_words(tmp_path: Path) -> None:
    bp = _load(tmp_path, """\
  web:
    proxy: {app_port: 3000}
    disk: {size: 5, mount: /data}
    volumes: ['storage:/rails/storage', {name: cache, path: /cache, readonly: true}, '/data/uploads:/up']
    resources: {cpus: 1.5, memory: 1g, memory_reservation: 512m}
    options: {shm-size: 256m, init: true, ulimit: [nofile=1024:2048, nproc=64], cap-add: [NET_ADMIN]}
    restart: on-failure:3
    logging: {driver: local, options: {max-size: 20m}}
""")
    from cloudstack_deploy.rollout.contract import ContainerEnv
    web = bp.roles["web"]  # type: ignore[attr-defined]
    text = proxy_switch_script(bp, "e", web, "v2", ContainerEnv()).text()  # type: ignore[arg-type]
    run = next(shlex.split(line) for line in text.splitlines() if line.lstrip().startswith("docker run --detach"))
    for words in (["--restart", "on-failure:3"], ["--cpus=1.5"], [f"--memory={1 << 30}b"],
                  [f"--memory-reservation={512 << 20}b"], ["--shm-size=256m"], ["--init"],
                  ["--ulimit=nofile=1024:2048"], ["--ulimit=nproc=64"], ["--cap-add=NET_ADMIN"],
                  ["--log-driver=local"], ["--log-opt", "max-size=20m"],
                  ["--volume", "shop-storage:/rails/storage"], ["--volume", "shop-cache:/cache:ro"],
                  ["--volume", "/data/uploads:/up"]):
        assert any(run[i:i + len(words)] == words for i in range(len(run))), (words, run)
    assert "max-size=10m" not in run
    # named volumes live on the role's data disk, made before the container starts
    assert volume_directory(web, web.volumes[0]) == "/data/volumes/storage"
    assert "device=/data/volumes/storage" in text and "mountpoint -q /data" in text
    assert text.index("docker volume create") < text.index("docker run --detach")


def test_proxy_options_reach_kamal_proxy(tmp_path: Path) -> None:
    bp = _load(tmp_path, """\
  web:
    proxy:
      app_port: 3000
      host: shop.example.com
      ssl: true
      ssl_redirect: false
      forward_headers: true
      path_prefix: [/api, /admin]
      strip_path_prefix: false
      response_timeout: 60
      buffering: {max_request_body: 10m, responses: false, memory: 2m}
""")
    argv = [str(w) for w in p.deploy("shop-web", "c:3000", bp.roles["web"].proxy)]  # type: ignore[attr-defined]
    for word in ("--path-prefix=/api", "--path-prefix=/admin", "--strip-path-prefix=false", "--tls",
                 "--tls-redirect=false", "--forward-headers=true", "--target-timeout=60s", "--buffer-requests",
                 f"--max-request-body={10 << 20}", f"--buffer-memory={2 << 20}"):
        assert word in argv, (word, argv)
    assert "--buffer-responses" not in argv


def test_the_switch_spends_the_warm_up_inside_the_deploy_timeout(tmp_path: Path) -> None:
    """kamal-proxy is given what is left of the deploy timeout after the warm-up, so a version
    that never turns healthy is refused in about the timeout, not the timeout plus 10 s."""
    bp = _load(tmp_path, "  web: {proxy: {app_port: 3000, deploy_timeout: 12}}\n")
    proxy = bp.roles["web"].proxy  # type: ignore[attr-defined]
    text = p.switch("shop-web", "shop-web-v2", proxy).text()
    assert "left=$(( 1200 - $now + $t0 ))" in text and '--deploy-timeout="$left"ms' in text
    assert "--deploy-timeout=12s" not in text


def test_settings_flags_default_to_kamals() -> None:
    assert d.settings_flags(None) == ["--restart", "unless-stopped", "--log-opt", "max-size=10m"]
