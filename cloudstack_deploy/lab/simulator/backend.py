"""What makes the simulated cloud's records real: a backend's *effects*.

A command handler only changes records; work outside the simulator (start a container, set up
a disk) is an **effect**: a named backend coroutine with JSON-able arguments, carried by an
async job (``AsyncResult.effect``) or run in the background for a sync command
(``Simulator.background_effect``). The engine runs a job's effect when the job is due and
completes the job only after it succeeded; an effect that raises fails the job with 530 and
its message. Effect names and arguments are stored with the job, so a restarted simulator
re-runs what was pending: every effect must therefore be idempotent (done already = success).

The ``memory`` backend implements every effect as a no-op (and declares ``has_effects =
False`` so the engine keeps its exact, timer-only behaviour).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

from .errors import ApiError

log = logging.getLogger("csdeploy.lab.simulator.backend")

#: How long a stopping simulator lets running effects finish before cancelling them (they are
#: idempotent and re-run from the state file on the next start).
EFFECT_GRACE_SECONDS = 60.0

#: Every effect a command may ask for, with its arguments.
EFFECTS: dict[str, tuple[str, ...]] = {
    "create_vm": ("id", "start"),      # deployVirtualMachine (start=False: created Stopped)
    "start_vm": ("id",),
    "stop_vm": ("id",),
    "reboot_vm": ("id",),
    "destroy_vm": ("id", "expunge", "volumes"),
    "expunge_vm": ("id",),
    "create_volume": ("id", "vm"),     # vm: attach at once (createVolume virtualmachineid=)
    "attach_volume": ("id", "vm"),
    "detach_volume": ("id",),
    "resize_volume": ("id", "size"),
    "delete_volume": ("id",),          # deleteVolume (sync): runs in the background
    "create_snapshot": ("id",),        # createSnapshot: copy the volume's data
    "delete_snapshot": ("id",),        # deleteSnapshot, or a policy's oldest (background)
    "delete_network": ("id",),
}


class HostBackend:
    """The machinery behind the records (the "hypervisor"); this base class does nothing.

    Subclasses override the effect coroutines they implement (``async def start_vm(self,
    id)``...). Effects read the simulator state as it is when they run: before the job's
    finisher changes it (a destroy effect still sees the VM's volumes).
    """

    name = "memory"
    #: False: effects are no-ops, so the engine completes jobs straight from their timers.
    has_effects = False
    #: True: a VM boot takes ``--vm-boot-seconds``; False: the start effect is the boot.
    simulated_boot = True

    async def start(self) -> None:
        """Prepare (images, probes) before the simulator serves requests."""

    async def close(self) -> None:
        """Release what the backend holds when the simulator stops."""

    def check_template(self, template: dict[str, Any]) -> None:
        """Raise ApiError (431) if VMs cannot be deployed from ``template`` on this backend."""

    def guests(self) -> Any:
        """The public network's GuestBackend for this backend (None: the memory guests)."""
        return None

    def reserved_subnets(self) -> frozenset[str]:
        """Guest CIDRs that new networks must avoid (taken on this machine by someone else)."""
        return frozenset()

    async def run(self, effect: str, args: dict[str, Any]) -> None:
        """Run effect ``effect`` with ``args``; raises what the effect raises."""
        if effect not in EFFECTS:
            raise ApiError(530, f"unknown backend effect {effect!r}")
        fn = getattr(self, effect, None)
        if fn is None:
            return
        await fn(**args)


class MemoryHost(HostBackend):
    """Records only: every effect is a no-op (the ``memory`` backend)."""


class EffectRunner:
    """The engine's side of effects (mixed into ``engine.Simulator``).

    A due job with an effect runs it as a task and completes (finisher or failure) when it
    ends; a job without one, a job with an injected fault, and every job of a backend without
    effects completes straight from its timer, as before effects existed.
    """

    backend: HostBackend
    state: dict[str, Any]
    _effects: dict[str, asyncio.Task[None]]
    _timers: dict[str, asyncio.TimerHandle]

    def get(self, collection: str, id_: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def save(self) -> None:
        raise NotImplementedError

    def complete_job(self, job_id: str, error: ApiError | None = None) -> None:
        raise NotImplementedError

    def vm_boot_seconds(self) -> float:
        """Seconds a VM start takes beyond its job: simulated, or 0 when the backend really boots."""
        return self.settings.vm_boot_seconds if self.backend.simulated_boot else 0.0  # type: ignore[attr-defined]

    def _job_due(self, job_id: str) -> None:
        """A job's time has come: run its effect first (if any), else finish it now."""
        self._timers.pop(job_id, None)
        job = self.get("jobs", job_id)
        if job is None or job["jobstatus"] != 0:
            return
        if job.get("_effect") and not job.get("_fault") and self.backend.has_effects:
            args = dict(job.get("_effect_args") or {})
            self._spawn_effect(job_id, self._job_effect(job_id, job["_effect"], args))
        else:
            self.complete_job(job_id)

    def _spawn_effect(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._effects[key] = task
        task.add_done_callback(lambda _t: self._effects.pop(key, None))

    async def _job_effect(self, job_id: str, effect: str, args: dict[str, Any]) -> None:
        try:
            await self.backend.run(effect, args)
        except ApiError as exc:
            self.complete_job(job_id, exc)
        except Exception as exc:  # any backend failure fails the job, as a hypervisor error would
            log.warning("job %s: backend effect %s failed: %s", job_id, effect, exc)
            self.complete_job(job_id, ApiError(530, f"{effect} failed: {exc}"))
        else:
            self.complete_job(job_id)

    def background_effect(self, effect: str, args: dict[str, Any]) -> None:
        """Run ``effect`` for a sync command after its answer; recorded so a restart re-runs it."""
        if not self.backend.has_effects:
            return
        entry = {"id": str(uuid.uuid4()), "effect": effect, "args": args}
        self.state.setdefault("effects", []).append(entry)
        try:
            self._spawn_effect(entry["id"], self._background(entry))
        except RuntimeError:
            pass  # no running loop: resume_jobs() starts it

    async def _background(self, entry: dict[str, Any]) -> None:
        try:
            await self.backend.run(entry["effect"], dict(entry["args"]))
        except Exception as exc:  # nobody waits for it: log, and do not retry forever
            log.warning("backend effect %s %s failed: %s", entry["effect"], entry["args"], exc)
        effects = self.state.get("effects", [])
        if entry in effects:
            effects.remove(entry)
            self.save()

    def resume_effects(self) -> None:
        """Start the background effects a loaded state file still lists."""
        for entry in list(self.state.get("effects", [])):
            if entry["id"] not in self._effects:
                self._spawn_effect(entry["id"], self._background(entry))

    async def finish_effects(self, grace: float | None = None) -> None:
        """Let running effects finish (at most ``grace`` seconds), then cancel the rest."""
        tasks = list(self._effects.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=EFFECT_GRACE_SECONDS if grace is None else grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
