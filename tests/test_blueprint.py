"""Blueprint loading: what a user sees for a good file, and for every kind of mistake.

Problem lines are asserted exactly: jumping to the right line is the point of the messages.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from cloudstack_deploy.blueprint import (
    BlueprintError,
    apply_overrides,
    format_duration,
    load_blueprint,
    parse_duration,
)
from cloudstack_deploy.errors import CsdeployError
from cloudstack_deploy.lab.simulator import catalog

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "blueprints" / "demo.yml"
MINIMAL = ROOT / "blueprints" / "minimal.yml"
FIXTURES = Path(__file__).parent / "fixtures" / "blueprints"

# A valid blueprint; tests replace single lines so the line numbers below stay true.
VALID_LINES = [
    "service: demo",                                 # 1
    "image: registry.lab:5000/demo-app",             # 2
    "cloud:",                                        # 3
    "  zone: lab-zone-1",                            # 4
    '  template: "Debian 12 bookworm*"',             # 5
    "  service_offering: small",                     # 6
    "  ssh:",                                        # 7
    "    allow_from: [127.0.0.0/8]",                 # 8
    "roles:",                                        # 9
    "  web:",                                        # 10
    "    count: 1",                                  # 11
    "    proxy:",                                    # 12
    "      app_port: 8000",                          # 13
    "  worker:",                                     # 14
    "    cmd: python -m demo.worker",                # 15
    "    env:",                                      # 16
    "      secret: [DB_PASSWORD]",                   # 17
    "accessories:",                                  # 18
    "  db:",                                         # 19
    "    image: registry.lab:5000/postgres:15",      # 20
    "    vm: {service_offering: small}",             # 21
    "    port: 5432",                                # 22
    "    env:",                                      # 23
    "      secret: [DB_PASSWORD]",                   # 24
    "registry:",                                     # 25
    "  server: registry.lab:5000",                   # 26
    "  username: csdeploy",                          # 27
    "  password: REGISTRY_PASSWORD",                 # 28
    "secrets: [REGISTRY_PASSWORD, DB_PASSWORD]",     # 29
]


def blueprint_text(**replacements: str) -> str:
    """VALID with line N replaced by replacements['lN'] (which may span several lines)."""
    lines = list(VALID_LINES)
    for key, text in replacements.items():
        lines[int(key[1:]) - 1] = text
    return "\n".join(lines) + "\n"


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a blueprint as bp.yml in a temp dir and work from there (messages say bp.yml)."""
    monkeypatch.chdir(tmp_path)

    def _write(text: str, name: str = "bp.yml") -> str:
        (tmp_path / name).write_text(text)
        return name

    return _write


