"""`csdeploy init --from-kamal config/deploy.yml`: a Kamal 2 configuration as a blueprint.

Roles keep their commands, env and proxy settings, with one VM per host Kamal listed;
accessories keep image, port, env, volumes and command, on the role whose hosts they share
or on a VM of their own. Secrets come by name from the config and from .kamal/secrets
(never a value). Destinations (config/deploy.DEST.yml) become blueprint overlays
(csdeploy.DEST.yml beside the blueprint, used with `-d DEST`, see blueprint_overlay.py). ERB cannot be evaluated here: it is refused with its line.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

from ..blueprint import BlueprintError, Problem
from ..blueprint_overlay import DESTINATION_RE, overlay_path
from ..blueprint_rules import printable
from ..blueprint_schema import ENV_NAME_RE
from .kamal_aliases import translate
from .kamal_out import LABEL_DISK, LABEL_OFFERING, LABEL_VM
from .kinds import compact, renamed, role_name, seconds
from .source import Doc, Note, Notes, parse, read_text
from .writer import (
    LAB_PROXY_IMAGE,
    LAB_REGISTRY,
    SECRET_NAME,
    Draft,
    Overlay,
    default_cloud,
    digest_problem,
    image_repo,
    registry_of,
    relative,
)

_ERB = re.compile(r"<%")
#: Kamal 2's local registry (`registry.server: localhost:5555`): on this machine, not the hosts'.
_LOCAL_REGISTRY = re.compile(r"^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?$")
_SECRET_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_TOP_MAPPED = {"service", "image", "servers", "proxy", "registry", "builder", "env", "accessories", "ssh",
               "primary_role", "retain_containers", "boot", "deploy_timeout", "drain_timeout", "readiness_delay",
               "volumes", "aliases"}
_TOP_REASONS = {
    "hooks_path": "Kamal hooks have no csdeploy equivalent: run them around csdeploy deploy",
    "asset_path": "asset bridging between versions is not done by csdeploy",
    "logging": "containers log with --log-opt max-size=10m",
    "labels": "csdeploy sets its own labels",
    "require_destination": "every csdeploy command names its environment (--env)",
}


def _check_erb(text: str, file: str) -> None:
    problems = [Problem(file, i, "", "ERB (<% ... %>) is Ruby that Kamal evaluates; csdeploy reads plain YAML: "
                                    "write the value, or a secret name under env.secret")
                for i, line in enumerate(text.splitlines(), start=1) if _ERB.search(line)]
    if problems:
        raise BlueprintError(problems, hint="nothing was written")


def _read(path: Path) -> Doc:
    text = read_text(path, "Kamal config")
    _check_erb(text, str(path))
    doc = parse(text, str(path), "Kamal config")
    if not isinstance(doc.tree, dict):
        raise BlueprintError([Problem(str(path), 1, "", "expected a Kamal config (a mapping with service, "
                                                        "image and servers)")])
    return doc


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v)
        return out
    return copy.deepcopy(over)


def read_secret_names(root: Path, notes: Notes) -> list[str]:
    """Names defined in .kamal/secrets* (values are never read into anything)."""
    names: list[str] = []
    for path in sorted((root / ".kamal").glob("secrets*")):
        if path.is_dir():
            continue
        doc = Doc(str(path), None)
        for i, line in enumerate(read_text(path, "Kamal secrets file").splitlines(), start=1):
            m = _SECRET_LINE.match(line)
            if not m or line.lstrip().startswith("#"):
                continue
            name, source = m[1], m[2].strip()
            if name not in names:
                names.append(name)
            if source not in (f"${name}", f"${{{name}}}"):
                doc.lines[(name,)] = i
                kind = "a command" if re.search(r"[$][(]|`", source) else "another variable" if \
                    source.startswith("$") else "a literal value (not copied)"
                notes.add(doc, (name,), f"Kamal takes it from {kind}: export {name}, or put it in the secrets file")
    return names


def import_kamal(path: Path, out: Path) -> Draft:
    doc = _read(path)
    root = path.resolve().parent.parent if path.resolve().parent.name == "config" else path.resolve().parent
    notes = Notes()
    secret_names = read_secret_names(root, notes)
    tree, secrets = _Importer(doc, notes, root, out).blueprint(doc.tree)
    ordered = list(secret_names)
    tree["secrets"] = ordered + [s for s in secrets if s not in ordered]
    comments = []
    overlays = []
    for dest in sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")):
        name = dest.name[len(path.stem) + 1: -len(path.suffix)]
        if not DESTINATION_RE.fullmatch(name):
            notes.append(Note(str(dest), None, "", "a destination csdeploy can name is 1-40 letters, digits, '-' "
                                                   "or '_': rename the file to import it"))
            continue
        dest_doc = _read(dest)
        merged = _merge(doc.tree, dest_doc.tree)
        dest_notes = Notes()
        dest_tree, dest_secrets = _Importer(Doc(str(dest), merged, dest_doc.lines), dest_notes, root,
                                            out).blueprint(merged)
        dest_tree["secrets"] = ordered + [s for s in dest_secrets if s not in ordered]
        seen = {(n.key, n.reason) for n in notes}
        own = [n for n in dest_notes if n.line is not None and (n.key, n.reason) not in seen]
        overlay, dropped = overlay_of(tree, dest_tree)
        for key in dropped:
            own.append(Note(str(dest), dest_doc.line(_source_path(key)), "",
                            f"{key} is in the blueprint but not in this destination: an overlay can change "
                            f"it, not remove it; edit the overlay for it"))
        env = role_name(name)
        overlays.append(Overlay(name, overlay, own, str(dest),
                                {bp: dest_doc.line(src) for bp, src in _origins(merged, dest_tree).items()}))
        written = overlay_path(out, name)
        comments.append(f"Destination {name}: {written.name}; " +
                        shlex.join(["csdeploy", "create-env", str(out), "-d", name, "--env", env]))
    return Draft(tree, shlex.join(["csdeploy", "init", "--from-kamal", str(path)]), list(notes), comments, source=str(path),
                 origins={bp: doc.line(src) for bp, src in _origins(doc.tree, tree).items()}, overlays=overlays)


def overlay_of(base: dict[str, Any], other: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The overlay that, deep-merged onto blueprint ``base`` (`blueprint_overlay.merge`), gives
    ``other``; and the dotted paths of what ``base`` has and ``other`` lacks (an overlay cannot
    remove a key). Mappings are compared key by key; anything else is replaced whole."""
    dropped: list[str] = []

    def walk(a: Any, b: Any, path: tuple[str, ...]) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            out = {}
            for k in b:
                if k not in a:
                    out[k] = copy.deepcopy(b[k])
                elif (sub := walk(a[k], b[k], path + (str(k),))) is not _SAME:
                    out[k] = sub
            dropped.extend(".".join(path + (str(k),)) for k in a if k not in b)
            return out or _SAME
        return _SAME if a == b else copy.deepcopy(b)

    result = walk(base, other, ())
    return ({} if result is _SAME else result), [printable(k) for k in dropped]


