"""The API's OpenAPI 3 description, made from the route table (`api.ROUTES`): a route cannot
exist without being described, nor be described differently from what is registered."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:  # the table is handed in: no import of the api module here (no cycle)
    from .api import Route

_CODES = {200: "OK", 201: "Created", 202: "Queued", 400: "Bad input", 401: "No token, or not a valid one",
          403: "The token's role or env prefix does not allow this", 404: "Not found",
          502: "The cloud, a host or the store failed (the message says which)"}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": re.sub(r"\W+", "_", f"{route.method.lower()}{route.path}").strip("_"),
        "responses": {},
    }
    if route.role is not None:
        op["security"] = [{"bearer": []}]
        op["x-csdeploy-role"] = route.role
    else:
        op["security"] = []
    if route.params:
        op["parameters"] = [{"name": p.name, "in": p.where, "required": p.where == "path",
                             "description": p.description,
                             "schema": {"type": p.type, **({"enum": list(p.enum)} if p.enum else {})}}
                            for p in route.params]
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
    codes = set(route.codes) | ({401, 403} if route.role is not None else set())
    for code in sorted(codes):
        content = {route.answer if code < 300 else "application/json": {"schema": {"type": "object"}}}
        if route.answer == "text/event-stream" and code < 300:
            content = {"text/event-stream": {"schema": {"type": "string"}}}
        op["responses"][str(code)] = {"description": _CODES.get(code, str(code)), "content": content}
    return op


def spec(routes: tuple[Route, ...]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "csdeploy team server", "version": __version__,
                 "description": "Environments, deployments, jobs and the audit log of csdeploy. "
                                "Send `Authorization: Bearer <token>` (csdeploy token create)."},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
