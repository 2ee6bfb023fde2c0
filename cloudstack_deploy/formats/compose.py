"""`csdeploy init --from-compose`: a docker-compose.yml as a blueprint.

Services with an image or a build become roles: the one that publishes HTTP is the proxy
role (its Compose health check's URL path becomes kamal-proxy's), the others are workers
with their command. Well-known images (postgres, mysql/mariadb, redis, valkey, memcached,
mongo) become accessories with a data disk and their environment contract; databases get a
VM of their own, caches share the proxy role's first VM. Roles and accessories are written
in depends_on order. Everything that has no place in a blueprint is listed with the reason.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from ..accessories import Kind, kind_of
from ..blueprint import BlueprintError, Problem
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
_HTTP_NAMES = ("web", "app", "frontend", "api", "server", "http", "nginx")
_REASONS = {
    "restart": "csdeploy runs every container with --restart unless-stopped",
    "container_name": "container names come from service, role and version",
    "networks": "an environment's containers share its CloudStack network",
    "network_mode": "containers use csdeploy's network",
    "labels": "csdeploy sets its own labels (service, role, destination, version)",
    "logging": "containers log with --log-opt max-size=10m",
    "expose": "apps reach accessories at their private addresses; only the proxy role is published",
    "entrypoint": "the blueprint runs the image's entrypoint: set it in the Dockerfile",
    "env_file": "not read (it usually holds secret values): list its names under env or secrets",
    "secrets": "Compose file secrets: pass them as environment secrets instead",
    "configs": "Compose configs have no blueprint equivalent: bake them into the image",
    "links": "apps reach accessories through csdeploy's variables (DATABASE_URL, REDIS_URL, ...)",
    "profiles": "every service is imported; drop the roles you do not want",
    "platform": "images are built for and pulled on the VMs' platform",
    "pull_policy": "csdeploy always pulls the deployed version",
    "scale": "use roles.NAME.count",
    "extends": "not followed: merge the extended service first",
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
_MAPPED = {"image", "build", "command", "environment", "ports", "volumes", "healthcheck", "depends_on", "deploy"}


def import_compose(path: Path, out: Path, registry: str = LAB_REGISTRY) -> Draft:
    """The blueprint a Compose file makes (paths relative to ``out``), with its notes."""
    doc = parse(read_text(path, "Compose file"), str(path), "Compose file")
    problems: list[Problem] = []
    tree = doc.tree
    if not isinstance(tree, dict):
        raise BlueprintError([Problem(doc.file, 1, "", "expected a Compose file (a mapping with `services`)")])
    variables = project_variables(path)
    for where, text in _strings(tree, ()):
        problems += [doc.problem(where, message) for message in required(text, variables)]
    if problems:
        raise BlueprintError(problems, hint="nothing was written; set the variables in the environment or "
                                            "the .env file beside the Compose file")
    version = tree.get("version")
    if version is not None and not _VERSION.match(str(version)):
        problems.append(doc.problem(("version",), f"unknown Compose file version {str(version)!r}: "
                                                  "csdeploy reads versions 2.x and 3.x and files without `version`"))
    services = tree.get("services")
    if not isinstance(services, dict) or not services:
        problems.append(doc.problem(("services",), "no services: a Compose file needs a `services` mapping"))
        raise BlueprintError(problems)
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
    return _Importer(doc, path, out, registry, variables).run(tree, services)


def project_variables(path: Path) -> dict[str, str]:
    """What Compose interpolates with: the `.env` file beside the Compose file, under the
    process environment (the shell wins, as in Compose)."""
    found: dict[str, str] = {}
    env_file = path.parent / ".env"
    if env_file.is_file():
        found.update(dotenv(read_text(env_file, ".env file")))
    import os

    found.update(os.environ)
    return found


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

    def note(self, path: tuple[Any, ...], reason: str) -> None:
        self.notes.add(self.doc, path, reason)

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
        needs = {n: depends(s.get("depends_on")) for n, s in services.items()}
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
        proxy = self.pick_proxy(services, apps)
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
            roles[names[n]] = self.role(n, services[n], n == proxy, names[n], image, provided, hosts)
        first_role = names[proxy] if proxy else names[apps[0]]
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
        env_file = self.path.resolve().parent / ".env"
        out["secrets_file"] = relative(env_file, self.out.parent)
        if out["registry"]["server"] == LAB_REGISTRY:
            out["rollout"] = {"proxy_image": LAB_PROXY_IMAGE}
        comments = [f"Imported from {self.path}: {len(roles)} role(s), {len(accessories)} accessory(ies)."]
        if self.build_service is not None:
            self.origins[("build",)] = ("services", self.build_service, "build")
        self.origins[("service",)] = ("name",) if isinstance(tree.get("name"), str) else ("services",)
        self.origins[("image",)] = ("services", apps[0], "image") if "image" in services[apps[0]] else \
            ("services", apps[0])
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
    def pick_proxy(self, services: dict[str, Any], apps: list[str]) -> str | None:
        published = [n for n in apps
                     if any(p.published and p.protocol == "tcp"
                            for p in read_ports(self.doc, Notes(), ("services", n, "ports"), services[n].get("ports"),
                                           self.variables))]
        if not published:
            return None
        named = [n for n in published if n.lower() in _HTTP_NAMES]
        return (named or published)[0]

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

    def app_image(self, services: dict[str, Any], apps: list[str]) -> str:
        """The blueprint's image: the first app service's (its tag is the version to deploy)."""
        first = services[apps[0]]
        if isinstance(first.get("image"), str):
            repo, tag = image_repo(self.interp(first["image"]))
            if tag:
                self.note(("services", apps[0], "image"), f"tag '{tag}' dropped: csdeploy tags each deploy "
                                                          f"with its version (deploy --version {tag})")
            return repo
        return f"{self.registry}/{self.service}"

    def role(self, name: str, svc: dict[str, Any], is_proxy: bool, rname: str, image: str,
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
        env = split_env(self.doc, self.notes, env_items(self.doc, base + ("environment",),
                                                                    svc.get("environment"), self.problems),
                              provided=provided, service_hosts=hosts - {name})
        self.secrets += [s for s in env.secret if s not in self.secrets]
        if env.tree():
            role["env"] = env.tree()
        self.where(("roles", rname), base, env, {"cmd": "command", "proxy": "ports", "healthcheck": "healthcheck",
                                                 "count": "deploy", "image": "image"})
        port_list = read_ports(self.doc, self.notes, base + ("ports",), svc.get("ports"), self.variables)
        check = health_command((svc.get("healthcheck") or {}).get("test")) if isinstance(
            svc.get("healthcheck"), dict) else None
        if is_proxy:
            role["proxy"] = self.proxy(base, svc, port_list, check)
        else:
            if rname == "web":
                role["proxy"] = False
            for p in port_list:
                self.note(p.path, "only the proxy role is published (through kamal-proxy); this port is not")
            if check:
                hc: dict[str, Any] = {"cmd": check}
                hc.update(self.timings(base, svc["healthcheck"]))
                role["healthcheck"] = hc
        kept = []
        for v in read_volumes(self.doc, self.notes, base + ("volumes",), svc.get("volumes"), self.variables):
            if v.kind == "volume" and v.source:  # a named volume: the role keeps it (on its disk when it has one)
                text = f"{v.source}:{v.target}"
                kept.append(text if role.get("count", 1) <= 1 else {"name": v.source, "path": v.target,
                                                                     "per_host": True})
                if role.get("count", 1) > 1:
                    self.note(v.path, f"{role['count']} replicas: each VM keeps its own copy of {v.source} "
                                      "(per_host: true); Compose shares it on one machine")
            else:
                self.note(v.path, "a development bind mount: the image carries the code" if v.kind == "bind" else
                          f"a {v.kind} volume: nothing to keep across deploys")
        if kept:
            role["volumes"] = kept
        self.leftovers(base, svc, _MAPPED)
        return role

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
        if not tag and "@" not in written:
            self.note(("services", name, "image"), f"no tag: {repo} runs at each deploy's version, as the "
                                                   "app's image does; pin it with a tag to run one release")
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
              check: str | None) -> dict[str, Any]:
        web = next(p for p in port_list if p.published and p.protocol == "tcp")
        for p in port_list:
            if p is not web:
                self.note(p.path, "kamal-proxy publishes one app port (80/443); this one is not published")
        proxy: dict[str, Any] = {"app_port": web.container}
        hc: dict[str, Any] = {}
        found = http_check(check) if check else None
        if found:
            hc["path"] = found[0]
            if found[1] and found[1] != web.container:
                self.note(base + ("healthcheck",), f"the check calls port {found[1]}; kamal-proxy checks the "
                                                   f"app port {web.container}")
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
                if key != "replicas":
                    self.note(base + ("deploy", key), "size VMs with service_offering; csdeploy rolls out in "
                                                      "its own way (rollout.batch)")

    # ---- accessories -----------------------------------------------------------------------
    def accessory(self, name: str, svc: dict[str, Any], kind: Kind, acc_name: str, first_role: str,
                  hosts: set[str]) -> dict[str, Any]:
        base: tuple[Any, ...] = ("services", name)
        acc: dict[str, Any] = {"image": self.interp(svc["image"])}
        vols = read_volumes(self.doc, self.notes, base + ("volumes",), svc.get("volumes"), self.variables)
        data_volume = next((v for v in vols if kind.data and v.target.rstrip("/") == kind.data and v.kind != "bind"),
                           None)
        if kind.always_disk:
            acc["vm"] = {}
        else:
            acc["role"] = first_role
        acc["port"] = kind.port
        if svc.get("command"):
            acc["cmd"] = svc["command"]
        env = split_env(self.doc, self.notes, env_items(self.doc, base + ("environment",),
                                                                    svc.get("environment"), self.problems),
                              provided={}, service_hosts=hosts - {name})
        for needed in kind.secret:
            if needed not in env.secret and needed not in env.clear:
                env.secret.append(needed)
                self.note(base + ("environment",), f"{needed} added as a secret: the {kind.name} image needs it")
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