_SAME: Any = object()


def _volume_map(text: str) -> dict[str, Any]:
    name, _, rest = text.partition(":")
    path, _, ro = rest.partition(":")
    return {"name": name, "path": path, **({"readonly": True} if ro == "ro" else {})}


def _source_path(key: str) -> tuple[Any, ...]:
    """The Kamal key a dotted blueprint path came from, at the top level (`roles.job` -> servers)."""
    top = key.split(".")[0]
    return (_TOP_SOURCE.get(top, top),)


_TOP_SOURCE = {"service": "service", "image": "image", "build": "builder", "roles": "servers",
               "accessories": "accessories", "registry": "registry", "env": "env", "retain_versions":
               "retain_containers", "cloud": "ssh", "rollout": "boot"}


def _origins(cfg: Any, tree: dict[str, Any]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Where the parts of the blueprint came from in the Kamal config (for validation problems)."""
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for key, src in _TOP_SOURCE.items():
        if key in tree:
            out[(key,)] = (src,)
    servers = cfg.get("servers") if isinstance(cfg, dict) else None
    for group, src in (("roles", servers if isinstance(servers, dict) else {"web": servers}),
                       ("accessories", cfg.get("accessories") if isinstance(cfg, dict) else None)):
        for name, spec in (src or {}).items() if isinstance(src, dict) else ():
            base = ("servers" if group == "roles" else "accessories", name)
            if not isinstance(servers, dict) and group == "roles":
                base = ("servers",)
            at = (group, role_name(str(name)))
            out[at] = base
            for key in ("cmd", "image", "port", "volumes", "proxy"):
                out[at + (key,)] = base + (key,)
            env = spec.get("env") if isinstance(spec, dict) else None
            if isinstance(env, dict):
                clear = env.get("clear") if ("clear" in env or "secret" in env) else env
                inner = ("clear",) if clear is not env else ()
                for k in clear if isinstance(clear, dict) else ():
                    out[at + ("env", "clear", str(k))] = base + ("env",) + inner + (k,)
            own_proxy = isinstance(spec, dict) and isinstance(spec.get("proxy"), dict)
            if group == "roles" and not own_proxy and isinstance(cfg.get("proxy"), dict) and \
                    str(name) == str(cfg.get("primary_role", "web")):
                out[at + ("proxy",)] = ("proxy",)  # the primary role's proxy is the top-level one
                for key in cfg["proxy"]:
                    out[at + ("proxy", "host" if key == "hosts" else key)] = ("proxy", key)
    return out


class _Importer:
    def __init__(self, doc: Doc, notes: Notes, root: Path, out: Path) -> None:
        self.doc, self.notes, self.root, self.out = doc, notes, root, out
        self.secrets: list[str] = []
        self.used_tags: set[str] = set()

    def note(self, path: tuple[Any, ...], reason: str) -> None:
        self.notes.add(self.doc, path, reason)

    def secret(self, name: Any, path: tuple[Any, ...]) -> str | None:
        text = str(name)
        if ":" in text:
            text, _, source = text.partition(":")
            self.note(path, f"Kamal gives {text} the value of secret {source}; csdeploy's secret is named {text}")
        if not SECRET_NAME.match(text):
            self.note(path, f"'{text}' is no UPPER_SNAKE_CASE secret name: not carried over")
            return None
        if text not in self.secrets:
            self.secrets.append(text)
        return text

    def env(self, value: Any, path: tuple[Any, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            return {}
        inner: tuple[Any, ...] = ("clear",)
        if "clear" not in value and "secret" not in value and "tags" not in value:
            value, inner = {"clear": value}, ()
        out: dict[str, Any] = {}
        clear = value.get("clear")
        if isinstance(clear, dict) and clear:
            kept = {}
            for k, v in clear.items():
                if not ENV_NAME_RE.fullmatch(str(k)):
                    self.note(path + inner + (k,),
                              f"'{k}' is not an environment variable name csdeploy accepts: not carried over")
                    continue
                kept[str(k)] = "true" if v is True else "false" if v is False else "" if v is None else str(v)
            if kept:
                out["clear"] = kept
        secret = [s for i, n in enumerate(value.get("secret") or []) if (s := self.secret(n, path + ("secret", i)))]
        if secret:
            out["secret"] = secret
        return out

    def blueprint(self, cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        registry = cfg.get("registry") if isinstance(cfg.get("registry"), dict) else {}
        server = registry.get("server")
        image = str(cfg.get("image", ""))
        if server and registry_host_missing(image):
            image = f"{server}/{image}"
        if registry_of(image) and _LOCAL_REGISTRY.match(registry_of(image) or ""):
            # Kamal 2's local registry: a registry container on this machine that the hosts
            # reach through an SSH tunnel while deploying. csdeploy has none: the hosts pull from
            # a registry they reach themselves (here the lab's).
            self.note(("registry",) if registry else ("image",),
                      f"{registry_of(image)} is Kamal's local registry (on this machine, reached by the hosts "
                      f"through SSH while deploying): csdeploy's hosts pull from a registry they reach; "
                      f"{LAB_REGISTRY} (the lab's) is written, change it for a real cloud")
            image = f"{LAB_REGISTRY}/{image.split('/', 1)[1]}"
            registry = {"server": LAB_REGISTRY, "username": "csdeploy", "password": ["REGISTRY_PASSWORD"]}
        problems = [self.doc.problem(at, why) for at, img in
                    [(("image",), image), *((("accessories", n, "image"), str(a.get("image", "")))
                                            for n, a in (cfg.get("accessories") or {}).items() if isinstance(a, dict))]
                    if (why := digest_problem(img))]
        if problems:
            raise BlueprintError(problems, hint="nothing was written")
        repo, tag = image_repo(image)
        if tag:
            self.note(("image",), f"tag '{tag}' dropped: csdeploy tags each deploy with its version")
        service = str(cfg.get("service", "app"))
        tree: dict[str, Any] = {"service": role_name(service), "image": repo}
        if why := renamed(service, tree["service"], "service"):
            self.note(("service",), why)
        build = self.builder(cfg.get("builder"))
        if build:
            tree["build"] = build
        tree["cloud"] = default_cloud()
        ssh = cfg.get("ssh") if isinstance(cfg.get("ssh"), dict) else {}
        for key, value in ssh.items():
            if key == "port" or key == "user" and value == "root":
                tree["cloud"]["ssh"][key] = value
            elif key == "user":
                # A user the VM template lacks is no SSH login at all: create-env would wait for
                # SSH until its timeout. csdeploy logs in as the template's user with its own key.
                self.note(("ssh", key), f"csdeploy logs in as the template's user (root) with the key it makes; "
                                        f"'{value}' is not created on the VMs: build it into the template, "
                                        f"then set cloud.ssh.user")
            else:
                self.note(("ssh", key), "csdeploy makes and pins its own SSH keys per environment")
        roles, role_hosts = self.roles(cfg)
        env_cfg = cfg.get("env") if isinstance(cfg.get("env"), dict) else {}
        for tag in env_cfg.get("tags") or {} if isinstance(env_cfg.get("tags"), dict) else ():
            if tag not in self.used_tags:
                self.note(("env", "tags", tag), f"no host of a role has tag {tag}: its env is not carried over")
        aliases = self.aliases(cfg.get("aliases"), str(cfg.get("primary_role", "web")), roles)
        if aliases:
            tree["aliases"] = aliases
        volumes = self.volumes(cfg.get("volumes"))
        for role in roles.values() if volumes else ():  # Kamal mounts them into every role's containers
            role["volumes"] = [v if role.get("count", 1) <= 1 else {**_volume_map(v), "per_host": True}
                               for v in volumes]
        if volumes and any(role.get("count", 1) > 1 for role in roles.values()):
            self.note(("volumes",), "a role with several hosts keeps one copy of each volume per host "
                                    "(per_host: true), as Kamal does; they are not shared")
        tree["roles"] = roles
        accessories = {}
        for n, a in (cfg.get("accessories") or {}).items() if isinstance(cfg.get("accessories"), dict) else ():
            if not isinstance(a, dict):
                continue
            if why := renamed(str(n), role_name(str(n)), "accessory"):
                self.note(("accessories", n), why)
            accessories[role_name(str(n))] = self.accessory(str(n), a, role_hosts)
        if accessories:
            tree["accessories"] = accessories
        if registry:
            tree["registry"] = self.registry(registry)
        top_env = self.env(cfg.get("env"), ("env",))
        if top_env:
            tree["env"] = top_env
        tree["secrets"] = []
        if isinstance(cfg.get("retain_containers"), int):
            tree["retain_versions"] = cfg["retain_containers"]
        rollout: dict[str, Any] = {}
        if tree.get("registry", {}).get("server") == LAB_REGISTRY:
            rollout["proxy_image"] = LAB_PROXY_IMAGE
        boot = cfg.get("boot")
        if isinstance(boot, dict) and isinstance(boot.get("limit"), int):
            rollout["batch"] = boot["limit"]
        if isinstance(boot, dict) and set(boot) - {"limit"}:
            self.note(("boot",), "only boot.limit has an equivalent (rollout.batch)")
        if rollout:
            tree["rollout"] = rollout
        for key in cfg:
            if key not in _TOP_MAPPED:
                self.note((key,), _TOP_REASONS.get(key, "no blueprint equivalent"))
        return tree, list(self.secrets)

    def aliases(self, value: Any, primary: str, roles: dict[str, Any]) -> dict[str, str]:
        """Kamal aliases that have a csdeploy command of the same meaning (`kamal_aliases.py`)."""
        out: dict[str, str] = {}
        if value is not None and not isinstance(value, dict):
            self.note(("aliases",), "expected a mapping of alias names to kamal command lines")
            return out
        kamal_roles = self.doc.tree.get("servers") if isinstance(self.doc.tree, dict) else None
        names = list(kamal_roles) if isinstance(kamal_roles, dict) else ["web"]

        def role_of(kamal_role: str) -> str | None:
            return role_name(kamal_role) if kamal_role in names and role_name(kamal_role) in roles else None

        for name, line in (value or {}).items():
            alias = role_name(str(name))
            try:
                out[alias] = translate(str(line), primary, role_of)
            except ValueError as exc:
                self.note(("aliases", name), str(exc))
                continue
            if why := renamed(str(name), alias, "alias"):
                self.note(("aliases", name), why)
        return out

    def volumes(self, value: Any) -> list[str]:
        """Kamal's `volumes` (every role's): named volumes carry over (kept across deploys on the
        role's disk or Docker's place); a host directory is noted, as the blueprint keeps files in
        named volumes."""
        out = []
        for i, item in enumerate(value if isinstance(value, list) else []):
            parts = str(item).split(":")
            if len(parts) not in (2, 3) or not parts[1].startswith("/"):
                self.note(("volumes", i), "not SOURCE:/path[:ro]: left out")
            elif parts[0].startswith(("/", ".", "~", "$")):
                self.note(("volumes", i), f"a host directory ({parts[0]}): csdeploy keeps a role's files in named "
                                          f"volumes on its disk: write NAME:{parts[1]} to keep them")
            else:
                name = role_name(parts[0]).replace("-", "_") if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}",
                                                                                parts[0]) else parts[0]
                out.append(f"{name}:{parts[1]}" + (":ro" if parts[2:] == ["ro"] else ""))
        return out

    def builder(self, value: Any) -> dict[str, Any] | None:
        """Kamal builds ./Dockerfile in the project unless `builder` says otherwise: that
        becomes `build:` when the Dockerfile is there; `arch` becomes the build platform."""
        value = value if isinstance(value, dict) else {}
        context = (self.root / str(value.get("context", "."))).resolve()
        dockerfile = (self.root / str(value.get("dockerfile", "Dockerfile"))).resolve()
        if "dockerfile" not in value and "context" in value:
            dockerfile = context / "Dockerfile"
        explicit = any(k in value for k in ("context", "dockerfile", "args", "secrets", "target"))
        if not dockerfile.is_file() and not explicit:
            self.note(("builder",) if value else (), f"no {relative(dockerfile, self.root)} in the project: "
                                                     "no build: section; deploys use the image as it is pushed")
            return None
        if not dockerfile.is_file():
            self.note(("builder",), f"{relative(dockerfile, self.root)} is not in the project yet: "
                                    "csdeploy build needs it")
        out: dict[str, Any] = {"context": relative(context, self.out.parent)}
        if relative(dockerfile, context) != "Dockerfile":
            out["dockerfile"] = relative(dockerfile, context)
        for key, path in (("context", context), ("dockerfile", dockerfile)):
            if key in value and relative(path, self.root).startswith(".."):
                self.note(("builder", key), f"{relative(path, self.root)} is outside the project "
                                            f"({self.root}): check it is what you mean to build")
        if isinstance(value.get("args"), dict) and value["args"]:
            out["args"] = {str(k): str(v) for k, v in value["args"].items()}
        secrets = [s for i, n in enumerate(value.get("secrets") or []) if (s := self.secret(n, ("builder", "secrets", i)))]
        if secrets:
            out["secrets"] = secrets
        if value.get("target"):
            out["target"] = str(value["target"])
        platform = self.platform(value.get("arch"))
        if platform:
            out["platform"] = platform
        for key in value:
            if key == "cache":
                kind = value["cache"].get("type") if isinstance(value["cache"], dict) else None
                self.note(("builder", key), f"Kamal's {kind or ''} build cache is not configured: csdeploy "
                                            "builds with the local BuildKit cache".replace("  ", " "))
            elif key in ("remote", "local"):
                self.note(("builder", key), "csdeploy builds with this machine's Docker engine (BuildKit), "
                                            "not a remote builder")
            elif key not in ("context", "dockerfile", "args", "secrets", "target", "arch"):
                self.note(("builder", key), "no build: equivalent")
        return out

    def platform(self, arch: Any) -> str | None:
        """Kamal's `builder.arch` (amd64, arm64, or a list) as `build.platform`: one platform,
        as the image is loaded into the local engine and pushed from there."""
        arches = [str(a) for a in (arch if isinstance(arch, list) else [arch] if arch else [])]
        good = [a for a in arches if re.fullmatch(r"[a-z0-9_]+(?:/[a-z0-9]+)?", a)]
        for i, a in enumerate(arches):
            if a not in good:
                self.note(("builder", "arch") + ((i,) if isinstance(arch, list) else ()),
                          f"'{a}' is not an architecture such as amd64 or arm64")
        if not good:
            return None
        chosen = "amd64" if "amd64" in good else good[0]
        if len(good) > 1:
            self.note(("builder", "arch"), f"csdeploy builds one platform per image: linux/{chosen} (the VMs' "
                                           f"architecture); the others ({', '.join(a for a in good if a != chosen)}) "
                                           "are not built")
        return f"linux/{chosen}"

    def registry(self, reg: dict[str, Any]) -> dict[str, Any]:
        user = reg.get("username")
        if isinstance(user, list):
            self.note(("registry", "username"), "a username from a secret: write the user name here")
            user = "CHANGE-ME"
        password = reg.get("password")
        if isinstance(password, list) and password:
            name = self.secret(password[0], ("registry", "password"))
        else:
            self.note(("registry", "password"), "not a secret reference: the value was not copied; secret "
                                                "KAMAL_REGISTRY_PASSWORD must hold it")
            name = self.secret("KAMAL_REGISTRY_PASSWORD", ("registry", "password"))
        return {"server": str(reg.get("server", "docker.io")), "username": str(user or "CHANGE-ME"),
                "password": name or "KAMAL_REGISTRY_PASSWORD"}

    def roles(self, cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        servers = cfg.get("servers")
        if isinstance(servers, list):
            servers = {"web": servers}
        if not isinstance(servers, dict) or not servers:
            raise BlueprintError([self.doc.problem(("servers",), "no servers: a Kamal config lists its hosts "
                                                                 "under servers")])
        primary = str(cfg.get("primary_role", "web"))
        env_cfg = cfg.get("env") if isinstance(cfg.get("env"), dict) else {}
        tags = env_cfg.get("tags") if isinstance(env_cfg.get("tags"), dict) else {}
        for tag in tags:
            if not isinstance(tags[tag], dict):
                self.note(("env", "tags", tag), "expected a mapping of variables: left out")
        tags = {t: v for t, v in tags.items() if isinstance(v, dict)}
        root_proxy = cfg.get("proxy") if isinstance(cfg.get("proxy"), dict) else {}
        roles: dict[str, Any] = {}
        host_role: dict[str, str] = {}
        listed: dict[str, tuple[str, frozenset[str]]] = {}   # role -> (its Kamal name, its hosts)
        for name, spec in servers.items():
            path: tuple[Any, ...] = ("servers", name)
            spec = {"hosts": spec} if isinstance(spec, list) else spec if isinstance(spec, dict) else {}
            rname = role_name(str(name))
            if why := renamed(str(name), rname):
                self.note(path, why)
            hosts = [str(next(iter(h))) if isinstance(h, dict) and h else str(h) for h in spec.get("hosts") or []]
            for h in hosts:
                host_role.setdefault(h, rname)
            listed[rname] = (str(name), frozenset(hosts))
            role: dict[str, Any] = {"count": len(hosts)}
            if spec.get("cmd"):
                role["cmd"] = spec["cmd"]
            env = self.env(spec.get("env"), path + ("env",))
            for tag in self.role_tags(spec.get("hosts"), path + ("hosts",), tags):
                env = _env_merge(env, self.env(tags[tag], ("env", "tags", tag)))
            if env:
                role["env"] = env
            proxy = spec.get("proxy", name == primary or None)
            if proxy is True:
                proxy = root_proxy
            if isinstance(proxy, dict):
                role["proxy"] = self.proxy(proxy, path + ("proxy",), cfg)  # deploy_timeout, drain_timeout: Kamal's, for every proxy role
            elif rname == "web":
                role["proxy"] = False
            options = spec.get("options") if isinstance(spec.get("options"), dict) else {}
            hc = {"cmd": options.get("health-cmd")} if options.get("health-cmd") else {}
            for key in ("interval", "timeout"):
                if seconds(options.get(f"health-{key}")):
                    hc[key] = compact(seconds(options[f"health-{key}"]) or 0)
            if "proxy" not in role or role["proxy"] is False:
                if seconds(cfg.get("readiness_delay")):
                    hc["readiness_delay"] = compact(seconds(cfg["readiness_delay"]) or 0)
                if hc:
                    role["healthcheck"] = hc
            for key in options:
                if not key.startswith("health-"):
                    self.note(path + ("options", key), "the role's container options are not passed by csdeploy")
            self.labels(role, spec.get("labels"), path, offering_key="service_offering")
            for key in spec:
                if key not in ("hosts", "cmd", "env", "proxy", "options", "labels"):
                    self.note(path + (key,), "no blueprint equivalent")
            roles[rname] = role
        self.share_vms(roles, listed, host_role, role_name(primary))
        return roles, host_role

    def share_vms(self, roles: dict[str, Any], listed: dict[str, tuple[str, frozenset[str]]],
                  host_role: dict[str, str], primary: str) -> None:
        """Roles listing exactly the same hosts run on the same VMs, as in Kamal: the primary role,
        else the first proxy role among them (else the first) owns the VMs, the others get `run_on` it. A second HTTP
        service there needs its own proxy host or path prefix (Kamal's rule too); without one it
        keeps VMs of its own, said in a note."""
        groups: dict[frozenset[str], list[str]] = {}
        for rname, (_, hosts) in listed.items():
            if hosts:
                groups.setdefault(hosts, []).append(rname)
        for members in groups.values():
            if len(members) < 2:
                continue
            owner = primary if primary in members else \
                next((r for r in members if isinstance(roles[r].get("proxy"), dict)), members[0])
            claimed = {_claim(roles[owner])} if isinstance(roles[owner].get("proxy"), dict) else set()
            for rname in members:
                if rname == owner:
                    continue
                role = roles[rname]
                if isinstance(role.get("proxy"), dict):
                    if _claim(role) in claimed:
                        self.note(("servers", listed[rname][0]), f"the same hosts as role {owner}, serving the same "
                                  f"host and path: csdeploy gives it VMs of its own (set a proxy.host or "
                                  f"path_prefix to run it on role {owner}'s VMs)")
                        continue
                    claimed.add(_claim(role))
                for key in ("service_offering", "disk"):
                    if key in role and role[key] != roles[owner].get(key):
                        self.note(("servers", listed[rname][0], "labels"), f"{key}: runs on role {owner}'s VMs, "
                                  f"which have {roles[owner].get(key) or 'the default'}")
                    role.pop(key, None)
                role.pop("count", None)
                roles[rname] = {"run_on": owner, **role}
        for host, rname in host_role.items():
            host_role[host] = roles[rname].get("run_on", rname)

    def role_tags(self, hosts: Any, path: tuple[Any, ...], tags: dict[str, Any]) -> list[str]:
        """The tags (with env under env.tags) every host of the role has: their env becomes the
        role's. A tag on some of its hosts only is noted: csdeploy's env is per role."""
        per_host: list[set[str]] = []
        for i, h in enumerate(hosts if isinstance(hosts, list) else []):
            value = next(iter(h.values())) if isinstance(h, dict) and h else []
            per_host.append({str(t) for t in (value if isinstance(value, list) else [value])})
            for tag in sorted(per_host[-1] - set(tags)):
                self.note(path + (i,), f"tag {tag} has no env under env.tags: nothing to carry over")
        shared = set.intersection(*per_host) if per_host else set()
        for tag in sorted(set().union(*per_host) - shared if per_host else set()):
            if tag in tags:
                self.note(path, f"tag {tag} (env.tags.{tag}) is on some of the role's hosts only: csdeploy's env "
                                "is per role; give those hosts a role of their own to keep it")
        self.used_tags |= set().union(*per_host) if per_host else set()
        return sorted(shared & set(tags))

    def proxy(self, value: dict[str, Any], path: tuple[Any, ...], cfg: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(value.get("app_port"), int):
            out["app_port"] = value["app_port"]
        hosts = value.get("hosts") or value.get("host")
        if hosts:
            out["host"] = hosts
        if value.get("ssl") is True:
            out["ssl"] = True
        hc = value.get("healthcheck") if isinstance(value.get("healthcheck"), dict) else {}
        check = {k: (compact(seconds(hc[k]) or 1) if k != "path" else hc[k]) for k in ("path", "interval", "timeout")
                 if k in hc}
        if check:
            out["healthcheck"] = check
        if seconds(value.get("response_timeout")):
            out["response_timeout"] = compact(seconds(value["response_timeout"]) or 30)
        for key in ("deploy_timeout", "drain_timeout"):
            if seconds(cfg.get(key)):
                out[key] = compact(seconds(cfg[key]) or 30)
        # kamal-proxy's options, under the same names (the blueprint checks their values)
        if isinstance(value.get("path_prefix"), (str, list)):
            out["path_prefix"] = value["path_prefix"]
        for key in ("strip_path_prefix", "forward_headers", "ssl_redirect"):
            if isinstance(value.get(key), bool):
                out[key] = value[key]
        buffering = value.get("buffering")
        if isinstance(buffering, dict):
            out["buffering"] = {k: v for k, v in buffering.items() if k in _BUFFERING}
            for key in buffering:
                if key not in _BUFFERING:
                    self.note(path + ("buffering", key), "not a kamal-proxy buffering setting csdeploy passes")
        read_elsewhere = ("host", "hosts", "ssl", "healthcheck", "response_timeout")  # mapped or noted above
        for key in value:
            if key not in out and key not in read_elsewhere:  # unknown, or a value of the wrong type
                self.note(path + (key,), "not a kamal-proxy setting csdeploy passes")
        return out

    def labels(self, target: dict[str, Any], labels: Any, path: tuple[Any, ...], offering_key: str) -> None:
        for key, value in (labels or {}).items() if isinstance(labels, dict) else ():
            if key == LABEL_OFFERING:
                target[offering_key] = str(value)
            elif key == LABEL_DISK:
                size, mount, offering = (str(value).split(":") + ["", "", ""])[:3]
                target["disk"] = {"size": int(size), "mount": mount, **({"disk_offering": offering}
                                                                       if offering and offering != "Custom" else {})}
            elif key == LABEL_VM:
                target.pop("role", None)
                target["vm"] = {"service_offering": str(value)}
            else:
                self.note(path + ("labels", key), "csdeploy sets its own labels")

    def accessory(self, name: str, spec: dict[str, Any], host_role: dict[str, str]) -> dict[str, Any]:
        path: tuple[Any, ...] = ("accessories", name)
        acc: dict[str, Any] = {"image": str(spec.get("image", ""))}
        role = spec.get("role") or (spec.get("roles") or [None])[0]
        host = spec.get("host") or (spec.get("hosts") or [None])[0]
        if spec.get("roles") and len(spec["roles"]) > 1 or spec.get("hosts") and len(spec["hosts"]) > 1:
            self.note(path, "runs on one VM in csdeploy (the first of its hosts/roles)")
        if role:
            acc["role"] = role_name(str(role))
        elif host in host_role:
            acc["role"] = host_role[host]
        else:
            acc["vm"] = {}
        port = spec.get("port")
        if port is not None and str(port).rsplit(":", 1)[-1].isdigit():
            acc["port"] = int(str(port).rsplit(":", 1)[-1])
        env = self.env(spec.get("env"), path + ("env",))
        if env:
            acc["env"] = env
        if spec.get("cmd"):
            acc["cmd"] = spec["cmd"]
        volumes = [str(v) for v in spec.get("volumes") or []]
        for d in spec.get("directories") or []:
            src, _, dst = str(d).partition(":")
            volumes.append(f"/data/{role_name(name)}/{src.strip('/').replace('/', '-')}:{dst}")
            acc.setdefault("disk", {"size": 10, "mount": f"/data/{role_name(name)}"})
            self.note(path + ("directories",), "directories go on a 10 GB data disk at /data/NAME")
        if volumes:
            acc["volumes"] = volumes
        self.labels(acc, spec.get("labels"), path, offering_key="_offering")
        for key in spec:
            if key not in ("image", "host", "hosts", "role", "roles", "port", "env", "cmd", "volumes",
                           "directories", "labels"):
                self.note(path + (key,), "no blueprint equivalent" if key != "files" else
                          "files are not uploaded: put them in an image")
        return acc


def _env_merge(base: dict[str, Any], tag: dict[str, Any]) -> dict[str, Any]:
    """A role's env with a host tag's on top (Kamal: the tag's values win)."""
    out = {**base}
    if tag.get("clear"):
        out["clear"] = {**base.get("clear", {}), **tag["clear"]}
    if tag.get("secret"):
        out["secret"] = list(dict.fromkeys([*base.get("secret", []), *tag["secret"]]))
    return out


def registry_host_missing(image: str) -> bool:
    first, sep, _ = image.partition("/")
    return not (sep and ("." in first or ":" in first or first == "localhost"))


#: Kamal's `proxy.buffering` keys (the blueprint's too).
_BUFFERING = ("requests", "responses", "max_request_body", "max_response_body", "memory")


def _claim(role: dict[str, Any]) -> tuple[str, str]:
    """What a proxy role claims on its VMs' kamal-proxy: (host, path prefix)."""
    proxy = role.get("proxy") or {}
    host = proxy.get("host")
    prefix = proxy.get("path_prefix")
    return (str(host if not isinstance(host, list) else ",".join(map(str, host))).lower() if host else "",
            str(prefix if not isinstance(prefix, list) else prefix[0]) if prefix else "/")
