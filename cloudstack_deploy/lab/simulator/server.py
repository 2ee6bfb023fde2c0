"""The simulator as a service: configuration, the HTTP server, the lab's control plane.

``/client/api`` is CloudStack's API (see transport.py). ``/admin/...`` is the lab's own
control plane (faults, limits, state), guarded by the API key, so a test can break the cloud
while a client is running.
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
from typing import Any

from aiohttp import web

from . import commands  # noqa: F401  (registers every command)
from .backend import EFFECT_GRACE_SECONDS
from .catalog import RESOURCE_LIMITS
from .engine import Settings, Simulator
from .faults import Fault, FaultSpecError, parse_fault
from .transport import MAX_FORM_CONTENT, ApiHandler, json_response

log = logging.getLogger("csdeploy.lab.simulator")

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
    #: CloudStack's job.expire.minutes: finished jobs are forgotten this long after they end.
    job_expire_minutes: float = 1440.0
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
                     limits=dict(self.limits), api_key=self.api_key, secret_key=self.secret_key,
                     job_expire_minutes=self.job_expire_minutes)
        if self.public_range:
            s.public_range = self.public_range
        return s


class AdminHandler:
    """``/admin/faults``, ``/admin/limits``, ``/admin/state``: the lab's control plane."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def _authorised(self, request: web.Request) -> bool:
        key = request.headers.get("X-Lab-Key") or request.query.get("key")
        return key == self.sim.settings.api_key

    async def faults(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"error": "X-Lab-Key header (the lab API key) required"}, 401)
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
                return json_response({"error": str(exc)}, 400)
        return json_response({"faults": self.sim.faults.to_list()})

    async def limits(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"error": "X-Lab-Key header (the lab API key) required"}, 401)
        if request.method == "POST":
            try:
                for name, value in (await request.json()).items():
                    self.sim.set_limit(name, int(value))
            except (ValueError, AttributeError, TypeError) as exc:
                return json_response({"error": str(exc)}, 400)
            self.sim.changed()
        return json_response({"limits": {k: v[1] for k, v in self.sim.state["limits"].items()}})

    async def state(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"error": "X-Lab-Key header (the lab API key) required"}, 401)
        return json_response(self.sim.state)


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
        app = web.Application(client_max_size=MAX_FORM_CONTENT)
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
        """Claim the public range, start the backend and the public network, then serve.

        The range comes first: a simulator whose range another lab holds stops there (see
        ``network.claim_range``), before any slow work and with no port opened. If a later
        step fails, what was started is stopped again before the error propagates.
        """
        claim = None
        if self.config.ssh:
            from .network import claim_range

            claim = claim_range(self.sim.settings.public_range)
        try:
            if self.config.backend == "docker":  # before serving: the first start builds templates
                from .docker_backend import DockerHost

                self.sim.backend = DockerHost(self.sim, ephemeral=self.config.state_file is None,
                                              progress=self.progress)
                await self.sim.backend.start()
            if self.config.ssh:
                from .network import PublicNetwork

                network = PublicNetwork(self.sim, self.sim.backend.guests())
                held, claim = claim, None
                await network.start(held)  # releases the claim itself if it fails
                self.network = network
            self._runner = web.AppRunner(self.app(), access_log=None)
            await self._runner.setup()
            # a deep accept queue: a burst of a thousand clients connecting at once is queued, not reset
            site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=1024)
            await site.start()
        except BaseException:
            if claim is not None:
                claim.close()
            if self.network is not None:
                await self.network.stop()
                self.network = None
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            raise
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        self.sim.resume_jobs()

    async def stop(self) -> None:
        if self.network is not None:
            await self.network.stop()
        await self.sim.close()
        await self.sim.backend.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.sim.save_and_close()


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
