"""``/client/api``: CloudStack's transport, checks in ApiServlet/ApiServer's order.

1. The form (Jetty): a body over ``request.content.size`` (1 MiB) or with more than 5000 keys
   is Jetty's 400, before CloudStack sees anything.
2. The parameter map (ApiServlet): query parameters win over form ones of the same name, the
   last of a repeated query name wins (utf8Fixup), names are kept as sent.
3. verifyRequest: no ``command`` or an unknown one (names are case-sensitive) is a 401 before
   the signature is even looked at; then key, ``signatureVersion=3``/``expires`` and the
   Java-exact signature. Every failure is the same 401.
4. handleRequest: values with ASCII control characters are a 431; then the command runs with
   parameter names lower-cased (BaseCmd.unpackParams), so ``zoneId`` is ``zoneid``.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .engine import Simulator
from .errors import AUTH_TEXT, ApiError
from .faults import fault_text
from .registry import COMMANDS, AsyncResult, Command, parse
from .signing import parse_expires, verify

MAX_PAGE_SIZE = 500
#: ServerDaemon: request.content.size and request.max.form.keys (Jetty's form limits).
MAX_FORM_CONTENT = 1048576
MAX_FORM_KEYS = 5000
#: ApiServer.checkCharacterInkParams: ASCII control characters but TAB, LF and CR.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: Async commands that are BaseAsyncCreateCmd in CloudStack: create() runs before the job is
#: queued, so its checks (name, limits, rule conflicts...) fail the HTTP request itself.
ASYNC_CREATE = frozenset({
    "deployvirtualmachine", "associateipaddress", "createfirewallrule", "createegressfirewallrule",
    "createportforwardingrule", "createipforwardingrule", "createloadbalancerrule", "createvolume",
    "createsnapshot", "createaffinitygroup",
})
JSON_TYPE = "application/json"


class BadForm(Exception):
    """What Jetty refuses before the servlet runs (its 400 page)."""


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=JSON_TYPE, charset="UTF-8")


def error_response(cmd: Command, err: ApiError) -> web.Response:
    return json_response({cmd.envelope: err.body()}, status=err.code)


def auth_error(envelope: str) -> web.Response:
    """ApiServlet's 401: getSerializedApiError(int, text, ...) sets no cserrorcode."""
    body = {"uuidList": [], "errorcode": 401, "errortext": AUTH_TEXT}
    return json_response({envelope: body}, status=401)


def jetty_400(reason: str) -> web.Response:
    return web.Response(status=400, content_type="text/html", charset="ISO-8859-1",
                        text=f"<html><body><h2>HTTP ERROR 400 {reason}</h2></body></html>")


async def read_params(request: web.Request) -> dict[str, str]:
    """The servlet's parameter map, one value per name (see the module docstring)."""
    params: dict[str, str] = {}
    if request.method == "POST":
        if (request.content_length or 0) > MAX_FORM_CONTENT:
            raise BadForm("Unable to parse form content")
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            raise BadForm("Unable to parse form content") from None
        except (ValueError, UnicodeError, AssertionError):
            raise BadForm("Unable to parse form content") from None
        if len(form) > MAX_FORM_KEYS:
            raise BadForm("Unable to parse form content")
        for k, v in form.items():
            if isinstance(v, str):
                params.setdefault(k, v)
    query = list(request.query.items())
    if len(query) > MAX_FORM_KEYS:
        raise BadForm("Unable to parse form content")
    for k, v in query:
        params[k] = v
    return params


