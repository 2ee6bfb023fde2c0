"""One nightly run: reap, create-env, deploy, checks, teardown; a report whatever happens.

The phases are the same service calls a user makes (`service.py` hands them in as `Steps`,
so this module drives them without importing the service): a failed create or deploy is a
failed test case, the checks after it are skipped, and the environment is still torn down
(unless ``keep_on_failure``). The JUnit file is written in a ``finally``: an interrupted
run leaves a report of what it did, and its environment to its TTL (the next nightly's reap
removes it once expired).
"""

from __future__ import annotations

import secrets
import string
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..blueprint_schema import format_duration
from ..errors import CsdeployError, InvalidInput
from ..progress import Progress
from ..state import ENV_NAME_MAX, validate_env_name
from .checks import CmdCheck, HttpCheck, Outcome, run_http
from .report import CHECK, FAILED, PASSED, PHASE, SKIPPED, Case, NightlyResult, write_junit

RUN_ID_LENGTH = 3
SUFFIX = len("-MMDD-") + RUN_ID_LENGTH
PREFIX_MAX = ENV_NAME_MAX - SUFFIX
LOG_LINES = 40
_ALPHABET = string.ascii_lowercase + string.digits


def validate_prefix(prefix: str) -> str:
    """A prefix that makes valid environment names ``<prefix>-MMDD-<run id>`` (<= 20 chars)."""
    hint = (f"use 1-{PREFIX_MAX} lower-case letters, digits and '-', starting with a letter and not ending "
            f"with '-': nightly names are <prefix>-MMDD-<run id> and an environment name has at most "
            f"{ENV_NAME_MAX} characters")
    try:
        validate_env_name(prefix)
    except InvalidInput:
        raise InvalidInput(f"--prefix {prefix!r} is not a valid environment name prefix", hint=hint) from None
    if len(prefix) > PREFIX_MAX:
        raise InvalidInput(f"--prefix {prefix!r} is {len(prefix)} characters; at most {PREFIX_MAX}", hint=hint)
    return prefix


