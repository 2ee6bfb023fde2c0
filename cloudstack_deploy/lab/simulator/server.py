"""The HTTP face of the simulator: CloudStack's transport, signing, envelopes and errors.

``/client/api`` behaves like CloudStack's ApiServlet (GET or form POST, case-insensitive
parameter names, HMAC-SHA1 signature, 401 for any auth failure, one ``<command>response``
key per answer). ``/admin/...`` is the lab's own control plane (faults, limits, state),
guarded by the API key, so a test can break the cloud while a client is running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import commands  # noqa: F401  (registers every command)
from .backend import EFFECT_GRACE_SECONDS
from .catalog import RESOURCE_LIMITS
from .engine import Settings, Simulator
from .errors import AUTH_TEXT, ApiError
from .faults import Fault, FaultSpecError, fault_text, parse_fault
from .registry import COMMANDS, AsyncResult, parse
from .signing import parse_expires, verify

log = logging.getLogger("csdeploy.lab.simulator")

MAX_PAGE_SIZE = 500
#: Async commands that are BaseAsyncCreateCmd in CloudStack: create() runs before the job is
#: queued, so its checks (name, limits, rule conflicts...) fail the HTTP request itself.
ASYNC_CREATE = frozenset({
    "deployvirtualmachine", "associateipaddress", "createfirewallrule", "createegressfirewallrule",
    "createportforwardingrule", "createipforwardingrule", "createloadbalancerrule", "createvolume",
    "createsnapshot",
})
JSON_TYPE = "application/json"
BACKENDS = ("memory", "docker")


@dataclass
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    backend: str = "memory"
    state_file: str | None = None
    api_key: str = "lab-api-key"
    secret_key: str = "lab-secret-key"
    vm_boot_seconds: float = 1.0
    job_seconds: float = 0.2
    faults: list[Fault] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    public_range: str | None = None
    ssh: bool = True

    @classmethod
    def from_cli(cls, *, faults: tuple[str, ...] = (), limits: tuple[str, ...] = (),
                 no_ssh: bool = False, **kw: Any) -> SimulatorConfig:
        parsed_limits: dict[str, int] = {}
        for item in limits:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--limit {item!r}: expected TYPE=MAX, e.g. user_vm=10")
            known = [n for _, n, _ in RESOURCE_LIMITS]
            if name.strip() not in known:
                raise ValueError(f"--limit {item!r}: unknown resource type {name.strip()!r} "
                                 f"(known: {', '.join(sorted(known))})")
            try:
                parsed_limits[name.strip()] = int(value)
            except ValueError:
                raise ValueError(f"--limit {item!r}: MAX must be an integer") from None
        public_range = kw.pop("public_range", None)
        return cls(faults=[parse_fault(f) for f in faults], limits=parsed_limits,
                   ssh=not no_ssh, public_range=public_range, **kw)

    def settings(self) -> Settings:
        s = Settings(vm_boot_seconds=self.vm_boot_seconds, job_seconds=self.job_seconds,
                     limits=dict(self.limits), api_key=self.api_key, secret_key=self.secret_key)
        if self.public_range:
            s.public_range = self.public_range
        return s


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=JSON_TYPE, charset="UTF-8")


def _error(command: str | None, err: ApiError) -> web.Response:
    key = f"{command.lower()}response" if command else "errorresponse"
    return _json({key: err.body()}, status=err.code)


def _auth_error(command: str) -> web.Response:
    """ApiServlet's 401: built by getSerializedApiError(int, text), which sets no cserrorcode."""
    body = {"uuidList": [], "errorcode": 401, "errortext": AUTH_TEXT}
    return _json({f"{command.lower()}response": body}, status=401)