class ApiHandler:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            params = await read_params(request)
        except BadForm as exc:
            return jetty_400(str(exc))
        command_name = params.get("command")
        if command_name is None:
            # getSerializedApiError names the envelope after the command; with none, after
            # nothing ("null") unless the request had no parameters at all
            return auth_error("null" if params else "errorresponse")
        cmd = COMMANDS.get(command_name.lower())
        if cmd is None or cmd.name != command_name:
            return auth_error("errorresponse")
        if self._refused(params):
            return auth_error(cmd.envelope)
        bad = next((k for k, v in params.items() if CONTROL_CHARACTERS.search(v)), None)
        if bad is not None:
            return error_response(cmd, ApiError(
                431, f"Received value containing illegal ASCII non-printable characters for parameter {bad}", 9999))

        fault = self.sim.faults.take(cmd.name, ("drop", "slow", "http"))
        stopped = False
        if fault is not None and fault.kind == "slow":
            stopped = not await self.sim.hold(fault.code)  # stopped: dropped, never carried out
            fault = None if stopped else self.sim.faults.take(cmd.name, ("drop", "http"))
        if stopped or (fault is not None and fault.kind == "drop"):
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing is sent; the client sees a closed connection
        if fault is not None and fault.kind == "http":
            code = int(fault.code)
            return error_response(cmd, ApiError(code, fault_text(cmd.name, code)))

        raw = {k.lower(): v for k, v in sorted(params.items())}
        self.sim.expire_jobs()
        try:
            body = self._dispatch(cmd, raw, request.method)
        except ApiError as err:
            return error_response(cmd, err)
        finally:
            # Whatever this answer shows (this call's change, a job finished since) is saved
            # before it is sent: a client never sees a state a crash could take back.
            self.sim.save()
        return json_response({cmd.envelope: body})

    def _refused(self, params: dict[str, str]) -> bool:
        """True when verifyRequest says no: wrong key, no signature, expired, bad signature."""
        s = self.sim.settings
        named = {k.lower(): v for k, v in sorted(params.items())
                 if k.lower() in ("apikey", "signature", "signatureversion", "expires")}
        if named.get("apikey") != s.api_key or not named.get("signature"):
            return True
        if named.get("signatureversion") == "3":
            expires = parse_expires(named.get("expires", ""))
            if expires is None or expires <= datetime.now(UTC):
                return True
        return not verify(params, named["signature"], s.secret_key)

    def _dispatch(self, cmd: Command, raw: dict[str, str], method: str) -> dict[str, Any]:
        # List filters resolve ids including removed rows (an expunged VM lists as empty);
        # every other command needs the entity to exist now.
        lookup = self.sim.known if cmd.kind == "list" else self.sim.exists
        req = parse(cmd, raw, lookup, method)
        if cmd.kind == "list":
            page, pagesize = paging(req.get("page"), req.get("pagesize"))
            items = cmd.handler(self.sim, req)
            # a few lists name their items after a parameter (listLoadBalancerRuleInstances lbvmips)
            return list_envelope(getattr(items, "key", cmd.response_key), items, page, pagesize)
        try:
            result = cmd.handler(self.sim, req)
        except ApiError as err:
            if cmd.kind != "async" or cmd.lname in ASYNC_CREATE:
                raise
            # A plain async command (BaseAsyncCmd) validates in execute(), inside its job:
            # the submit answers a jobid and the job fails with the error's code (431 for an
            # InvalidParameterValueException), as ApiAsyncJobDispatcher reports it.
            result = AsyncResult("deferred_error", {"code": err.code, "text": err.text},
                                 instance_id=req.get("id"))
        if cmd.kind == "async":
            assert isinstance(result, AsyncResult)
            job = self.sim.submit_job(cmd.name, result)
            body = {"jobid": job["jobid"]}
            if result.entity_id:
                body = {"id": result.entity_id, "jobid": job["jobid"]}
            self.sim.changed()
            return body
        if cmd.kind == "success":
            self.sim.changed()
            return {"success": True} if result is None else result
        if not cmd.lname.startswith(("list", "query", "get")):
            self.sim.changed()
        if cmd.kind == "raw":
            return result
        return {cmd.response_key: result}


def paging(page: int | None, pagesize: int | None) -> tuple[int | None, int | None]:
    """(page, pagesize) to slice with; (None, None) only for pagesize=-1 (unlimited).

    Without paging CloudStack still returns one page of ``default.page.size`` (500) items.
    BaseListCmd: page needs pagesize and pagesize needs page (bare 431s); pagesize=-1
    (unlimited) goes alone, with page it is an InvalidParameterValueException (431/4350).
    """
    if page is None and pagesize is None:
        return 1, MAX_PAGE_SIZE
    if pagesize is not None and page is None and pagesize != -1:
        raise ApiError(431, '"page" parameter is required when "pagesize" is specified', 9999)
    if page is not None and pagesize is None:
        raise ApiError(431, '"pagesize" parameter is required when "page" is specified', 9999)
    assert pagesize is not None
    if pagesize > MAX_PAGE_SIZE:
        raise ApiError(431, f"Page size can't exceed max allowed page size value: {MAX_PAGE_SIZE}", 4350)
    if pagesize == -1:
        if page is not None:
            raise ApiError(431, "Can't specify page parameter when pagesize is -1 (Unlimited)", 4350)
        return None, None
    if pagesize < 0:  # CloudStack passes it on to SQL's LIMIT, which refuses it
        raise ApiError(431, f"Unable to execute API command due to invalid value {pagesize} for parameter "
                            "pagesize", 4350)
    return page, pagesize  # pagesize=0: LIMIT 0, an empty page that still carries the count


def list_envelope(key: str | None, items: list[dict[str, Any]], page: int | None,
                  pagesize: int | None) -> dict[str, Any]:
    if not items:
        return {}
    total = len(items)
    if page is not None and pagesize is not None:
        start = max(page - 1, 0) * pagesize
        items = items[start:start + pagesize]
    if not items:
        return {"count": total}
    return {"count": total, key: items}
