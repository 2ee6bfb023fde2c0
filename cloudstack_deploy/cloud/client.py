"""One async CloudStack session with bounded concurrency, safe retries and job waits.

Retry rules (the prior pipeline retried creates blindly and made duplicates):
- list*/query*/get* calls are retried on transport errors and on 429/530/534;
- deletes and other idempotent calls are retried on transport errors and 429; a retry that
  finds the resource gone (431) counts as done;
- a create is never resent after a transport error: the caller re-reads the cloud by tag;
- 429 and 503 (throttled: CloudStack's api.throttling, or a proxy in front of it; nothing
  executed) are retried for every command, and lower the number of calls in flight
  (halved, then grown back one by one as calls succeed: AIMD).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from ..errors import InvalidInput, OperationFailed
from ..log import get_logger
from .api import call, signed
from .config import DEFAULT_IN_FLIGHT, CloudConfig

log = get_logger("cloud")

PAGE_SIZE = 500
SAFE_PREFIXES = ("list", "query", "get")
IDEMPOTENT_PREFIXES = ("delete", "destroy", "expunge", "disassociate", "disable", "detach", "stop", "start")
THROTTLED = {429, 503}
JOB_POLLS = frozenset({"queryAsyncJobResult", "listAsyncJobs"})
RETRY_CODES_SAFE = {429, 503, 530, 534}
HINTS = {
    401: "check CLOUDSTACK_KEY / CLOUDSTACK_SECRET (or the profile in use) and the machine's clock",
    429: "the cloud is rate limiting API calls; lower --max-api and re-run",
    503: "the cloud (or a proxy in front of it) is overloaded; lower --max-api and re-run",
    431: "a name or id was refused; check the blueprint's names (zone, template, offerings) against "
         "what the cloud offers",
    531: "your CloudStack user is not allowed to do this; ask the cloud's administrators",
    532: "the account reached a resource limit; free resources or ask for a higher limit",
    533: "the cloud has no capacity for this right now; try a smaller offering or later, then re-run "
         "(what was created is kept and re-used)",
    535: "the account reached a resource limit; free resources or ask for a higher limit, then re-run",
    537: "a network rule overlaps an existing one on the same IP",
}


#: Commands whose parameters come from the blueprint's names (zone, template, offerings): a 431
#: there is about those names. Anywhere else csdeploy sends ids it has just read from the cloud.
CATALOG_COMMANDS = frozenset({"deployVirtualMachine", "createNetwork", "createVolume", "scaleVirtualMachine"})


def hint_for(command: str, code: int | None) -> str | None:
    """What to do about error ``code`` from ``command``: the hint must fit the failure."""
    if code == 431 and command not in CATALOG_COMMANDS:
        return (f"CloudStack refused the parameters of {command}, which name resources csdeploy has just "
                "read: one changed or went away meanwhile, or cannot do this (e.g. a network that cannot "
                "get another public IP); re-run, and look at the environment in the CloudStack UI if it "
                "persists")
    return HINTS.get(code) if code else None


class CloudError(OperationFailed):
    """A CloudStack error, with the command, the code and CloudStack's own text."""

    def __init__(self, command: str, code: int | None, text: str, *, cserrorcode: int | None = None,
                 hint: str | None = None) -> None:
        where = f"CloudStack {command}"
        msg = f"{where} failed: {text}" + (f" (error {code})" if code else "")
        super().__init__(msg, hint=hint or hint_for(command, code))
        self.command = command
        self.code = code
        self.cserrorcode = cserrorcode
        self.text = text


class CloudUnavailable(CloudError):
    """The endpoint did not answer (connection refused/reset, timeout, not JSON)."""


#: what to do about an API certificate that is not trusted
TLS_HINT = ("trust the CA that signed it: `verify = /path/to/ca.pem` in cloudstack.ini or CLOUDSTACK_VERIFY="
            "/path/to/ca.pem (as cs reads them); SSL_CERT_FILE replaces the system's CAs")


class JobFailed(CloudError):
    """An async job ended with jobstatus 2."""


#: Parameters whose values are never logged, only their size: user data carries the VMs'
#: host private keys; the others are credentials.
UNLOGGED = frozenset({"userdata", "password", "secretkey", "apikey", "signature"})


