"""`csdeploy init --from-compose`: a docker-compose.yml as a blueprint, read as Compose reads it.

The file: the `.env` beside it (or `--env-file`) and the shell for interpolation (`${A:-${B}}`,
`${A:?msg}` refused with its line), `profiles` (only active ones: `--profile`,
COMPOSE_PROFILES), `extends`, each service's `env_file` then `environment`.

Services are classified by what they do, not by name. One with a well-known image family
(postgres and its variants, mysql/mariadb, redis/valkey/keydb, mongo, memcached,
elasticsearch/opensearch, rabbitmq, minio, clickhouse: `accessories.py`) is an accessory with a
data disk and its image's env contract; databases get a VM of their own, caches share the
main proxy role's first VM. The others are roles, each running its own image (builds are
images of their own; the first build is the blueprint's image): a role that publishes an HTTP
port, or whose health check GETs one, is a proxy role (several may be), its health check's
path becoming kamal-proxy's; the others are workers with their command. Named volumes and data
bind mounts are kept as role volumes. Roles and accessories are written in depends_on order.
Everything that has no place in a blueprint is listed with the reason and its line.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..accessories import Kind, env_needs, kind_of
from ..blueprint import BlueprintError, Problem
from ..errors import InvalidInput
from .compose_parts import (
    Port,
    depends,
    dotenv,
    env_items,
    health_command,
    interpolate,
    ordered,
    refs,
    required,
    split_env,
)
from .compose_parts import (
    ports as read_ports,
)
from .compose_parts import (
    volumes as read_volumes,
)
from .kinds import NAME_CHARS, compact, http_check, renamed, role_name, seconds
from .source import Doc, Notes, parse, read_text
from .writer import (
    LAB_PROXY_IMAGE,
    LAB_REGISTRY,
    REGISTRY_SECRET,
    SECRET_NAME,
    Draft,
    default_cloud,
    digest_problem,
    image_repo,
    registry_of,
    registry_section,
    relative,
)

_VERSION = re.compile(r"^(?:2(?:\.[0-4])?|3(?:\.[0-9])?)$")
_TOP = {"version", "name", "services", "volumes", "networks", "secrets", "configs", "include"}
_TOP_REASONS = {
    "networks": "an environment's containers share its CloudStack network",
    "secrets": "Compose file secrets: csdeploy passes secrets as environment variables (names under `secrets`)",
    "configs": "Compose configs (files in containers) have no blueprint equivalent: bake them into the image",
    "include": "included Compose files are not read: import each one, or merge them first",
}
# Published ports that are not HTTP (mail, DNS, databases, brokers, tracing agents): a service
# publishing only these is a worker, whatever its name.
NOT_HTTP = frozenset({21, 22, 23, 25, 53, 110, 143, 465, 587, 993, 995, 1025, 1883, 2049, 3306, 4369, 5432,
                      5672, 5775, 6379, 6831, 6832, 8883, 9042, 9300, 11211, 25672, 27017, 61613, 61616})
_REASONS = {
    "restart": "csdeploy runs every container with --restart unless-stopped",
    "container_name": "container names come from service, role and version",
    "networks": "an environment's containers share its CloudStack network",
    "network_mode": "containers use csdeploy's network",
    "labels": "csdeploy sets its own labels (service, role, destination, version)",
    "logging": "containers log with --log-opt max-size=10m",
    "expose": "apps reach accessories at their private addresses; only the proxy role is published",
    "entrypoint": "the blueprint runs the image's entrypoint: set it in the Dockerfile",
    "secrets": "Compose file secrets: pass them as environment secrets instead",
    "configs": "Compose configs have no blueprint equivalent: bake them into the image",
    "links": "apps reach accessories through csdeploy's variables (DATABASE_URL, REDIS_URL, ...)",
    "platform": "images are built for and pulled on the VMs' platform",
    "pull_policy": "csdeploy always pulls the deployed version",
    "scale": "use roles.NAME.count",
    "develop": "Compose Watch is for development",
    "tmpfs": "no tmpfs mounts in blueprints",
}
_OTHER = ("hostname", "domainname", "user", "working_dir", "stop_signal", "stop_grace_period", "init", "tty",
          "stdin_open", "privileged", "cap_add", "cap_drop", "security_opt", "ulimits", "sysctls", "devices",
          "extra_hosts", "dns", "dns_search", "dns_opt", "shm_size", "ipc", "pid", "mem_limit", "memswap_limit",
          "mem_reservation", "cpus", "cpu_shares", "cpu_count", "cpuset", "cgroup", "cgroup_parent", "annotations",
          "attach", "blkio_config", "oom_score_adj", "oom_kill_disable", "read_only", "runtime", "storage_opt",
          "userns_mode", "uts", "volumes_from", "external_links", "isolation", "mac_address", "gpus",
          "device_cgroup_rules", "group_add", "credential_spec", "post_start", "pre_stop", "use_api_socket",
          "models", "provider", "label_file", "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime",
          "cpu_percent", "pids_limit", "mem_swappiness", "volume_driver", "healthcheck_disabled")
_BIND_REASONS = {
    "code": "a development bind mount: the image carries the code",
    "file": "a bind mount of a file on this machine: bake it into the image (or a job/command that writes it)",
    "config": "a bind mount of configuration on this machine: bake it into the image",
    "host": "a path of the machine itself (time zone, Docker socket, ...): not carried over",
    "data": "a bind mount over a path a named volume also mounts: the named volume is kept",
}


def _volume_name(target: str) -> str:
    name = re.sub(r"[^a-z0-9_.-]+", "-", target.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-.")
    return name if name and name[0].isalnum() else "data"


_MAPPED = {"image", "build", "command", "environment", "env_file", "ports", "volumes", "healthcheck", "depends_on",
           "deploy", "profiles", "mem_limit", "mem_reservation", "cpus"}


def import_compose(path: Path, out: Path, registry: str = LAB_REGISTRY, *, env_files: Sequence[Path] = (),
                   profiles: Sequence[str] = ()) -> Draft:
    """The blueprint a Compose file makes (paths relative to ``out``), with its notes.
    ``env_files``: Compose's `--env-file` (instead of the `.env` beside the file);
    ``profiles``: Compose's `--profile` (with COMPOSE_PROFILES, the profiles whose services run)."""
    doc = parse(read_text(path, "Compose file"), str(path), "Compose file")
    problems: list[Problem] = []
    tree = doc.tree
    if not isinstance(tree, dict):
        raise BlueprintError([Problem(doc.file, 1, "", "expected a Compose file (a mapping with `services`)")])
    variables = project_variables(path, env_files)
    for where, text in _strings(tree, ()):
        problems += [doc.problem(where, message) for message in required(text, variables)]
    if problems:
        raise BlueprintError(problems, hint="nothing was written; set the variables in the environment or "
                                            + ("the --env-file" if env_files else "the .env file beside the Compose file"))
    version = tree.get("version")
    if version is not None and not _VERSION.match(str(version)):
        problems.append(doc.problem(("version",), f"unknown Compose file version {str(version)!r}: "
                                                  "csdeploy reads versions 2.x and 3.x and files without `version`"))
    services = tree.get("services")
    if not isinstance(services, dict) or not services:
        problems.append(doc.problem(("services",), "no services: a Compose file needs a `services` mapping"))
        raise BlueprintError(problems)
    importer = _Importer(doc, path, out, registry, variables)
    services = importer.extended(services)
    for name, svc in services.items():
        if not isinstance(svc, dict):
            problems.append(doc.problem(("services", name), "expected a mapping of service settings"))
        elif svc.get("image") is None and svc.get("build") is None:
            problems.append(doc.problem(("services", name), "has neither image nor build: csdeploy needs an image "
                                                            "to run, or a build to make one"))
        elif isinstance(svc.get("image"), str):
            why = digest_problem(interpolate(svc["image"], variables) or svc["image"])
            if why:
                problems.append(doc.problem(("services", name, "image"), why))
    if problems:
        raise BlueprintError(problems, hint="nothing was written")
    importer.env_file = Path(env_files[-1]) if env_files else path.parent / ".env"
    active = set(profiles) | {p for p in variables.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    services = importer.in_profiles(services, active)
    return importer.run(tree, services)


def project_variables(path: Path, env_files: Sequence[Path] = ()) -> dict[str, str]:
    """What Compose interpolates with: the `.env` file beside the Compose file (or the
    `--env-file` files instead, a later one winning), under the process environment (the shell
    wins, as in Compose). A named env file that is missing is refused, as Compose does."""
    found: dict[str, str] = {}
    for env_file in env_files:
        if not Path(env_file).is_file():
            raise InvalidInput(f"{env_file}: no such env file (--env-file); nothing was written")
        found.update(dotenv(read_text(Path(env_file), "env file")))
    default = path.parent / ".env"
    if not env_files and default.is_file():
        found.update(dotenv(read_text(default, ".env file")))
    import os

    found.update(os.environ)
    return found


def _size(value: Any) -> str | None:
    """A Compose byte size (`512M`, `1g`, `256mb`, a number of bytes) as a blueprint size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    m = re.fullmatch(r"\s*(\d+)\s*([bkmg])?b?\s*", str(value), re.I)
    return f"{m[1]}{(m[2] or '').lower()}" if m else None


def _as_mapping(value: Any) -> dict[str, Any]:
    """`environment:` / `labels:` as a mapping, from either of Compose's forms."""
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value if isinstance(value, list) else []:
        key, eq, val = str(item).partition("=")
        out[key] = val if eq else None
    return out


def _strings(value: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], str]]:
    """Every string value of the tree with its path (keys are not interpolated)."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _strings(v, path + (k,))]
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in _strings(v, path + (i,))]
    return []


class _Importer:
    def __init__(self, doc: Doc, path: Path, out: Path, registry: str, variables: dict[str, str]) -> None:
        self.doc, self.path, self.out, self.registry, self.variables = doc, path, out, registry, variables
        self.origins: dict[tuple[Any, ...], tuple[Any, ...]] = {(): ("services",)}
        self.notes = Notes()
        self.problems: list[Problem] = []
        self.secrets: list[str] = []
        self.build: dict[str, Any] | None = None
        self.build_service: str | None = None
        self.env_file = path.parent / ".env"
        self.skipped: set[str] = set()
        top = doc.tree.get("volumes") if isinstance(doc.tree, dict) else None
        self.top_volumes = set(top) if isinstance(top, dict) else set()

    def note(self, path: tuple[Any, ...], reason: str) -> None:
        self.notes.add(self.doc, path, reason)

    def depends_on(self, name: str, value: Any) -> list[str]:
        """The services ``name`` starts after. Compose's conditions (service_healthy,
        service_completed_successfully) become the order: accessories start before apps, and
        roles are deployed in this order."""
        out = []
        for dep in depends(value):
            if dep in self.skipped:
                self.note(("services", name, "depends_on"), f"depends on {dep}, which is not imported (its "
                                                            "profile is not active): dropped")
                continue
            out.append(dep)
        if isinstance(value, dict):
            for dep, spec in value.items():
                cond = spec.get("condition") if isinstance(spec, dict) else None
                if cond and cond != "service_started" and dep not in self.skipped:
                    self.note(("services", name, "depends_on", dep), f"condition {cond}: kept as start order "
                              f"({dep} first); csdeploy waits for an accessory's container to run, not its health")
        return out

    def in_profiles(self, services: dict[str, Any], active: set[str]) -> dict[str, Any]:
        """The services Compose starts: those without `profiles`, and those in an active profile.
        A dependency on a service left out is dropped (with a note), as nothing runs it."""
        out = {}
        for name, svc in services.items():
            listed = svc.get("profiles") if isinstance(svc, dict) else None
            if isinstance(listed, list) and listed and not active & {str(p) for p in listed}:
                names = ", ".join(str(p) for p in listed)
                self.note(("services", name, "profiles"), f"in profile(s) {names}, none of them active: not imported "
                                                          f"(Compose does not start it; --profile {listed[0]} does)")
                self.skipped.add(name)
                continue
            out[name] = svc
        return out

    def extended(self, services: dict[str, Any]) -> dict[str, Any]:
        """Services with `extends` merged over the service they extend (in this file or in
        `extends.file`), as Compose does: mappings merged, lists of ports/volumes/... joined,
        other values taken from the extending service."""
        out = dict(services)
        for name in services:
            out[name] = self._extend(name, out, [])
        return out

    def _extend(self, name: str, services: dict[str, Any], chain: list[str]) -> Any:
        svc = services[name]
        spec = svc.get("extends") if isinstance(svc, dict) else None
        if spec is None:
            return svc
        where = ("services", name, "extends")
        if isinstance(spec, str):
            spec = {"service": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("service"), str):
            self.problems.append(self.doc.problem(where, "expected `service: NAME` (and `file: PATH`)"))
            raise BlueprintError(self.problems, hint="nothing was written")
        parent_name = spec["service"]
        if isinstance(spec.get("file"), str):
            other = (self.path.resolve().parent / self.interp(spec["file"])).resolve()
            if not other.is_file():
                self.problems.append(self.doc.problem(where + ("file",), f"no such file {spec['file']!r}"))
                raise BlueprintError(self.problems, hint="nothing was written")
            other_tree = parse(read_text(other, "Compose file"), str(other), "Compose file").tree
            pool = other_tree.get("services") if isinstance(other_tree, dict) else None
            pool = pool if isinstance(pool, dict) else {}
            parent = pool.get(parent_name)
            self.note(where, f"extends service {parent_name} of {spec['file']}: merged in (its lines are "
                             "not cited)")
        else:
            if parent_name in chain or parent_name == name:
                self.problems.append(self.doc.problem(where, f"extends cycle: {' -> '.join([*chain, name, parent_name])}"))
                raise BlueprintError(self.problems, hint="nothing was written")
            parent = self._extend(parent_name, services, [*chain, name]) if parent_name in services else None
        if not isinstance(parent, dict):
            self.problems.append(self.doc.problem(where, f"no service named {parent_name!r} to extend"))
            raise BlueprintError(self.problems, hint="nothing was written")
        merged = {k: v for k, v in parent.items() if k not in ("depends_on", "extends")}
        for key, value in svc.items():
            if key == "extends":
                continue
            old = merged.get(key)
            if key in ("environment", "labels") and old is not None:
                merged[key] = {**_as_mapping(old), **_as_mapping(value)}
            elif isinstance(old, list) and isinstance(value, list) and key not in ("command", "entrypoint"):
                merged[key] = old + [v for v in value if v not in old]
            elif isinstance(old, dict) and isinstance(value, dict):
                merged[key] = {**old, **value}
            else:
                merged[key] = value
        return merged

    def interp(self, value: Any) -> str:
        """A Compose value interpolated with the project's variables (as written if one is unset)."""
        return interpolate(str(value), self.variables) or str(value)

    def run(self, tree: dict[str, Any], services: dict[str, Any]) -> Draft:
        for key in tree:
            if key.startswith("x-"):
                self.note((key,), "extension field: used through its YAML anchors, nothing of its own to map")
            elif key not in _TOP:
                self.note((key,), "not a Compose top-level key")
            elif key in _TOP_REASONS:
                self.note((key,), _TOP_REASONS[key])
        needs = {n: self.depends_on(n, s.get("depends_on")) for n, s in services.items()}
        order = ordered(self.doc, list(services), needs, self.problems)
        if self.problems:
            raise BlueprintError(self.problems)
        kinds = {n: (kind_of(self.interp(s["image"])) if isinstance(s.get("image"), str) and s.get("build") is None
                     else None)
                 for n, s in services.items()}
        apps = [n for n in order if kinds[n] is None]
        if not apps:
            raise BlueprintError([self.doc.problem(("services",), "only databases and caches here: a blueprint "
                                                                   "needs at least one app service to deploy")])
        web = {n: self.web_port(n, services[n]) for n in apps}
        proxies = [n for n in apps if web[n] is not None]
        provided = {var: n for n in order if kinds[n] for var in kinds[n].provides}  # type: ignore[union-attr]
        hosts = set(services)
        names = self.role_names(apps)
        # Compose's project name: COMPOSE_PROJECT_NAME, else `name:`, else the directory's name
        given = self.variables.get("COMPOSE_PROJECT_NAME")
        named = isinstance(tree.get("name"), str) and not given
        name = given or (self.interp(tree["name"]) if named else self.path.resolve().parent.name)
        self.service = role_name(name or "app")
        why = renamed(name or "app", self.service, "service")
        if why:
            self.note(("name",) if named else (), why if named else
                      f"from {'COMPOSE_PROJECT_NAME' if given else 'the directory name'}: {why}")
        image = self.app_image(services, apps)
        roles = {}
        for n in apps:
            self.origins[("roles", names[n])] = ("services", n)
            roles[names[n]] = self.role(n, services[n], web[n], names[n], image, provided, hosts)
        main = self.main_service(services, apps)
        first_role = names[main] if main in proxies else names[proxies[0]] if proxies else names[main]
        self.shared_volumes(services, apps, names, roles)
        accessories = {}
        for n in order:
            kind = kinds[n]
            if kind is not None:
                acc_name = role_name(n)
                if acc_name in roles:
                    acc_name = f"{acc_name[:NAME_CHARS - len(kind.name) - 1]}-{kind.name}"
                why = renamed(n, acc_name, "accessory")
                if why:
                    self.note(("services", n), why)
                self.origins[("accessories", acc_name)] = ("services", n)
                accessories[acc_name] = self.accessory(n, services[n], kind, acc_name, first_role, hosts)
        out: dict[str, Any] = {"service": self.service, "image": image}
        if self.build:
            out["build"] = self.build
        out["cloud"] = default_cloud()
        out["roles"] = roles
        if accessories:
            out["accessories"] = accessories
        out["registry"] = registry_section(image) if registry_of(image) else {
            "server": self.registry, "username": "csdeploy", "password": REGISTRY_SECRET}
        out["secrets"] = [REGISTRY_SECRET, *[s for s in self.secrets if s != REGISTRY_SECRET]]
        out["secrets_file"] = relative(self.env_file.resolve(), self.out.parent)
        if out["registry"]["server"] == LAB_REGISTRY:
            out["rollout"] = {"proxy_image": LAB_PROXY_IMAGE}
        comments = [f"Imported from {self.path}: {len(roles)} role(s), {len(accessories)} accessory(ies)."]
        if self.build_service is not None:
            self.origins[("build",)] = ("services", self.build_service, "build")
        self.origins[("service",)] = ("name",) if isinstance(tree.get("name"), str) else ("services",)
        main = self.main_service(services, apps)
        self.origins[("image",)] = ("services", main, "image") if "image" in services[main] else ("services", main)
        if self.problems:
            raise BlueprintError(self.problems, hint="nothing was written")
        origins = {bp: self.doc.line(src) for bp, src in self.origins.items()}
        return Draft(out, shlex.join(["csdeploy", "init", "--from-compose", str(self.path)]), list(self.notes), comments,
                     source=str(self.path), origins=origins)

    def where(self, at: tuple[Any, ...], base: tuple[Any, ...], env: Any, keys: dict[str, str]) -> None:
        """Record the source of a role's or accessory's parts, for problems found when validating."""
        for key, src in keys.items():
            self.origins[at + (key,)] = base + (src,)
        self.origins[at + ("env",)] = base + ("environment",)
        for name, path in env.where.items():
            self.origins[at + ("env", "clear", name)] = path

    # ---- roles ---------------------------------------------------------------------------
    def web_port(self, name: str, svc: dict[str, Any]) -> tuple[int, str | None] | None:
        """(the app port kamal-proxy forwards to, the health check's path) of a service that
        serves HTTP, None for one that does not: a published TCP port that is not a well-known
        non-HTTP port (SMTP, databases, brokers), or the port its health check GETs."""
        published = [p for p in read_ports(self.doc, Notes(), ("services", name, "ports"), svc.get("ports"),
                                           self.variables) if p.published and p.protocol == "tcp"]
        check = health_command((svc.get("healthcheck") or {}).get("test")) if isinstance(
            svc.get("healthcheck"), dict) else None
        found = http_check(check) if check else None
        web = [p.container for p in published if p.container not in NOT_HTTP]
        if found and found[1] is not None and (found[1] in web or found[1] in {p.container for p in published}):
            return found[1], found[0]
        if web:
            return web[0], found[0] if found else None
        return None

    def env_items(self, base: tuple[Any, ...], svc: dict[str, Any]) -> list[tuple[str, str | None, tuple[Any, ...]]]:
        """The service's variables as Compose gives them: its `env_file` files in order, then
        `environment` (which wins). A missing env file is noted (Compose refuses to start
        without one unless `required: false`); its variables are then not imported."""
        items: dict[str, tuple[str, str | None, tuple[Any, ...]]] = {}
        files = svc.get("env_file")
        listed = [files] if isinstance(files, (str, dict)) else files if isinstance(files, list) else []
        for i, entry in enumerate(listed):
            at = base + (("env_file", i) if isinstance(files, list) else ("env_file",))
            spec = entry if isinstance(entry, dict) else {"path": entry}
            if not isinstance(spec.get("path"), str):
                self.note(at, "not a file name: not read")
                continue
            name = self.interp(spec["path"])
            where = (self.path.resolve().parent / name).resolve()
            if not where.is_file():
                optional = spec.get("required") is False
                self.note(at, f"env file {name} is not here{' (required: false)' if optional else ''}: its "
                              "variables are not imported; list them under env or secrets")
                continue
            for key, value in dotenv(read_text(where, "env file")).items():
                items[key] = (key, value, at)
        for key, value, at in env_items(self.doc, base + ("environment",), svc.get("environment"), self.problems):
            items[key] = (key, value, at)
        return list(items.values())

    def resources(self, base: tuple[Any, ...], svc: dict[str, Any]) -> dict[str, Any]:
        """`deploy.resources.limits` (and `reservations.memory`), or the older `mem_limit`,
        `cpus`, `mem_reservation`, as the container's limits."""
        deploy = svc.get("deploy") if isinstance(svc.get("deploy"), dict) else {}
        res = deploy.get("resources") if isinstance(deploy.get("resources"), dict) else {}
        limits = res.get("limits") if isinstance(res.get("limits"), dict) else {}
        reserve = res.get("reservations") if isinstance(res.get("reservations"), dict) else {}
        out: dict[str, Any] = {}
        for key, value, at in (("cpus", limits.get("cpus", svc.get("cpus")), "cpus"),
                               ("memory", limits.get("memory", svc.get("mem_limit")), "memory"),
                               ("memory_reservation", reserve.get("memory", svc.get("mem_reservation")), "memory")):
            if value is None:
                continue
            text = self.interp(value) if isinstance(value, str) else value
            if key == "cpus":
                try:
                    out[key] = compact(float(text))
                except (TypeError, ValueError):
                    self.note(base + ("deploy", "resources"), f"cpus {value!r}: not a number, not read")
            else:
                size = _size(text)
                if size is None:
                    self.note(base + ("deploy", "resources"), f"{at} {value!r}: not a size, not read")
                else:
                    out[key] = size
        return out

    def role_names(self, apps: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for n in apps:
            name = role_name(n)
            while name in out.values():
                name = f"{name[:17]}-{len(out)}"
            why = renamed(n, name)
            if why:
                self.note(("services", n), why)
            out[n] = name
        return out

    def shared_volumes(self, services: dict[str, Any], apps: list[str], names: dict[str, str],
                       roles: dict[str, Any]) -> None:
        """A named volume several services mount is one directory in Compose (one machine);
        each role has VMs of its own, so each keeps its own copy: said where the second mounts it."""
        owner: dict[str, str] = {}
        for n in apps:
            for v in roles[names[n]].get("volumes", []):
                vname = v["name"] if isinstance(v, dict) else v.split(":", 1)[0]
                if vname in owner and owner[vname] != names[n]:
                    self.note(("services", n, "volumes"), f"volume {vname} is also role {owner[vname]}'s: each "
                                                          "role's VMs keep their own copy (Compose shares one)")
                owner.setdefault(vname, names[n])

    @staticmethod
    def main_service(services: dict[str, Any], apps: list[str]) -> str:
        """The service whose image is the blueprint's: the first one built here (its code is
        what each deploy ships), else the first app service."""
        return next((n for n in apps if services[n].get("build") is not None), apps[0])

    def app_image(self, services: dict[str, Any], apps: list[str]) -> str:
        """The blueprint's image: the main service's (its tag is the version to deploy)."""
        main = self.main_service(services, apps)
        first = services[main]
        if isinstance(first.get("image"), str):
            repo, tag = image_repo(self.interp(first["image"]))
            if tag:
                self.note(("services", main, "image"), f"tag '{tag}' dropped: csdeploy tags each deploy "
                                                       f"with its version (deploy --version {tag})")
            elif "@" not in first["image"]:
                self.note(("services", main, "image"), "no tag: the app's image runs at each deploy's version "
                                                       "(deploy --version latest runs what Compose runs)")
            return repo
        return f"{self.registry}/{self.service}"

    def role(self, name: str, svc: dict[str, Any], web: tuple[int, str | None] | None, rname: str, image: str,
             provided: dict[str, str], hosts: set[str]) -> dict[str, Any]:
        base: tuple[Any, ...] = ("services", name)
        role: dict[str, Any] = {}
        own, build = self.role_image(name, svc, image)
        if own != image:
            role["image"] = own
        if build is not None:
            role["build"] = build
        replicas = (svc.get("deploy") or {}).get("replicas") if isinstance(svc.get("deploy"), dict) else None
        if isinstance(replicas, int) and replicas >= 0:
            role["count"] = replicas
        cmd = svc.get("command")
        if isinstance(cmd, (str, list)) and cmd:
            role["cmd"] = cmd
        env = split_env(self.doc, self.notes, self.env_items(base, svc), provided=provided,
                        service_hosts=hosts - {name}, variables=self.variables)
        self.secrets += [s for s in env.secret if s not in self.secrets]
        if env.tree():
            role["env"] = env.tree()
        resources = self.resources(base, svc)
        if resources:
            role["resources"] = resources
        self.where(("roles", rname), base, env, {"cmd": "command", "proxy": "ports", "healthcheck": "healthcheck",
                                                 "count": "deploy", "image": "image"})
        port_list = read_ports(self.doc, self.notes, base + ("ports",), svc.get("ports"), self.variables)
        check = health_command((svc.get("healthcheck") or {}).get("test")) if isinstance(
            svc.get("healthcheck"), dict) else None
        if web is not None:
            role["proxy"] = self.proxy(base, svc, port_list, check, web)
        else:
            if rname == "web":
                role["proxy"] = False
            for p in port_list:
                self.note(p.path, "not an HTTP port: only roles that serve HTTP are published (through "
                                  "kamal-proxy); this port is reachable on the private network only")
            if check:
                hc: dict[str, Any] = {"cmd": check}
                hc.update(self.timings(base, svc["healthcheck"]))
                role["healthcheck"] = hc
        kept = []
        vols = self.volumes(base, svc)
        named = {v.target for v in vols if v.kind == "volume" and v.source}
        for v in vols:
            what = self.bind_kind(name, svc, v) if v.kind == "bind" else None
            if (v.kind == "volume" and v.source) or (what == "data" and v.target not in named):
                # a named volume, or a directory Docker makes at the first start: the role keeps it
                # (on its disk when it has one)
                vname = v.source if v.kind == "volume" else _volume_name(v.target)
                if v.kind == "bind":
                    self.note(v.path, f"a bind mount of {v.source}, a directory of data (not in the project, "
                                      f"not a file): kept as volume {vname}; copy its files there if you have any")
                text = f"{vname}:{v.target}"
                kept.append(text if role.get("count", 1) <= 1 else {"name": vname, "path": v.target,
                                                                     "per_host": True})
                if role.get("count", 1) > 1:
                    self.note(v.path, f"{role['count']} replicas: each VM keeps its own copy of {vname} "
                                      "(per_host: true); Compose shares it on one machine")
            elif v.kind == "bind":
                self.note(v.path, _BIND_REASONS.get(what or "", _BIND_REASONS["code"]))
            else:
                self.note(v.path, f"{'an' if v.kind[0] in 'aeiou' else 'a'} {v.kind} volume: nothing to keep across deploys")
        if kept:
            role["volumes"] = kept
        self.leftovers(base, svc, _MAPPED)
        return role

    def volumes(self, base: tuple[Any, ...], svc: dict[str, Any]) -> list[Any]:
        """The service's volumes; a named one that the file does not declare is refused, as
        Compose refuses it (a path was meant: `./data`, or the variable holding it is unset)."""
        vols = read_volumes(self.doc, self.notes, base + ("volumes",), svc.get("volumes"), self.variables)
        for v in vols:
            if v.kind == "volume" and v.source and v.source not in self.top_volumes:
                self.problems.append(self.doc.problem(
                    v.path, f"refers to undefined volume {v.source!r}: declare it under the top-level `volumes`, or "
                            "give a path (./NAME) for a directory of this machine"))
        return vols

    def bind_kind(self, name: str, svc: dict[str, Any], v: Any) -> str:
        """What a bind mount holds: `code` (the project or a build context: a development
        mount), `file` (one configuration file), `config` (a directory of configuration),
        `host` (the VM's own paths, such as /etc/localtime or the Docker socket), or `data` (a
        directory that is not in the project: Docker creates it at the first start)."""
        source = str(v.source or "")
        if source.startswith(("/etc/", "/var/run/", "/run/", "/sys", "/proc", "/dev", "/usr/", "/lib")) or \
                v.target.startswith(("/var/run/docker.sock", "/etc/localtime", "/etc/timezone")):
            return "host"
        last = source.rstrip("/").rsplit("/", 1)[-1]
        if re.search(r"\.[A-Za-z0-9]{1,6}$", last) and last not in (".", ".."):
            return "file"
        project = self.path.resolve().parent
        where = (project / source).resolve() if not source.startswith("/") else Path(source)
        if where == project or (where.is_dir() and any(where.iterdir())):
            return "code"
        build = svc.get("build")
        if build is not None:
            spec = {"context": build} if isinstance(build, str) else build if isinstance(build, dict) else {}
            context = (project / self.interp(spec.get("context", "."))).resolve()
            if where.is_relative_to(context):
                return "code"
        if v.target.startswith(("/etc/", "/usr/share/", "/usr/local/etc/", "/opt/config")) or \
                re.search(r"/(conf|config|configs|provisioning|templates|pipeline)(/|$)", v.target):
            return "config"
        return "data"

    def role_image(self, name: str, svc: dict[str, Any], image: str) -> tuple[str, dict[str, Any] | None]:
        """(the role's image, its own build section): the app's image (the first build, or the
        first app service's image) runs at each deploy's version; another build is the role's
        own image, built with the same version; another service's image runs as written (its
        tag or digest pins it)."""
        if svc.get("build") is not None:
            built = self.build_section(name, svc["build"])
            if self.build is None:
                self.build, self.build_service = built, name
            elif built != self.build:
                own = image_repo(self.interp(svc["image"]))[0] if isinstance(svc.get("image"), str) else \
                    f"{self.registry}/{self.service}-{role_name(name)}"
                return own, built
            if svc.get("image") is None:
                return image, None
        written = self.interp(svc["image"])
        repo, tag = image_repo(written)
        if repo == image:
            return repo, None
        if not tag and "@" not in written and interpolate(str(svc["image"]), self.variables) is not None:
            # Compose pulls `latest` for an image without a tag; a deploy's version is no tag of it
            self.note(("services", name, "image"), f"no tag: Compose runs {repo}:latest, and so does the "
                                                   "blueprint; pin a release tag to know what runs")
            return f"{written}:latest", None
        return written, None

    def build_section(self, name: str, value: Any) -> dict[str, Any]:
        base: tuple[Any, ...] = ("services", name, "build")
        spec = {"context": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else {}
        project = self.path.resolve().parent
        context = (project / self.interp(spec.get("context", "."))).resolve()
        out: dict[str, Any] = {"context": relative(context, self.out.parent)}
        if not context.is_relative_to(project):
            self.note(base + (("context",) if isinstance(value, dict) else ()),
                      f"the build context {relative(context, project)} is outside the project ({project}): "
                      "carried over as written; check it is the directory you mean to send to the builder")
        if spec.get("dockerfile"):
            out["dockerfile"] = self.interp(spec["dockerfile"])
            dockerfile = (context / out["dockerfile"]).resolve()
            if not dockerfile.is_relative_to(project):
                self.note(base + ("dockerfile",), f"the Dockerfile {relative(dockerfile, project)} is outside the "
                                                  f"project ({project}): carried over as written; check it")
        args = env_items(self.doc, base + ("args",), spec.get("args"), self.problems)
        clear = {k: v for k, v, _ in args if v is not None and not refs(v)}
        for k, v, p in args:
            if v is None or refs(v):
                self.note(p, f"build argument {k} comes from the shell: set it under build.args, or make it a "
                             "build secret")
        if clear:
            out["args"] = clear
        if spec.get("target"):
            out["target"] = str(spec["target"])
        secret_names = []
        for i, s in enumerate(spec.get("secrets") or []):
            sname = (s.get("source") if isinstance(s, dict) else s) or ""
            upper = re.sub(r"[^A-Z0-9_]", "_", str(sname).upper())
            if upper and upper[0].isalpha():
                secret_names.append(upper)
                self.note(base + ("secrets", i), f"build secret {sname!r} is secret {upper} "
                                                 f"(RUN --mount=type=secret,id={upper})")
        if secret_names:
            out["secrets"] = secret_names
            self.secrets += [s for s in secret_names if s not in self.secrets]
        for key in spec:
            if key not in ("context", "dockerfile", "args", "target", "secrets"):
                self.note(base + (key,), "not a build setting csdeploy passes (it builds with BuildKit for "
                                         "this machine's platform)")
        return out

    def proxy(self, base: tuple[Any, ...], svc: dict[str, Any], port_list: list[Port],
              check: str | None, web: tuple[int, str | None]) -> dict[str, Any]:
        app_port, path = web
        for p in port_list:
            if p.container != app_port:
                self.note(p.path, f"kamal-proxy publishes one app port (80/443), here {app_port}; this one "
                                  "is reachable on the private network only")
        proxy: dict[str, Any] = {"app_port": app_port}
        hc: dict[str, Any] = {}
        found = http_check(check) if check else None
        if path:
            hc["path"] = path
            if found and found[1] and found[1] != app_port:
                self.note(base + ("healthcheck",), f"the check calls port {found[1]}; kamal-proxy checks the "
                                                   f"app port {app_port}")
        else:
            why = "no HTTP URL in the health check" if check else "no health check"
            self.note(base + (("healthcheck",) if check else ()),
                      f"{why}: kamal-proxy will GET /up; set roles.NAME.proxy.healthcheck.path to a 2xx path")
        if isinstance(svc.get("healthcheck"), dict):
            hc.update({k: v for k, v in self.timings(base, svc["healthcheck"]).items() if k != "readiness_delay"})
        if hc:
            proxy["healthcheck"] = hc
        return proxy

    def timings(self, base: tuple[Any, ...], hc: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        hc = {k: self.interp(v) if isinstance(v, str) else v for k, v in hc.items()}
        for key in ("interval", "timeout"):
            if key in hc:
                value = seconds(hc[key])
                if value is None:
                    self.note(base + ("healthcheck", key), "not a duration: not read")
                else:
                    out[key] = compact(value)
        if "start_period" in hc and seconds(hc["start_period"]):
            out["readiness_delay"] = compact(seconds(hc["start_period"]) or 0)
        for key in hc:
            if key not in ("test", "interval", "timeout", "start_period", "disable"):
                self.note(base + ("healthcheck", key), "no equivalent: a check fails the deploy at its first timeout")
        return out

    def leftovers(self, base: tuple[Any, ...], svc: dict[str, Any], mapped: set[str]) -> None:
        for key in svc:
            if key in mapped:
                continue
            reason = _REASONS.get(key) or ("no blueprint equivalent" if key in _OTHER else "not a Compose service key")
            self.note(base + (key,), reason)
        deploy = svc.get("deploy")
        if isinstance(deploy, dict):
            for key in deploy:
                if key == "resources":
                    res = deploy["resources"] if isinstance(deploy["resources"], dict) else {}
                    for sub in res:
                        if sub not in ("limits", "reservations"):
                            self.note(base + ("deploy", "resources", sub), "no equivalent: not carried over")
                    continue
                if key not in ("replicas",):
                    self.note(base + ("deploy", key), "size VMs with service_offering; csdeploy rolls out in "
                                                      "its own way (rollout.batch)")

    # ---- accessories -----------------------------------------------------------------------
    def file_secrets(self, env: Any) -> None:
        """`NAME_FILE=/run/secrets/x` reads a Compose secret, which csdeploy does not mount: the
        image gets NAME as a secret instead (its value is the file's content)."""
        for key, value in list(env.clear.items()):
            if key.endswith("_FILE") and value.startswith("/run/secrets/") and SECRET_NAME.match(key[:-5]):
                name = key[:-5]
                del env.clear[key]
                if name not in env.secret:
                    env.secret.append(name)
                self.note(env.where.get(key, ()), f"{key} reads Compose secret {value.rsplit('/', 1)[-1]!r}, which "
                                                  f"csdeploy does not mount: {name} is a secret instead (give it "
                                                  "the file's content)")

    def accessory(self, name: str, svc: dict[str, Any], kind: Kind, acc_name: str, first_role: str,
                  hosts: set[str]) -> dict[str, Any]:
        base: tuple[Any, ...] = ("services", name)
        acc: dict[str, Any] = {"image": self.interp(svc["image"])}
        vols = self.volumes(base, svc)
        data_volume = next((v for v in vols if kind.data and v.target.rstrip("/") == kind.data
                            and v.kind in ("volume", "bind")), None)
        if kind.always_disk:
            acc["vm"] = {}
        else:
            acc["role"] = first_role
        acc["port"] = kind.port
        if svc.get("command"):
            acc["cmd"] = svc["command"]
        env = split_env(self.doc, self.notes, self.env_items(base, svc), provided={},
                        service_hosts=hosts - {name}, variables=self.variables)
        resources = self.resources(base, svc)
        if resources:
            acc["resources"] = resources
        self.file_secrets(env)
        need = env_needs(kind, env.clear, env.secret)
        for dropped in need.drop:
            env.clear.pop(dropped, None)
            if dropped in env.secret:
                env.secret.remove(dropped)
        env.secret += [s for s in need.add_secret if s not in env.secret]
        env.clear.update(dict(need.add_clear))
        for reason in need.reasons:
            self.note(base + ("environment",), reason)
        self.secrets += [s for s in env.secret if s not in self.secrets]
        if env.tree():
            acc["env"] = env.tree()
        self.where(("accessories", acc_name), base, env, {"cmd": "command", "image": "image", "volumes": "volumes"})
        if kind.data and (kind.always_disk or data_volume is not None):
            mount = f"/data/{acc_name}"
            acc["disk"] = {"size": kind.disk_gb, "mount": mount}
            acc["volumes"] = [f"{mount}/{kind.name}:{kind.data}"]
        for v in vols:
            if v is data_volume:
                continue
            self.note(v.path, "not the data directory: only the data directory goes on the disk"
                      if v.kind != "bind" else "a bind mount of a local file: put it in an image or the command")
        for p in read_ports(self.doc, Notes(), base + ("ports",), svc.get("ports"), self.variables):
            if p.container != kind.port:
                self.note(p.path, f"the accessory listens on {kind.port} (its private address)")
        if isinstance(svc.get("healthcheck"), dict):
            self.note(base + ("healthcheck",), "accessories have no health check in a blueprint")
        self.leftovers(base, svc, _MAPPED)
        return acc