class ApiHandler:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        items = list(request.query.items())
        if request.method == "POST":
            form = await request.post()
            items += [(k, v) for k, v in form.items() if isinstance(v, str)]
        raw: dict[str, str] = {}
        for k, v in items:
            raw.setdefault(k.lower(), v)
        command_name = raw.get("command")
        if not command_name:
            return _error(None, ApiError(432, "no command specified", 9999))

        cmd = COMMANDS.get(command_name.lower())
        auth_error = self._authenticate(items, raw)
        if auth_error or cmd is None:
            return _auth_error(command_name)

        fault = self.sim.faults.take(cmd.name, ("drop", "slow", "http"))
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.code)
            fault = self.sim.faults.take(cmd.name, ("drop", "http"))
        if fault is not None and fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing is sent; the client sees a closed connection
        if fault is not None and fault.kind == "http":
            code = int(fault.code)
            return _error(cmd.name, ApiError(code, fault_text(cmd.name, code)))

        try:
            body = self._dispatch(cmd, raw, request.method)
        except ApiError as err:
            return _error(cmd.name, err)
        return _json({f"{cmd.lname}response": body})

    def _authenticate(self, items: list[tuple[str, str]], raw: dict[str, str]) -> bool:
        """Return True when the request must be refused (any failure is the same 401)."""
        s = self.sim.settings
        if raw.get("apikey") != s.api_key or not raw.get("signature"):
            return True
        if raw.get("signatureversion") == "3":
            expires = parse_expires(raw.get("expires", ""))
            if expires is None or expires <= datetime.now(UTC):
                return True
        signed = [(k, v) for k, v in items if k.lower() != "signature"]
        return not verify(signed, raw["signature"], s.secret_key)

    def _dispatch(self, cmd: Any, raw: dict[str, str], method: str) -> dict[str, Any]:
        # List filters resolve ids including removed rows (an expunged VM lists as empty);
        # every other command needs the entity to exist now.
        lookup = self.sim.known if cmd.kind == "list" else self.sim.exists
        req = parse(cmd, raw, lookup, method)
        if cmd.kind == "list":
            page, pagesize = _paging(cmd.lname, req.get("page"), req.get("pagesize"))
            items = cmd.handler(self.sim, req)
            return _list_envelope(cmd.response_key, items, page, pagesize)
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
        if cmd.kind == "raw":
            if not cmd.lname.startswith(("list", "query", "get")):
                self.sim.changed()
            return result
        if not cmd.lname.startswith(("list", "query", "get")):
            self.sim.changed()
        return {cmd.response_key: result}


def _paging(command: str, page: int | None, pagesize: int | None) -> tuple[int | None, int | None]:
    """(page, pagesize) to slice with; (None, None) only for pagesize=-1 (unlimited).

    Without paging CloudStack still returns one page of ``default.page.size`` (500) items.
    """
    if page is None and pagesize is None:
        return 1, MAX_PAGE_SIZE
    if pagesize is not None and page is None and pagesize != -1:
        raise ApiError(431, '"page" parameter is required when "pagesize" is specified', 9999)
    if page is not None and pagesize is None:
        raise ApiError(431, '"pagesize" parameter is required when "page" is specified', 9999)
    if pagesize is not None:
        if pagesize == -1:
            return None, None
        if pagesize < 1:
            raise ApiError(431, f"Unable to execute API command {command} due to invalid value {pagesize} for parameter pagesize", 4350)
        if pagesize > MAX_PAGE_SIZE:
            raise ApiError(431, f"Page size can't exceed max allowed page size value: {MAX_PAGE_SIZE}", 4350)
    return page, pagesize