def _log_call(command: str, params: dict[str, Any], started: float, code: int | str | None) -> None:
    """``-v``: one line per API call (command, duration, result code, parameters redacted)."""
    if not logging.getLogger("cloudstack_deploy.cloud").isEnabledFor(logging.INFO):
        return
    shown = {k: (f"<{len(str(v))} chars>" if k.lower() in UNLOGGED else v) for k, v in params.items()}
    log.info("api call", command=command, seconds=round(time.monotonic() - started, 3), code=code, params=shown)


def _is_safe(command: str) -> bool:
    return command.startswith(SAFE_PREFIXES)


def _is_idempotent(command: str) -> bool:
    return command.startswith(IDEMPOTENT_PREFIXES) or command in (
        "enableStaticNat", "removeFromLoadBalancerRule", "updateLoadBalancerRule")


#: Whether the current task's calls wait behind all others (`Cloud.background`).
_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("csdeploy_cloud_background", default=False)


class AdaptiveLimit:
    """A semaphore whose size follows the cloud: halved on throttling (429/503), grown back by
    one after each `limit` successful calls, never above the user's maximum.

    Callers wait in line and a freed slot wakes the first of them only: with hundreds of calls
    queued (a teardown of 200 VMs submits 400 jobs at once), waking them all on every release
    cost more CPU than the calls themselves. An ``urgent`` caller (a job poll: it finishes
    work already started) goes before the others, so a job on the critical path is not seen
    late behind hundreds of submissions; a ``background`` one (work that nothing waits for
    yet, see `Cloud.background`) goes after them, and holds at most a quarter of the slots,
    so that it fills idle time without a long queue in the cloud ahead of what comes later
    on the critical path."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.limit = maximum
        self._in_use = 0
        self._ok = 0
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()
        self._background_in_use = 0

    @property
    def _background_limit(self) -> int:
        return max(1, self.limit // 4)

    async def acquire(self, *, urgent: bool = False, background: bool = False) -> None:
        """Wait for a slot; the caller gives it back with ``release(background=...)`` as asked
        (an urgent caller is never in the background)."""
        background = background and not urgent
        if self._in_use < self.limit and not self._urgent and (urgent or not self._waiters) \
                and not (background and (self._background or self._background_in_use >= self._background_limit)):
            self._in_use += 1
            self._background_in_use += background
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line = self._urgent if urgent else self._background if background else self._waiters
        line.append(fut)
        self._wake()  # a free slot and only cancelled callers ahead: this one goes now
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # given a slot, then cancelled: pass it on
                self.release(background=background)
            elif fut in line:
                line.remove(fut)
            raise

    def release(self, *, background: bool = False) -> None:
        self._in_use -= 1
        self._background_in_use -= background
        self._wake()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def _wake(self) -> None:
        """Hand free slots to the callers waiting longest, urgent ones first (a slot is taken
        on their behalf)."""
        for line in (self._urgent, self._waiters, self._background):
            while line and self._in_use < self.limit:
                if line is self._background and self._background_in_use >= self._background_limit:
                    break
                fut = line.popleft()
                if not fut.done():
                    self._in_use += 1
                    self._background_in_use += line is self._background
                    fut.set_result(None)

    def throttled(self) -> None:
        self.limit = max(1, self.limit // 2)
        self._ok = 0
        log.info("api throttled", in_flight_limit=self.limit)

    def succeeded(self) -> None:
        if self.limit < self.maximum:
            self._ok += 1
            if self._ok >= self.limit:
                self.limit += 1
                self._ok = 0
                self._wake()


class Cloud:
    """``async with Cloud(config) as cloud: await cloud.list("listZones", name=...)``."""

    def __init__(self, config: CloudConfig, *, max_in_flight: int = DEFAULT_IN_FLIGHT, retries: int = 5,
                 poll_interval: float | None = None, job_timeout: float | None = None,
                 on_call: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.retries = retries
        self.poll_interval = poll_interval if poll_interval is not None else config.poll_interval
        self.job_timeout = job_timeout if job_timeout is not None else config.job_timeout
        self.calls: Counter[str] = Counter()
        self._sem = AdaptiveLimit(max_in_flight)
        self._session: aiohttp.ClientSession | None = None
        self._on_call = on_call
        self._watcher: _JobWatcher | None = None
        self._capabilities: asyncio.Task[dict[str, Any]] | None = None

    async def __aenter__(self) -> Cloud:
        # One session for every call (one connection pool). Timeouts as `cs` set them: the
        # connection and each read, not the whole call (a long listing keeps streaming).
        timeout = aiohttp.ClientTimeout(sock_connect=self.config.timeout, sock_read=self.config.timeout)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=self._tls()))
        return self

    def _tls(self) -> Any:
        """aiohttp's ``ssl``: False when the profile says not to verify, a context trusting the
        profile's CA bundle (``verify = PATH``), else aiohttp's default (the system's CAs)."""
        if self.config.verify is False:
            return False
        if isinstance(self.config.verify, str):
            import os
            import ssl

            bundle = self.config.verify
            try:
                if os.path.isdir(bundle):
                    return ssl.create_default_context(capath=bundle)
                return ssl.create_default_context(cafile=bundle)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidInput(f"{self.config.source}: verify: cannot read the CA bundle {bundle}: {exc}",
                                   hint="give a PEM file of CA certificates (or a directory of hashed ones)") from None
        return True

    async def __aexit__(self, *exc: object) -> None:
        if self._watcher is not None:  # a caller that gave up leaves jobs pending: stop polling them
            await self._watcher.close()
            self._watcher = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        """Calls of the tasks made inside go after every other waiting call (see AdaptiveLimit):
        ``with cloud.background(): later = asyncio.gather(...)``. Job polls stay urgent."""
        token = _BACKGROUND.set(True)
        try:
            yield
        finally:
            _BACKGROUND.reset(token)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    # ---- raw request ---------------------------------------------------------------------
    async def _once(self, command: str, params: dict[str, Any], post: bool) -> dict[str, Any]:
        # Everything but reads goes by POST: aiohttp silently resends a GET whose connection
        # dropped (RFC 9112 idempotent-method retry), which would resend a create.
        session = self._session
        if session is None:
            raise RuntimeError("Cloud must be used as 'async with Cloud(...)'")
        self.calls[command] += 1
        if self._on_call:
            self._on_call(command)
        urgent = command in JOB_POLLS
        background = _BACKGROUND.get() and not urgent
        await self._sem.acquire(urgent=urgent, background=background)
        try:
            started = time.monotonic()
            try:
                request = signed(command, params, self.config.key, self.config.secret)
                reply = await call(session, self.config.endpoint, request, post=post or not _is_safe(command))
            except aiohttp.ClientConnectorCertificateError as exc:
                # not retried: a certificate that is not trusted now will not be in a second
                _log_call(command, params, started, "certificate not trusted")
                raise CloudError(command, None, f"{self.config.shown_endpoint} has a TLS certificate that is not "
                                 f"trusted: {exc.certificate_error}", hint=TLS_HINT) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                detail = str(exc) or type(exc).__name__
                _log_call(command, params, started, "no answer")
                raise CloudUnavailable(command, None, f"no answer from {self.config.shown_endpoint}: {detail}",
                                       hint="is the cloud (or `csdeploy lab`) running and reachable?") from None
            if reply.problem is not None:
                _log_call(command, params, started, reply.status)
                raise CloudUnavailable(command, reply.status,
                                       f"unexpected answer from {self.config.shown_endpoint}: {reply.problem}",
                                       hint="check that CLOUDSTACK_ENDPOINT points at the API (…/client/api)")
            if reply.status != 200:
                code = reply.inner.get("errorcode") or reply.status
                _log_call(command, params, started, code)
                if code in THROTTLED:
                    self._sem.throttled()
                raise CloudError(command, code, reply.inner.get("errortext") or f"HTTP {reply.status}",
                                 cserrorcode=reply.inner.get("cserrorcode"))
            _log_call(command, params, started, 200)
            self._sem.succeeded()
            return reply.inner
        finally:
            self._sem.release(background=background)

    async def request(self, command: str, *, post: bool = False, **params: Any) -> dict[str, Any]:
        """One command with the retry rules above; returns CloudStack's inner response object."""
        params = {k: v for k, v in params.items() if v is not None}
        safe, idempotent = _is_safe(command), _is_idempotent(command)

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, CloudUnavailable):
                return safe or idempotent
            if isinstance(exc, CloudError):
                return exc.code in THROTTLED or (safe and exc.code in RETRY_CODES_SAFE)
            return False

        attempts = 0
        retrying = AsyncRetrying(
            retry=retry_if_exception(retryable), stop=stop_after_attempt(self.retries + 1),
            wait=wait_random_exponential(multiplier=0.2, max=5.0), reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    return await self._once(command, params, post)
        except CloudError as exc:
            # A retried delete that finds the resource gone: the first attempt did it.
            if attempts > 1 and idempotent and exc.code == 431 and not isinstance(exc, CloudUnavailable):
                return {"success": True, "already_gone": True}
            raise
        raise AssertionError("unreachable")

    # ---- conveniences --------------------------------------------------------------------
    async def capabilities(self) -> dict[str, Any]:
        """listCapabilities for this caller, read once per session, however many callers ask at
        once (a teardown of 200 VMs asks 200 times together); {} if the cloud will not say."""
        if self._capabilities is None:
            async def read() -> dict[str, Any]:
                try:
                    return (await self.request("listCapabilities")).get("capability") or {}
                except CloudError:
                    return {}
            self._capabilities = asyncio.ensure_future(read())
        elif self._capabilities.done() and (self._capabilities.cancelled() or self._capabilities.exception()):
            self._capabilities = None  # not an answer (the session was closing): ask again
            return await self.capabilities()
        return await asyncio.shield(self._capabilities)

    async def destroy_vm(self, vm_id: str, *, settled: Settled | None = None) -> bool:
        """Destroy a VM and expunge it; False if this account may only destroy it (CloudStack
        then expunges it after `expunge.delay`).

        Decided from what the cloud says, never from an error's wording: listCapabilities'
        `allowuserexpungerecovervm` (true for admins, else the cloud's setting) says up front
        whether to ask for expunge; a refusal with 531 (CloudStack's permission-denied code)
        to destroyVirtualMachine with expunge=true means the same. Any other failure, a 530
        included, is a real failure and is raised as it is. (Real CloudStack checks the
        permission inside the async job and reports PermissionDeniedException there as a
        530, indistinguishable by code from any internal error; hence the up-front check.)
        ``settled`` (see `wait_job`) may prove the expunge by the VM's absence.
        """
        if (await self.capabilities()).get("allowuserexpungerecovervm") is False:
            await self.job("destroyVirtualMachine", id=vm_id)
            return False
        try:
            await self.job("destroyVirtualMachine", id=vm_id, expunge=True, settled=settled)
            return True
        except CloudError as exc:
            if exc.code != 531 or isinstance(exc, CloudUnavailable):
                raise
        await self.job("destroyVirtualMachine", id=vm_id)
        return False

    async def list(self, command: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list command, walking pages of 500 (``count`` is the total)."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            data = await self.request(command, page=page, pagesize=PAGE_SIZE, **params)
            keys = [k for k in data if k != "count"]
            batch = data[keys[0]] if keys else []
            items.extend(batch)
            if not batch or len(items) >= data.get("count", 0):
                return items
            page += 1

    async def wait_job(self, command: str, jobid: str, *, settled: Settled | None = None) -> dict[str, Any]:
        """Wait for an async job; return its jobresult or raise JobFailed (see _JobWatcher).

        ``settled`` is for a job whose work shows in a listing (a deletion: the resource is
        gone). Once the job has left the cloud's listing of pending jobs, ``settled()`` saying
        True is taken as its success, and its result is not read: one listing for many jobs
        (``StillListed``) instead of one queryAsyncJobResult each. Saying False (or the cloud
        not listing jobs) reads the job's result as without it: its failure is raised as the
        cloud tells it. Returns {} when settled so.
        """
        if self._watcher is None:
            self._watcher = _JobWatcher(self)
        deadline = time.monotonic() + self.job_timeout
        first_poll = QUICK_FIRST_POLL if command in QUICK_JOBS else FIRST_POLL
        job = await self._watcher.wait(jobid, deadline, need_result=settled is None, first_poll=first_poll)
        if job is _UNREAD:
            assert settled is not None
            if await settled():
                return {}
            job = await self._watcher.wait(jobid, deadline, need_result=True)
        if job is None:
            raise CloudError(command, None, f"job {jobid} did not finish within {self.job_timeout:.0f}s",
                             hint="the cloud is slow or stuck; check the job in the CloudStack UI, then re-run")
        if job.get("jobstatus") == 1:
            return job.get("jobresult") or {}
        res = job.get("jobresult") or {}
        raise JobFailed(command, job.get("jobresultcode") or res.get("errorcode"),
                        res.get("errortext") or "the job failed without a message")

    async def job(self, command: str, *, post: bool = False, settled: Settled | None = None,
                  **params: Any) -> dict[str, Any]:
        """Submit an async command and wait for it; returns the job result object (``settled``:
        see `wait_job`)."""
        reply = await self.request(command, post=post, **params)
        if "jobid" not in reply:
            return reply
        return await self.wait_job(command, reply["jobid"], settled=settled)


#: Whether an async job's work is visibly done (see `Cloud.wait_job`).
Settled = Callable[[], Awaitable[bool]]
#: A job that left the cloud's pending listing, its result not read (asked for by ``need_result=False``).
_UNREAD: dict[str, Any] = {"jobstatus": None}


class StillListed:
    """Which of many resources a listing still shows, one listing for all that ask together.

    ``gone(id)`` is a `Settled` check for the deletion of ``id``: the callers whose jobs
    finished in one poll round share one call of ``listing(ids)`` (which returns the ids it
    still finds). A failed listing proves nothing: every caller of that round hears False
    (and reads its job's result instead)."""

    def __init__(self, listing: Callable[[list[str]], Awaitable[set[str]]]) -> None:
        self._listing = listing
        self._asked: set[str] = set()
        self._round: asyncio.Future[set[str] | None] | None = None

    def check(self, resource_id: str) -> Settled:
        return lambda: self.gone(resource_id)

    async def gone(self, resource_id: str) -> bool:
        if self._round is None:
            self._asked = set()
            self._round = asyncio.ensure_future(self._run())
        self._asked.add(resource_id)
        present = await asyncio.shield(self._round)
        return present is not None and resource_id not in present

    async def _run(self) -> set[str] | None:
        await asyncio.sleep(0)  # the others whose jobs finished in the same poll round ask too
        asked, self._round = sorted(self._asked), None
        try:
            return await self._listing(asked)
        except CloudError:
            return None


BATCH_MIN = 3  #: pending jobs from which one listAsyncJobs poll replaces one query per job
FIRST_POLL = 0.2  #: seconds from a job's submission to its first poll (the interval, if shorter)
POLL_GROWTH = 1.5  #: each later poll of a job waits this much longer, up to the poll interval
MIN_POLL_GAP = 0.1  #: seconds from the end of one poll round to the start of the next, at least
#: Jobs CloudStack does in its database alone (TaggedResourceManagerImpl's createTags and
#: deleteTags, AffinityGroupServiceImpl's groups: a transaction, no agent), done within
#: milliseconds of their submission: their first poll comes after `QUICK_FIRST_POLL`, not
#: `FIRST_POLL`. The cloud lock's release, at the end of every deploy and rollback, is one;
#: so is the affinity group a role's VMs wait for.
QUICK_JOBS = frozenset({"createTags", "deleteTags", "createAffinityGroup", "deleteAffinityGroup"})
QUICK_FIRST_POLL = 0.05


class _JobWatcher:
    """Waits for every pending job of a session with as few API calls as it can.

    With a few jobs pending, each is polled with queryAsyncJobResult. With more (30 VMs
    deploying at once), one listAsyncJobs call per round (jobs created since the oldest
    pending one) tells which are still running: CloudStack lists pending jobs only (a
    finished job is marked removed, AsyncJobManagerImpl.completeAsyncJob), so a job that
    left the listing is queried once for its result (unless its caller will prove it
    otherwise, ``need_result=False``: see `Cloud.wait_job`). Polls are one listing per round
    plus one query per job, never one query per job per round. A cloud that lists finished
    jobs with their result (AsyncJobJoinDaoImpl fills it in) saves those queries; should
    listAsyncJobs be refused, every job is polled on its own.

    Each job has its own schedule: first looked at `FIRST_POLL` after it was submitted, then
    after intervals growing by `POLL_GROWTH` up to the poll interval. A job submitted while
    the others have long been waiting (the last of 200 destroys, a job after minutes of
    deploys on a cloud polled every 2 s) is looked at as soon as one submitted alone would be,
    not at the next turn of a slowed-down shared clock. A round serves every job due by then
    (one listing covers all), and rounds are at least `MIN_POLL_GAP` apart, so jobs
    submitted one after another share rounds instead of each asking for its own.
    """

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        #: job id: (its waiter, deadline, when it was first waited for, whether its result is needed)
        self.pending: dict[str, tuple[asyncio.Future[dict[str, Any] | None], float, float, bool]] = {}
        #: job id: (when it is next due, on the loop's clock; the wait before that)
        self._due: dict[str, tuple[float, float]] = {}
        self.batch_ok = True
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._wake_at = float("inf")

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for fut, *_ in self.pending.values():
            fut.cancel()
        self.pending.clear()
        self._due.clear()

    async def wait(self, jobid: str, deadline: float, *, need_result: bool = True,
                   first_poll: float = FIRST_POLL) -> dict[str, Any] | None:
        """The finished job; None past ``deadline``; ``_UNREAD`` if not ``need_result`` and the
        job left the listing of pending jobs (it finished; its result was not read). Its first
        poll comes ``first_poll`` after this call (the poll interval, if shorter)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self.pending[jobid] = (fut, deadline, time.time(), need_result)
        first = min(self.cloud.poll_interval, first_poll)
        self._due[jobid] = (loop.time() + first, first)
        if self._task is None or self._task.done():
            self._wake_at = float("inf")
            self._task = asyncio.create_task(self._run())
        elif self._due[jobid][0] < self._wake_at:
            self._kick.set()  # the watcher sleeps past this job's first poll: wake it to re-plan
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        floor = 0.0  # no round before this: `MIN_POLL_GAP` after the last one ended
        while self.pending:
            self._wake_at = max(floor, min(self._due[j][0] for j in self.pending))
            delay = self._wake_at - loop.time()
            if delay > 0:
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), delay)
                continue  # re-plan: time is up, or a job came in due sooner
            started = loop.time()
            due = [j for j in self.pending if self._due[j][0] <= started]
            ids = list(self.pending)
            to_query = due
            if self.batch_ok and len(ids) >= BATCH_MIN:
                listed = await self._listed(ids)
                if listed is not None:
                    to_query = []
                    for jobid in ids:
                        job = listed.get(jobid)
                        if job is None and not self.pending.get(jobid, (None, 0, 0, True))[3]:
                            self._resolve(jobid, _UNREAD)  # finished; its caller proves it otherwise
                        elif job is None or (job.get("jobstatus") != 0 and "jobresult" not in job):
                            to_query.append(jobid)  # missed, or finished without its result
                        elif job.get("jobstatus") != 0:
                            self._resolve(jobid, job)
            await asyncio.gather(*(self._query(jobid) for jobid in to_query))
            for jobid in due:  # the next poll of each job that was due comes a little later
                if jobid in self._due:
                    step = min(self._due[jobid][1] * POLL_GROWTH, self.cloud.poll_interval)
                    self._due[jobid] = (started + step, step)
            floor = loop.time() + MIN_POLL_GAP
            now = time.monotonic()
            for jobid, (fut, deadline, *_) in list(self.pending.items()):
                if now > deadline and not fut.done():
                    fut.set_result(None)
                    del self.pending[jobid]
                    self._due.pop(jobid, None)

    async def _listed(self, ids: list[str]) -> dict[str, dict[str, Any]] | None:
        """The jobs created since the oldest of ``ids`` by id; None when listing fails."""
        oldest = min(self.pending[i][2] for i in ids) - 120  # clocks of client and cloud may differ
        since = datetime.fromtimestamp(oldest, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
        try:
            jobs = await self.cloud.list("listAsyncJobs", startdate=since)
        except CloudError:
            self.batch_ok = False
            return None
        return {j.get("jobid"): j for j in jobs}

    def _resolve(self, jobid: str, job: dict[str, Any]) -> None:
        self._due.pop(jobid, None)
        entry = self.pending.pop(jobid, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(job)

    async def _query(self, jobid: str) -> None:
        entry = self.pending.get(jobid)
        if entry is None:
            return
        try:
            job = await self.cloud.request("queryAsyncJobResult", jobid=jobid)
        except CloudError as exc:
            if not entry[0].done():
                entry[0].set_exception(exc)
            self.pending.pop(jobid, None)
            self._due.pop(jobid, None)
            return
        if job.get("jobstatus") != 0:
            self._resolve(jobid, job)
