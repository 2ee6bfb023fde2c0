"""`csdeploy init --template NAME`: a first blueprint as a form.

Each template is a short list of fields with defaults (`csdeploy init --template rails
--fields` shows them); `--set FIELD=value` fills them, and `--set a.b.c=value` (a dotted
blueprint path) overrides anything else. Defaults deploy on the lab as they are.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from .writer import LAB_PROXY_IMAGE, LAB_REGISTRY, REGISTRY_SECRET, Draft, default_cloud


@dataclass(frozen=True)
class Field:
    name: str
    default: str
    help: str


_COMMON = (
    Field("service", "", "the application's name (a-z, 0-9, '-'); default: the template's"),
    Field("image", "", f"the app image without tag; default: {LAB_REGISTRY}/SERVICE"),
    Field("registry_user", "csdeploy", "registry user name (the password is secret REGISTRY_PASSWORD)"),
)
_WEB = (
    Field("host", "", "the public host name kamal-proxy serves (empty: any)"),
    Field("web_count", "1", "VMs of the web role"),
)


@dataclass(frozen=True)
class Template:
    name: str
    summary: str
    fields: tuple[Field, ...]
    build: Callable[[dict[str, str]], dict[str, Any]]


def _web_role(f: dict[str, str], port: str, health: str, cmd: str | None = None,
              env: dict[str, Any] | None = None) -> dict[str, Any]:
    proxy: dict[str, Any] = {"app_port": int(f.get("app_port") or port), "healthcheck": {"path": f.get("health_path") or health}}
    if f.get("host"):
        proxy["host"] = f["host"]
    role: dict[str, Any] = {"count": int(f.get("web_count") or 1), "proxy": proxy}
    if cmd:
        role["cmd"] = cmd
    if env:
        role["env"] = env
    return role


def _postgres(db: str, disk: str = "10") -> dict[str, Any]:
    return {"image": f"{LAB_REGISTRY}/postgres:15", "vm": {}, "port": 5432,
            "env": {"clear": {"POSTGRES_DB": db, "POSTGRES_USER": db}, "secret": ["POSTGRES_PASSWORD"]},
            "disk": {"size": int(disk), "mount": "/data/db"}, "volumes": ["/data/db/pgdata:/var/lib/postgresql/data"]}


def _redis(role: str) -> dict[str, Any]:
    return {"image": f"{LAB_REGISTRY}/redis:7", "role": role, "port": 6379}


def _rails(f: dict[str, str]) -> dict[str, Any]:
    env = {"clear": {"RAILS_ENV": "production", "RAILS_LOG_TO_STDOUT": "1", "SOLID_QUEUE_IN_PUMA": "false"},
           "secret": ["RAILS_MASTER_KEY"]}
    return {"roles": {"web": _web_role(f, "3000", "/up", env=env),
                      "job": {"count": int(f.get("job_count") or 1), "cmd": f.get("job_cmd") or "bin/jobs", "env": env}},
            "accessories": {"db": _postgres(f["service"].replace("-", "_"), f.get("db_size") or "10"),
                            "redis": _redis("web")},
            "secrets": ["RAILS_MASTER_KEY", "POSTGRES_PASSWORD"]}


def _nextjs(f: dict[str, str]) -> dict[str, Any]:
    env = {"clear": {"NODE_ENV": "production", "HOSTNAME": "0.0.0.0", "PORT": f.get("app_port") or "3000"}}
    return {"roles": {"web": _web_role(f, "3000", "/api/health", env=env)}}


def _django(f: dict[str, str]) -> dict[str, Any]:
    env = {"clear": {"DJANGO_SETTINGS_MODULE": f.get("settings") or "config.settings", "PORT": "8000"},
           "secret": ["DJANGO_SECRET_KEY"]}
    app = f.get("wsgi_app") or "config.wsgi:application"
    return {"roles": {"web": _web_role(f, "8000", "/healthz/", cmd=f"gunicorn {app} --bind 0.0.0.0:8000", env=env),
                      "celery": {"cmd": f"celery -A {app.split('.')[0]} worker -l info", "env": env}},
            "accessories": {"db": _postgres(f["service"].replace("-", "_"), f.get("db_size") or "10"),
                            "redis": _redis("web")},
            "secrets": ["DJANGO_SECRET_KEY", "POSTGRES_PASSWORD"]}


def _generic(f: dict[str, str]) -> dict[str, Any]:
    return {"roles": {"web": _web_role(f, "8000", "/up")}}


def _worker(f: dict[str, str]) -> dict[str, Any]:
    return {"roles": {"worker": {"count": int(f.get("count") or 1), "cmd": f.get("cmd") or "python -m app.worker",
                                 "healthcheck": {"readiness_delay": 7}}}}


def _with_accessory(kind: str) -> Callable[[dict[str, str]], dict[str, Any]]:
    def build(f: dict[str, str]) -> dict[str, Any]:
        tree = _generic(f)
        if kind == "postgres":
            tree["accessories"] = {"db": _postgres(f.get("db_name") or "app", f.get("db_size") or "10")}
            tree["secrets"] = ["POSTGRES_PASSWORD"]
        else:
            tree["accessories"] = {"redis": _redis("web")}
        return tree

    return build


_PORT = Field("app_port", "", "the port the app listens on in its container")
_HEALTH = Field("health_path", "", "what kamal-proxy GETs for a 2xx before switching")
TEMPLATES = {t.name: t for t in (
    Template("rails", "Rails 7/8: Puma behind kamal-proxy (/up), a job worker, PostgreSQL, Redis",
             (*_COMMON, *_WEB, _PORT, Field("job_count", "1", "job worker VMs"),
              Field("job_cmd", "bin/jobs", "the worker's command (e.g. bundle exec sidekiq)"),
              Field("db_size", "10", "PostgreSQL data disk in GB")), _rails),
    Template("nextjs", "Next.js standalone server behind kamal-proxy", (*_COMMON, *_WEB, _PORT, _HEALTH), _nextjs),
    Template("django", "Django on gunicorn behind kamal-proxy, Celery, PostgreSQL, Redis",
             (*_COMMON, *_WEB, Field("settings", "config.settings", "DJANGO_SETTINGS_MODULE"),
              Field("wsgi_app", "config.wsgi:application", "the WSGI application"),
              Field("db_size", "10", "PostgreSQL data disk in GB")), _django),
    Template("generic", "any HTTP app in a container behind kamal-proxy",
             (*_COMMON, *_WEB, _PORT, _HEALTH), _generic),
    Template("worker", "a background worker, no HTTP",
             (*_COMMON, Field("cmd", "python -m app.worker", "the worker's command"),
              Field("count", "1", "worker VMs")), _worker),
    Template("postgres", "an HTTP app with a PostgreSQL accessory on its own VM",
             (*_COMMON, *_WEB, _PORT, _HEALTH, Field("db_name", "app", "database and user name"),
              Field("db_size", "10", "data disk in GB")), _with_accessory("postgres")),
    Template("redis", "an HTTP app with Redis beside it (REDIS_URL)",
             (*_COMMON, *_WEB, _PORT, _HEALTH), _with_accessory("redis")),
)}


def _template(name: str) -> Template:
    if name not in TEMPLATES:
        raise InvalidInput(f"no template named {name!r}", hint="templates: " + ", ".join(TEMPLATES))
    return TEMPLATES[name]


def describe_fields(name: str) -> list[str]:
    t = _template(name)
    lines = [f"template {t.name}: {t.summary}", "fields (--set NAME=value):"]
    lines += [f"  {f.name:<14} {f.help}" + (f" [default: {f.default}]" if f.default else "") for f in t.fields]
    lines.append("any blueprint value too: --set roles.web.count=2, --set cloud.zone=...")
    return lines


def template_draft(name: str, sets: Sequence[str], out: Path) -> tuple[Draft, list[str]]:
    """(the draft, the --set items that are blueprint paths rather than form fields)."""
    t = _template(name)
    known = {f.name for f in t.fields}
    values = {f.name: f.default for f in t.fields}
    overrides = []
    for item in sets:
        key, eq, value = item.partition("=")
        if eq and key.strip() in known:
            values[key.strip()] = value.strip()
        elif eq and "." in key or key.strip() in ("ttl", "retain_versions", "secrets_file"):
            overrides.append(item)
        else:
            raise InvalidInput(f"--set {key.strip() or item}: not a field of template {name} nor a blueprint path",
                               hint=f"fields: {', '.join(sorted(known))}; or a dotted path such as roles.web.count")
    values["service"] = values["service"] or name
    image = values["image"] or f"{LAB_REGISTRY}/{values['service']}"
    try:
        body = t.build(values)
    except ValueError:
        numeric = [f.name for f in t.fields if f.name.endswith(("count", "size", "port"))]
        raise InvalidInput(f"template {name}: {', '.join(numeric)} take whole numbers",
                           hint=f"e.g. --set {numeric[0]}=2" if numeric else None) from None
    tree: dict[str, Any] = {"service": values["service"], "image": image, "cloud": default_cloud(), **body}
    tree["registry"] = {"server": image.split("/")[0] if "/" in image else "docker.io",
                        "username": values.get("registry_user") or "csdeploy", "password": REGISTRY_SECRET}
    tree["secrets"] = [REGISTRY_SECRET, *body.get("secrets", [])]
    if tree["registry"]["server"] == LAB_REGISTRY:
        tree["rollout"] = {"proxy_image": LAB_PROXY_IMAGE}
    comments = [f"Template {name}: {t.summary}.", f"Fields: {', '.join(f'{k}={v}' for k, v in values.items() if v)}"]
    return Draft(tree, shlex.join(["csdeploy", "init", "--template", name]), [], comments), overrides