def _list_envelope(key: str | None, items: list[dict[str, Any]], page: int | None,
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


class AdminHandler:
    """``/admin/faults``, ``/admin/limits``, ``/admin/state``: the lab's control plane."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def _authorised(self, request: web.Request) -> bool:
        key = request.headers.get("X-Lab-Key") or request.query.get("key")
        return key == self.sim.settings.api_key

    async def faults(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json({"error": "X-Lab-Key header (the lab API key) required"}, 401)
        if request.method == "DELETE":
            self.sim.faults.clear()
        elif request.method == "POST":
            text = await request.text()
            try:
                specs = json.loads(text).get("faults", []) if text.strip().startswith("{") else text.split()
                parsed = [parse_fault(spec) for spec in specs]  # all or nothing
                for fault in parsed:
                    self.sim.faults.add(fault)
            except (FaultSpecError, AttributeError, ValueError) as exc:
                return _json({"error": str(exc)}, 400)
        return _json({"faults": self.sim.faults.to_list()})

    async def limits(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json({"error": "X-Lab-Key header (the lab API key) required"}, 401)
        if request.method == "POST":
            try:
                for name, value in (await request.json()).items():
                    self.sim.set_limit(name, int(value))
            except (ValueError, AttributeError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
            self.sim.changed()
        return _json({"limits": {k: v[1] for k, v in self.sim.state["limits"].items()}})

    async def state(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _json({"error": "X-Lab-Key header (the lab API key) required"}, 401)
        return _json(self.sim.state)


class SimulatorServer:
    """The simulator as a service: start it, learn its endpoint, stop it.

    ``progress`` receives one-line notes of slow start-up work (building VM templates).
    """

    def __init__(self, config: SimulatorConfig, progress: Callable[[str], None] | None = None) -> None:
        if config.backend not in BACKENDS:
            raise ValueError(f"unknown backend {config.backend!r} (known: {', '.join(BACKENDS)})")
        self.config = config
        self.progress = progress
        self.sim = Simulator(config.settings(), config.state_file, list(config.faults))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.network: Any = None  # the public-address forwarder, when SSH is served

    @property
    def endpoint(self) -> str:
        return f"http://{self.config.host}:{self.port}/client/api"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        api = ApiHandler(self.sim)
        admin = AdminHandler(self.sim)
        # The bound coroutine method, not the instance: aiohttp warns about "bare functions".
        app.router.add_route("GET", "/client/api", api.__call__)
        app.router.add_route("POST", "/client/api", api.__call__)
        app.router.add_route("*", "/admin/faults", admin.faults)
        app.router.add_route("*", "/admin/limits", admin.limits)
        app.router.add_route("GET", "/admin/state", admin.state)
        return app

    async def start(self) -> None:
        if self.config.backend == "docker":  # before serving: the first start builds templates
            from .docker_backend import DockerHost

            self.sim.backend = DockerHost(self.sim, ephemeral=self.config.state_file is None,
                                          progress=self.progress)
            await self.sim.backend.start()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        self.sim.resume_jobs()
        if self.config.ssh:
            from .network import PublicNetwork

            self.network = PublicNetwork(self.sim, self.sim.backend.guests())
            await self.network.start()

    async def stop(self) -> None:
        if self.network is not None:
            await self.network.stop()
        await self.sim.close()
        await self.sim.backend.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.sim.save()


def serve_forever(config: SimulatorConfig, *, write_profile: bool = False) -> None:
    """Run until SIGINT/SIGTERM, printing the endpoint and credentials for ``cs``."""

    async def main() -> None:
        # Handlers first: a signal that arrives while starting (or right after the endpoint is
        # printed) still stops the server cleanly, saving the state, with exit code 0.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = SimulatorServer(config, progress=lambda line: print(line, flush=True))
        await server.start()
        print(f"CloudStack simulator listening on {server.endpoint}", flush=True)
        if write_profile:
            from ...cloud.config import write_lab_profile

            path = write_lab_profile(server.endpoint, config.api_key, config.secret_key,
                                     poll_interval=max(0.05, min(0.25, config.job_seconds)))
            from ..profile import add_secrets_file

            add_secrets_file(path)  # the lab's secret values, for the product to read
            print(f"  csdeploy profile: {path} (the default cloud when no CLOUDSTACK_* config is set)",
                  flush=True)
        print(f"  export CLOUDSTACK_ENDPOINT={server.endpoint}", flush=True)
        print(f"  export CLOUDSTACK_KEY={config.api_key}", flush=True)
        print(f"  export CLOUDSTACK_SECRET={config.secret_key}", flush=True)
        if config.state_file:
            print(f"  state: {config.state_file}", flush=True)
        await stop.wait()
        await server.stop()
        print("simulator stopped", file=sys.stderr, flush=True)

    asyncio.run(main())


class ThreadedSimulator:
    """A simulator on its own event loop in a thread: for tests and synchronous clients."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.server = SimulatorServer(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="simulator")

    @property
    def _timeout(self) -> float:
        """Real VMs take longer: a first start builds templates, a stop removes containers."""
        return 1800 if self.config.backend == "docker" else 30

    def __enter__(self) -> ThreadedSimulator:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(self._timeout)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop_timeout = self._timeout + (EFFECT_GRACE_SECONDS if self.sim.backend.has_effects else 0)
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(stop_timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def sim(self) -> Simulator:
        return self.server.sim

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the simulator's loop (state is not thread-safe)."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def settle(self, timeout: float = 10) -> None:
        """Wait until the public network (listeners, guests) matches the current state."""
        if self.server.network is not None:
            asyncio.run_coroutine_threadsafe(self.server.network.settled(), self._loop).result(timeout)