def problems(path: str | Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(BlueprintError) as info:
        load_blueprint(path, overrides=list(overrides))
    return str(info.value).splitlines()


def problem_lines(write, **replacements: str) -> list[str]:
    return problems(write(blueprint_text(**replacements)))


# --- Valid blueprints ----------------------------------------------------------------------


def test_demo_blueprint_loads_with_its_roles_and_accessories() -> None:
    bp = load_blueprint(DEMO)
    assert bp.summary() == "service demo: roles web×1, worker×1; accessories db, redis"
    web, worker = bp.roles["web"], bp.roles["worker"]
    assert web.proxy is not None and web.proxy.app_port == 8000
    assert web.proxy.healthcheck.path == "/up"
    assert web.image == "registry.lab:5000/demo-app"
    assert worker.proxy is None and worker.cmd == ("python", "-m", "demo.worker")
    assert worker.healthcheck is not None and worker.healthcheck.readiness_delay == 7
    db, redis = bp.accessories["db"], bp.accessories["redis"]
    assert db.vm is not None and db.vm.service_offering == "small" and db.role is None
    assert db.port == 5432 and "POSTGRES_PASSWORD" in db.env.secret
    assert db.disk is not None and db.disk.size == 10 and db.disk.mount == "/data/db"
    assert redis.role == "web" and redis.vm is None and redis.port == 6379
    assert bp.registry is not None and bp.registry.password == "REGISTRY_PASSWORD"
    assert set(bp.secrets) == {"REGISTRY_PASSWORD", "POSTGRES_PASSWORD"}
    assert bp.cloud.ssh.allow_from == ("127.0.0.0/8",)
    assert bp.ttl == timedelta(hours=12)
    assert bp.source == DEMO
    assert bp.secrets_file_path() == DEMO.parent / ".env"


def test_demo_blueprint_names_exist_in_the_lab_catalog() -> None:
    bp = load_blueprint(DEMO)
    assert bp.cloud.zone == catalog.ZONE_NAME
    assert bp.cloud.network_offering == catalog.ISOLATED_OFFERING
    offerings = {bp.cloud.service_offering} | {r.service_offering for r in bp.roles.values()}
    offerings |= {a.vm.service_offering for a in bp.accessories.values() if a.vm}
    assert offerings <= set(catalog.SERVICE_OFFERINGS)
    disks = [d for d in [*(r.disk for r in bp.roles.values()), *(a.disk for a in bp.accessories.values())] if d]
    assert disks and {d.disk_offering for d in disks} <= set(catalog.DISK_OFFERINGS)
    assert any(bp.cloud.matches_template(name) for name, *_ in catalog.TEMPLATES)


def test_minimal_blueprint_gets_every_default() -> None:
    bp = load_blueprint(MINIMAL)
    assert bp.summary() == "service hello: roles web×1"
    assert bp.cloud.network_offering == "DefaultIsolatedNetworkOfferingWithSourceNatService"
    assert bp.cloud.public_access == "static_nat"
    assert (bp.cloud.ssh.user, bp.cloud.ssh.port, bp.cloud.ssh.key) == ("root", 22, None)
    web = bp.roles["web"]
    assert web.count == 1 and web.service_offering == "small" and web.cmd is None
    assert web.proxy is not None
    assert (web.proxy.deploy_timeout, web.proxy.drain_timeout, web.proxy.ssl) == (30, 30, False)
    assert (web.proxy.healthcheck.interval, web.proxy.healthcheck.timeout) == (1, 5)
    assert bp.accessories == {} and bp.registry is None and bp.ttl is None
    assert bp.retain_versions == 5 and bp.secrets == ()


def test_a_role_named_web_is_proxied_by_default_and_others_are_not(write) -> None:
    bp = load_blueprint(write(blueprint_text(l12="    cmd: [serve]", l13="")))
    assert bp.roles["web"].proxy is not None and bp.roles["web"].proxy.app_port == 80
    assert bp.roles["worker"].proxy is None


def test_to_dict_is_plain_json_and_ignores_where_the_file_lives(tmp_path: Path) -> None:
    text = DEMO.read_text()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.yml").write_text(text)
    first, second = load_blueprint(DEMO), load_blueprint(tmp_path / "a" / "x.yml")
    data = first.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data == second.to_dict()
    assert data["ttl"] == "12h" and "source" not in data
    assert data["roles"]["worker"]["cmd"] == ["python", "-m", "demo.worker"]


def test_top_level_env_is_merged_into_every_role(write) -> None:
    text = blueprint_text() + "env:\n  clear: {LOG_LEVEL: info, PORT: 8000}\n"
    text = text.replace("    count: 1\n", "    count: 1\n    env: {clear: {LOG_LEVEL: debug}}\n")
    bp = load_blueprint(write(text))
    assert bp.roles["web"].env.clear == {"LOG_LEVEL": "debug", "PORT": "8000"}
    assert bp.roles["worker"].env.clear == {"LOG_LEVEL": "info", "PORT": "8000"}
    assert bp.roles["worker"].env.secret == ("DB_PASSWORD",)


def test_yaml_anchors_and_merge_keys_work(write) -> None:
    text = blueprint_text(l10="  web: &base", l14="  worker:\n    <<: *base\n    proxy: false")
    bp = load_blueprint(write(text))
    assert bp.roles["worker"].count == 1 and bp.roles["worker"].proxy is None
    assert bp.roles["worker"].cmd == ("python", "-m", "demo.worker")


# --- One kind of mistake at a time ---------------------------------------------------------


def test_wrong_type_names_file_line_field_and_value(write) -> None:
    assert problem_lines(write, l11="    count: two") == [
        "bp.yml:11: roles.web.count: expected an integer, got 'two'"
    ]


def test_unknown_key_suggests_the_closest_name(write) -> None:
    assert problem_lines(write, l11="    cuont: 2") == [
        "bp.yml:11: roles.web.cuont: unknown key 'cuont' (did you mean 'count'?)"
    ]


def test_plain_variables_directly_under_env_get_a_hint(write) -> None:
    [line] = problem_lines(write, l17="      DEBUG: 1")
    assert line.startswith("bp.yml:17: roles.worker.env.DEBUG: unknown key 'DEBUG'")
    assert "put plain variables under `clear:`" in line


def test_missing_required_field_is_reported_at_its_parent(write) -> None:
    assert problem_lines(write, l4="  network_offering: DefaultSharedNetworkOffering") == [
        "bp.yml:3: cloud.zone: missing required field"
    ]


def test_missing_top_level_field_has_no_line(write) -> None:
    assert problem_lines(write, l1="") == ["bp.yml: service: missing required field"]


def test_allow_from_is_required_and_the_message_says_why(write) -> None:
    [line] = problem_lines(write, l7="  public_access: port_forwarding", l8="")
    assert line.startswith("bp.yml:3: cloud.ssh.allow_from: missing required field")
    assert "0.0.0.0/0" in line


@pytest.mark.parametrize(
    ("replacements", "expected"),
    [
        ({"l1": "service: Demo_App"}, "bp.yml:1: service: invalid name 'Demo_App'"),
        ({"l1": "service: " + "d" * 31}, "bp.yml:1: service: name '" + "d" * 31 + "' is 31 characters; at most 30"),
        ({"l10": "  Web:"}, "bp.yml:10: roles.Web: invalid name 'Web'"),
        ({"l14": "  background-worker-pool:"},
         "bp.yml:14: roles.background-worker-pool: name 'background-worker-pool' is 22 characters; at most 20"),
        ({"l19": "  db-:"}, "bp.yml:19: accessories.db-: invalid name 'db-'"),
        ({"l19": "  worker:"}, "bp.yml:19: accessories.worker: 'worker' is also a role name"),
    ],
)
def test_names_must_fit_in_vm_host_names(write, replacements: dict[str, str], expected: str) -> None:
    [line] = problem_lines(write, **replacements)
    assert line.startswith(expected)


@pytest.mark.parametrize(
    ("replacements", "expected"),
    [
        ({"l11": "    count: -1"}, "bp.yml:11: roles.web.count: must be 0-1000 (csdeploy runs at most 1000 VMs per role), got -1"),
        ({"l11": "    count: 1.5"}, "bp.yml:11: roles.web.count: expected an integer, got 1.5"),
        ({"l13": "      app_port: 0"}, "bp.yml:13: roles.web.proxy.app_port: must be a port number 1-65535, got 0"),
        ({"l22": "    port: 65536"}, "bp.yml:22: accessories.db.port: must be a port number 1-65535, got 65536"),
        ({"l8": "    allow_from: [10.0.0.0/33]"}, "bp.yml:8: cloud.ssh.allow_from[0]: not a valid CIDR: '10.0.0.0/33'"),
        ({"l8": "    allow_from: [192.168.1.1/24]"},
         "bp.yml:8: cloud.ssh.allow_from[0]: not a valid CIDR: '192.168.1.1/24'; did you mean 192.168.1.0/24?"),
        ({"l8": "    allow_from: []"},
         "bp.yml:8: cloud.ssh.allow_from: expected a list of CIDRs such as [203.0.113.0/24], got a list"),
        ({"l22": "    disk: {size: 0}"}, "bp.yml:22: accessories.db.disk.size: must be 1-65536 GB, got 0"),
        ({"l22": "    disk: {size: ten}"}, "bp.yml:22: accessories.db.disk.size: expected an integer, got 'ten'"),
        ({"l29": "secrets: [REGISTRY_PASSWORD, DB_PASSWORD]\nttl: 12 hours"},
         "bp.yml:30: ttl: expected a duration like 30m, 12h or 2d, got '12 hours'"),
        ({"l7": "  public_access: elastic\n  ssh:"},
         "bp.yml:7: cloud.public_access: expected one of static_nat, port_forwarding, got 'elastic'"),
        ({"l2": "image: registry.lab:5000/demo-app:latest"},
         "bp.yml:2: image: remove the tag ':latest': the deployed version is appended as the tag"),
        ({"l15": "    cmd: python -c 'unclosed"},
         "bp.yml:15: roles.worker.cmd: cannot split the command into words: No closing quotation"),
        ({"l13": "      app_port: 8000\n      ssl: true"},
         "bp.yml:14: roles.web.proxy.ssl: ssl needs a host"),
    ],
)
def test_values_out_of_range_or_malformed(write, replacements: dict[str, str], expected: str) -> None:
    [line] = problem_lines(write, **replacements)
    assert line.startswith(expected)


def test_undeclared_secret_references_are_errors_with_a_suggestion(write) -> None:
    assert problem_lines(write, l17="      secret: [DB_PASSWROD]", l28="  password: REG_PASSWORD") == [
        "bp.yml:17: roles.worker.env.secret[0]: secret 'DB_PASSWROD' is not declared in `secrets` "
        "(did you mean 'DB_PASSWORD'?)",
        "bp.yml:28: registry.password: secret 'REG_PASSWORD' is not declared in `secrets` "
        "(did you mean 'REGISTRY_PASSWORD'?)",
    ]


def test_a_literal_password_is_refused_without_repeating_it() -> None:
    path = FIXTURES / "literal_password.yml"
    [line] = problems(path)
    assert line.startswith(f"{path}:14: registry.password: this looks like a literal password")
    assert "s3cr3t-Pa55word" not in line


def test_a_literal_value_in_env_secret_is_not_repeated(write) -> None:
    [line] = problem_lines(write, l17="      secret: [hunter2]")
    assert line.startswith("bp.yml:17: roles.worker.env.secret[0]: this looks like a literal value")
    assert "hunter2" not in line


def test_accessory_role_must_name_an_existing_role(write) -> None:
    assert problem_lines(write, l21="    role: wbe") == [
        "bp.yml:21: accessories.db.role: no role named 'wbe' (did you mean 'web'?)"
    ]


def test_accessory_needs_exactly_one_of_role_and_vm(write) -> None:
    both = problem_lines(write, l21="    vm: {service_offering: small}\n    role: web")
    assert both == ["bp.yml:19: accessories.db: set either role (share that role's first VM) "
                    "or vm (its own VM), not both"]
    [neither] = problem_lines(write, l21="")
    assert neither.startswith("bp.yml:19: accessories.db.role: missing: set role")


def test_accessory_on_a_role_with_no_vms_is_refused(write) -> None:
    assert problem_lines(write, l11="    count: 0", l21="    role: web") == [
        "bp.yml:21: accessories.db.role: role 'web' has count 0, so there is no VM to run "
        "accessory 'db' on"
    ]


def test_accessory_port_clashing_with_kamal_proxy_is_refused(write) -> None:
    assert problem_lines(write, l21="    role: web", l22="    port: 443") == [
        "bp.yml:22: accessories.db.port: port 443 on role web's VM is already used by kamal-proxy"
    ]


def test_two_disks_on_one_vm_cannot_share_a_mount_point(write) -> None:
    assert problem_lines(write, l11="    disk: {size: 5, mount: /data}", l21="    role: web",
                         l22="    disk: {size: 5, mount: /data}") == [
        "bp.yml:22: accessories.db.disk.mount: /data on role web's VM is already the mount "
        "point of role web's disk"
    ]


def test_a_broken_section_does_not_cascade_into_reference_errors(write) -> None:
    assert problem_lines(write, l9="roles: [web, worker]", l10="", l11="", l12="", l13="",
                         l14="", l15="", l16="", l17="", l21="    role: web") == [
        "bp.yml:9: roles: expected a mapping of role names to settings, got a list"
    ]
    [line] = problem_lines(write, l29="secrets: REGISTRY_PASSWORD")
    assert line == "bp.yml:29: secrets: expected a list, got 'REGISTRY_PASSWORD'"


def test_proxy_roles_take_their_healthcheck_from_the_proxy(write) -> None:
    [line] = problem_lines(write, l11="    healthcheck: {cmd: curl -f localhost}")
    assert line.startswith("bp.yml:11: roles.web.healthcheck: kamal-proxy health-checks a proxy role")


def test_a_proxy_role_with_several_vms_is_load_balanced_unless_it_opts_out(write) -> None:
    assert not load_blueprint(write(blueprint_text())).roles["web"].load_balanced
    web = load_blueprint(write(blueprint_text(l11="    count: 3"))).roles["web"]
    assert web.load_balanced and web.proxy is not None and web.proxy.lb_algorithm == "roundrobin"
    one = load_blueprint(write(blueprint_text(l13="      load_balancer: true\n      lb_algorithm: leastconn")))
    assert one.roles["web"].load_balanced and one.roles["web"].proxy.lb_algorithm == "leastconn"  # type: ignore[union-attr]
    off = load_blueprint(write(blueprint_text(l11="    count: 3", l13="      load_balancer: false")))
    assert not off.roles["web"].load_balanced
    worker = load_blueprint(write(blueprint_text(l15="    count: 4"))).roles["worker"]
    assert not worker.load_balanced  # no proxy, no HTTP to balance


def test_load_balancer_settings_are_checked_with_their_line(write) -> None:
    assert problem_lines(write, l13="      lb_algorithm: random") == [
        "bp.yml:13: roles.web.proxy.lb_algorithm: expected one of roundrobin, leastconn, source, got 'random'"]
    assert problem_lines(write, l13="      load_balancer: false\n      lb_algorithm: source") == [
        "bp.yml:14: roles.web.proxy.lb_algorithm: load_balancer is false: drop lb_algorithm, or the "
        "load_balancer line"]
    [line] = problem_lines(write, l6="  service_offering: small\n  public_access: port_forwarding",
                           l11="    count: 2", l15="    proxy: {load_balancer: true}")
    assert line.startswith("bp.yml:16: roles.worker.proxy: public_access port_forwarding has one public "
                           "address, whose ports 80/443 already serve role web")


def test_at_least_one_role_is_needed(write) -> None:
    text = "\n".join(VALID_LINES[:8]) + "\nroles: {}\n"
    [line] = problems(write(text))
    assert line.startswith("bp.yml:9: roles: no roles: add at least one role")


def test_duplicate_keys_are_errors(write) -> None:
    assert problem_lines(write, l11="    count: 1\n    count: 2") == [
        "bp.yml:12: roles.web.count: duplicate key (first at line 11)"
    ]


def test_yaml_syntax_error_has_the_line() -> None:
    path = FIXTURES / "syntax_error.yml"
    assert problems(path) == [f"{path}:5: YAML syntax error: mapping values are not allowed here"]


def test_python_tags_are_refused_not_executed(write) -> None:
    [line] = problem_lines(write, l15="    cmd: !!python/object/apply:os.system [touch pwned]")
    assert line.startswith("bp.yml:15: roles.worker.cmd: unsupported YAML tag")
    assert not Path("pwned").exists()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_is_a_clear_error(write, text: str) -> None:
    [line] = problems(write(text))
    assert line.startswith("bp.yml: the file is empty")


def test_a_list_at_the_top_is_a_clear_error(write) -> None:
    assert problems(write("- service: demo\n")) == [
        "bp.yml:1: expected a mapping of keys (service, image, cloud, roles, ...), got a list"
    ]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    assert problems(missing) == [f"{missing}: no such file"]


def test_all_problems_are_collected_in_line_order() -> None:
    path = FIXTURES / "many_problems.yml"
    with pytest.raises(BlueprintError) as info:
        load_blueprint(path)
    got = [(p.line, p.field) for p in info.value.problems]
    assert got == [
        (1, "service"), (2, "image"), (7, "cloud.public_acess"), (9, "cloud.ssh.allow_from[0]"),
        (12, "roles.web.count"), (14, "roles.web.proxy.app_port"), (17, "roles.worker.count"),
        (21, "accessories.db.role"), (23, "accessories.db.env.secret[0]"), (24, "ttl"),
    ]
    assert all(p.file == str(path) for p in info.value.problems)
    assert isinstance(info.value, CsdeployError)


# --- Overrides -----------------------------------------------------------------------------


def test_override_changes_a_value() -> None:
    bp = load_blueprint(DEMO, overrides=["roles.web.count=3", "cloud.ssh.allow_from=[10.0.0.0/8, 192.0.2.0/24]"])
    assert bp.roles["web"].count == 3
    assert bp.cloud.ssh.allow_from == ("10.0.0.0/8", "192.0.2.0/24")


def test_override_creates_missing_maps() -> None:
    bp = load_blueprint(DEMO, overrides=["roles.worker.disk.size=20"])
    assert bp.roles["worker"].disk is not None
    assert (bp.roles["worker"].disk.size, bp.roles["worker"].disk.mount) == (20, "/data")


def test_override_is_applied_before_validation(write) -> None:
    bp = load_blueprint(write(blueprint_text(l11="    count: two")), overrides=["roles.web.count=2"])
    assert bp.roles["web"].count == 2


def test_later_override_wins() -> None:
    bp = load_blueprint(DEMO, overrides=["roles.web.count=2", "roles.web.count=4"])
    assert bp.roles["web"].count == 4


def test_invalid_overridden_value_names_the_override() -> None:
    assert problems(DEMO, ("roles.web.count=two",)) == [
        f"{DEMO} (--set roles.web.count): roles.web.count: expected an integer, got 'two'"
    ]


def test_unknown_key_from_an_override_names_the_override() -> None:
    assert problems(DEMO, ("roles.web.cuont=2",)) == [
        f"{DEMO} (--set roles.web.cuont): roles.web.cuont: unknown key 'cuont' (did you mean 'count'?)"
    ]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("roles.web.count", "(--set roles.web.count): expected PATH=VALUE, e.g. roles.web.count=2"),
        ("=3", "(--set (empty path)): the path before '=' is empty or has an empty part"),
        ("roles..count=3", "(--set roles..count): the path before '=' is empty or has an empty part"),
        ("image.tag=1", "(--set image.tag): image: is 'registry.lab:5000/demo-app', not a mapping, "
                        "so image.tag cannot be set"),
        ("cloud.ssh.allow_from=[10.0.0.0/8", "(--set cloud.ssh.allow_from): cloud.ssh.allow_from: "
                                             "value is not valid YAML"),
    ],
)
def test_malformed_overrides_are_errors(override: str, expected: str) -> None:
    [line] = problems(DEMO, (override,))
    assert line.startswith(f"{DEMO} {expected}")