def env_name(prefix: str, when: datetime, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``<prefix>-MMDD-<run id>``: the date (UTC) for people, a random id for uniqueness."""
    while True:
        run_id = "".join(secrets.choice(_ALPHABET) for _ in range(RUN_ID_LENGTH))
        name = f"{prefix}-{when.astimezone(UTC):%m%d}-{run_id}"
        if name not in taken:
            return validate_env_name(name)


@dataclass
class NightlyPlan:
    """Everything a nightly needs, checked before anything is created."""

    blueprint: str
    prefix: str
    version: str
    ttl: timedelta
    checks: list[HttpCheck]
    cmd_checks: list[CmdCheck]
    host_header: str | None = None
    log_role: str | None = None            # whose logs explain a failed HTTP check
    keep: bool = False
    keep_on_failure: bool = False
    junit: Path | None = None


@dataclass
class Steps:
    """The service calls a nightly makes (injected: see `service.nightly`)."""

    reap: Callable[[], Awaitable[Any]]                       # -> ReapResult
    create: Callable[[str], Awaitable[Any]]                  # env -> CreateEnvOutcome
    deploy: Callable[[str], Awaitable[Any]]                  # env -> RolloutResult
    teardown: Callable[[str], Awaitable[Any]]                # env -> TeardownResult
    exec_: Callable[[str, str, list[str], Callable[[str], None]], Awaitable[int]]
    logs: Callable[[str, str, int, Callable[[str], None]], Awaitable[None]]
    taken: set[str] = field(default_factory=set)             # names in use (filled by the reap)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Nightly:
    def __init__(self, plan: NightlyPlan, steps: Steps, progress: Progress, now: datetime | None = None) -> None:
        self.plan = plan
        self.steps = steps
        self.progress = progress
        self.now = now or datetime.now(UTC)
        self.result = NightlyResult(env="", prefix=plan.prefix, version=plan.version, blueprint=plan.blueprint,
                                    started=self.now.strftime("%Y-%m-%dT%H:%M:%SZ"), ttl=_ttl_text(plan.ttl),
                                    junit=str(plan.junit) if plan.junit else None)

    async def _phase(self, name: str, step: Callable[[], Awaitable[Any]], classname: str = PHASE) -> tuple[Case, Any]:
        case = Case(name, classname)
        self.result.cases.append(case)
        self.progress.note(f"nightly {self.result.env or self.plan.prefix}: {name} ...")
        started = time.monotonic()
        value = None
        try:
            value = await step()
        except CsdeployError as exc:
            case.status, case.message, case.detail = FAILED, _first_line(exc), str(exc)
            if exc.hint:
                case.detail += f"\nhint: {exc.hint}"
        except Exception as exc:  # a bug: still report it and clean up
            case.status, case.kind, case.message = FAILED, "error", f"{type(exc).__name__}: {_first_line(exc)}"
            case.detail = "".join(traceback.format_exception(exc))
        case.seconds = time.monotonic() - started
        self.progress.note(f"nightly {self.result.env or self.plan.prefix}: {name} {case.status} "
                           f"({case.seconds:.1f}s)" + (f": {case.message}" if case.message else ""),
                           level="error" if case.status == FAILED else "info")
        return case, value

    def _skip(self, name: str, classname: str, why: str) -> None:
        self.result.cases.append(Case(name, classname, status=SKIPPED, message=why))

    async def run(self) -> NightlyResult:
        started = time.monotonic()
        try:
            await self._run()
        except BaseException:
            self.result.interrupted = True
            raise
        finally:
            self.result.seconds = time.monotonic() - started
            if self.plan.junit is not None:
                write_junit(self.result, self.plan.junit)
        return self.result

    async def _run(self) -> None:
        plan, steps, res = self.plan, self.steps, self.result
        case, reaped = await self._phase("reap", steps.reap)
        if case.status == PASSED and reaped is not None:
            case.detail = _reap_detail(reaped)
            if not reaped.ok:
                case.status, case.message = FAILED, "expired environments are left: " + ", ".join(
                    i.env for i in reaped.items if i.result == "failed")
        res.env = env_name(plan.prefix, self.now, steps.taken)
        created, outcome = await self._phase("create-env", lambda: steps.create(res.env))
        if outcome is not None:
            res.app_url = outcome.inventory.app_url
            res.expires = outcome.inventory.expires
        checks = [c.name for c in plan.checks] + [c.name for c in plan.cmd_checks]
        if created.status != PASSED:
            self._skip("deploy", PHASE, "create-env failed")
            for name in checks:
                self._skip(name, CHECK, "create-env failed")
        else:
            deployed, _ = await self._phase("deploy", lambda: steps.deploy(res.env))
            if deployed.status != PASSED:
                for name in checks:
                    self._skip(name, CHECK, "deploy failed")
            else:
                await self._checks()
        failed = any(c.status == FAILED for c in res.cases)
        if plan.keep or (failed and plan.keep_on_failure):
            res.kept = True
            self.progress.note(f"nightly {res.env}: kept until {res.expires or 'its TTL'} "
                               f"(`csdeploy reap` deletes it after that)")
            return
        down, _ = await self._phase("teardown", lambda: steps.teardown(res.env))
        res.torn_down = down.status == PASSED

    async def _checks(self) -> None:
        plan, res = self.plan, self.result
        for check in plan.checks:
            async def http(check: HttpCheck = check) -> Outcome:
                if not res.app_url:
                    return Outcome(False, "the blueprint has no proxy role: nothing serves HTTP")
                return await run_http(check, res.app_url, host=plan.host_header)
            await self._check(check.name, http, plan.log_role)
        for cmd in plan.cmd_checks:
            async def command(cmd: CmdCheck = cmd) -> Outcome:
                lines: list[str] = []
                code = await self.steps.exec_(res.env, cmd.role, list(cmd.argv), lines.append)
                output = "\n".join(lines[-LOG_LINES:])
                return Outcome(code == 0, f"{cmd.name}: exit {code}", output)
            await self._check(cmd.name, command, cmd.role)

    async def _check(self, name: str, run: Callable[[], Awaitable[Outcome]], log_role: str | None) -> None:
        case, outcome = await self._phase(name, run, CHECK)
        if outcome is None:
            return
        case.message, case.detail = outcome.message, outcome.detail
        if outcome.ok:
            return
        case.status = FAILED
        if log_role:
            case.detail += await self._logs_tail(log_role)

    async def _logs_tail(self, role: str) -> str:
        lines: list[str] = []
        try:
            await self.steps.logs(self.result.env, role, LOG_LINES, lines.append)
        except CsdeployError as exc:
            lines.append(f"(could not read the logs: {_first_line(exc)})")
        return f"\n--- last {LOG_LINES} log lines of {role}'s current container:\n" + "\n".join(lines)


def _reap_detail(reaped: Any) -> str:
    rows = [f"{i.env}: {i.result}" + (f" ({i.reason})" if i.reason else "")
            + (f"; left: {', '.join(i.leftovers)}" if i.leftovers else "") for i in reaped.items]
    return "\n".join(rows) or "no expired environments"


def _ttl_text(ttl: timedelta) -> str:
    return format_duration(ttl)