def test_file_problems_come_before_override_problems(write) -> None:
    assert problems(write(blueprint_text(l22="    port: http")), ("roles.web.count=-2",)) == [
        "bp.yml:22: accessories.db.port: expected an integer, got 'http'",
        "bp.yml (--set roles.web.count): roles.web.count: must be 0-1000 (csdeploy runs at most 1000 VMs per role), got -2",
    ]


def test_apply_overrides_returns_a_new_tree() -> None:
    tree = {"roles": {"web": {"count": 1}}}
    new = apply_overrides(tree, ["roles.web.count=2", "roles.worker.cmd=[run, it]"])
    assert new == {"roles": {"web": {"count": 2}, "worker": {"cmd": ["run", "it"]}}}
    assert tree == {"roles": {"web": {"count": 1}}}
    with pytest.raises(BlueprintError, match="expected PATH=VALUE"):
        apply_overrides(tree, ["nonsense"])


# --- Durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delta", "canonical"),
    [("30m", timedelta(minutes=30), "30m"), ("12h", timedelta(hours=12), "12h"),
     ("2d", timedelta(days=2), "2d"), ("1d12h", timedelta(hours=36), "1d12h"),
     ("1w", timedelta(days=7), "7d")],
)
def test_durations_round_trip(text: str, delta: timedelta, canonical: str) -> None:
    assert parse_duration(text) == delta
    assert format_duration(delta) == canonical


@pytest.mark.parametrize("text", ["", "12", "0h", "12 hours", "h12", "1.5h", "-1h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
