"""Wait until freshly provisioned VMs accept SSH, trusting only the host keys csdeploy gave them.

A new VM goes through refused connections (not booted, firewall rule not yet active), resets
(sshd restarting under cloud-init) and denied logins (keypair not yet installed) before it
answers; all of that is retried with backoff until one deadline. What is never retried is a
host key that differs from the pinned one: csdeploy put that key into the VM itself, so a
different key means someone else is answering at that address.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from cloudstack_deploy.errors import CsdeployError, OperationFailed

ProgressCallback = Callable[[str, str, str], None]

BACKOFF_START = 0.2
BACKOFF_MAX = 2.0
#: How long closing a connection that logged in may take.
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class SSHTarget:
    """One VM to reach: where, as whom, and the only host key to accept."""

    name: str
    """VM name, for messages."""
    host: str
    """Public address."""
    port: int
    user: str
    host_key: str
    """Pinned OpenSSH public key line of the host."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class SSHWaitError(OperationFailed):
    """Some hosts never answered SSH in time, or answered with the wrong host key."""

    def __init__(self, message: str, *, pending: dict[str, str] | None = None,
                 mismatched: dict[str, str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.pending_detail: dict[str, str] = dict(pending or {})
        self.pending: list[str] = sorted(self.pending_detail)
        """Names of hosts that never answered."""
        self.mismatched: dict[str, str] = dict(mismatched or {})
        """Name -> detail of hosts whose host key did not match."""


@dataclass
class _Outcome:
    name: str
    seconds: float | None = None
    mismatch: str | None = None
    last_error: str = field(default="not tried yet")


class _HardFailure(Exception):
    """A failure that retrying cannot fix."""


def _pinned_key(target: SSHTarget) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(target.host_key.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise CsdeployError(f"pinned host key of {target.name} is not a public key: {exc}",
                            hint="rebuild known_hosts from the VMs' user data") from None


def _explain(exc: BaseException, target: SSHTarget, connect_timeout: float) -> str:
    """What a transient failure most likely means, in words a user can act on."""
    if isinstance(exc, ConnectionRefusedError):
        return ("connection refused: is the firewall rule for port "
                f"{target.port} in place and does allow_from include this machine?")
    if isinstance(exc, TimeoutError):
        return (f"no SSH answer within {connect_timeout:g} s (VM still booting, or a "
                "firewall dropping packets)")
    if isinstance(exc, asyncssh.PermissionDenied):
        return (f"login as {target.user!r} with csdeploy's key refused (cloud-init may not "
                "have installed the keypair yet, or the VM has another keypair)")
    if isinstance(exc, ConnectionResetError | asyncssh.ConnectionLost | BrokenPipeError):
        return "connection closed by the VM (sshd starting or VM stopped?)"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"SSH disconnected: {exc.reason}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}".lower()
    return f"{type(exc).__name__}: {exc}"


async def _wait_one(target: SSHTarget, outcome: _Outcome, *, client_key: asyncssh.SSHKey,
                    semaphore: asyncio.Semaphore, started: float, deadline: float,
                    connect_timeout: float) -> None:
    """Retry ``target`` until it authenticates (sets ``outcome.seconds``) or the deadline."""
    loop = asyncio.get_running_loop()
    host_key = _pinned_key(target)
    delay = BACKOFF_START
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        async with semaphore:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            attempt = min(connect_timeout, remaining)
            try:
                conn = await asyncssh.connect(
                    target.host, target.port, username=target.user,
                    # Trust exactly the pinned key, whatever the host name: no known_hosts
                    # files, no config, no agent, no prompting.
                    known_hosts=([host_key], [], []), client_keys=[client_key],
                    agent_path=None, config=None, preferred_auth="publickey",
                    connect_timeout=attempt,
                )
            except asyncssh.HostKeyNotVerifiable as exc:
                raise _HardFailure(
                    f"host key of {target.name} ({target.address}) does not match the key "
                    "csdeploy gave it: refusing to connect (possible man-in-the-middle or a "
                    "VM that was replaced)") from exc
            except asyncssh.KeyExchangeFailed as exc:
                raise _HardFailure(
                    f"SSH key exchange with {target.name} ({target.address}) failed "
                    f"({exc.reason}): it does not offer the host key csdeploy gave it") from exc
            except (OSError, TimeoutError, asyncssh.Error) as exc:
                # an attempt the overall deadline cut short says nothing new: what an earlier
                # one learnt (a refused login) is the reason to give
                if not (isinstance(exc, TimeoutError) and attempt < connect_timeout
                        and outcome.last_error != _Outcome.last_error):
                    outcome.last_error = _explain(exc, target, connect_timeout)
            else:
                outcome.seconds = loop.time() - started
                conn.close()
                try:  # the login is what counted; a close the host never confirms is not awaited for ever
                    await asyncio.wait_for(conn.wait_closed(), CLOSE_TIMEOUT)
                except TimeoutError:
                    conn.abort()
                return
        pause = min(delay * random.uniform(0.75, 1.25), max(0.0, deadline - loop.time()))
        await asyncio.sleep(pause)
        delay = min(BACKOFF_MAX, delay * 2)


async def wait_for_ssh(targets: Sequence[SSHTarget], *, client_key: Path, timeout: float,
                       concurrency: int = 20, connect_timeout: float = 5.0,
                       on_progress: ProgressCallback | None = None,
                       semaphore: asyncio.Semaphore | None = None) -> dict[str, float]:
    """Wait until every target accepts an SSH login; return name -> seconds it took.

    All targets are tried concurrently, at most ``concurrency`` connection attempts at a
    time (a semaphore, so a large environment does not flood the cloud's router; waits that
    run side by side share theirs as ``semaphore``).
    Raises :class:`SSHWaitError` naming every host that did not answer by ``timeout`` with
    its last error; a host key mismatch fails the wait at once, since the run cannot go on.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate target names: {names}")
    try:
        key = asyncssh.read_private_key(client_key)
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        raise CsdeployError(f"cannot read SSH key {client_key}: {exc}",
                            hint="csdeploy needs an unencrypted private key") from None
    for target in targets:
        _pinned_key(target)  # fail on a bad pin before waiting for anything

    def progress(name: str, status: str, detail: str) -> None:
        if on_progress is not None:
            on_progress(name, status, detail)

    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    semaphore = semaphore if semaphore is not None else asyncio.Semaphore(concurrency)
    outcomes = {t.name: _Outcome(t.name) for t in targets}
    tasks: dict[asyncio.Task[None], SSHTarget] = {}
    for target in targets:
        progress(target.name, "running", f"waiting for SSH on {target.address}")
        task = asyncio.create_task(_wait_one(
            target, outcomes[target.name], client_key=key, semaphore=semaphore,
            started=started, deadline=deadline, connect_timeout=connect_timeout))
        tasks[task] = target

    mismatched: dict[str, str] = {}
    pending_tasks = set(tasks)
    try:
        while pending_tasks:
            done, pending_tasks = await asyncio.wait(pending_tasks,
                                                     return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                target = tasks[task]
                outcome = outcomes[target.name]
                exc = task.exception()
                if isinstance(exc, _HardFailure):
                    mismatched[target.name] = str(exc)
                    progress(target.name, "failed", str(exc))
                elif exc is not None:
                    raise exc
                elif outcome.seconds is not None:
                    progress(target.name, "done", f"SSH answered after {outcome.seconds:.1f} s")
                else:
                    progress(target.name, "failed",
                             f"no SSH login within {timeout:g} s: {outcome.last_error}")
            if mismatched:
                break  # fail fast: a foreign host key stops the run whatever the others do
    finally:
        for task in pending_tasks:
            task.cancel()
        await asyncio.gather(*pending_tasks, return_exceptions=True)

    for task in pending_tasks:  # cancelled because another host failed hard
        name = tasks[task].name
        progress(name, "failed", "stopped waiting: another host failed")
    pending = {name: o.last_error for name, o in outcomes.items()
               if o.seconds is None and name not in mismatched}
    if mismatched or pending:
        raise SSHWaitError(_message(targets, pending, mismatched, timeout),
                           pending=pending, mismatched=mismatched, hint=_hint(mismatched))
    return {name: o.seconds for name, o in outcomes.items() if o.seconds is not None}


def _message(targets: Sequence[SSHTarget], pending: dict[str, str],
             mismatched: dict[str, str], timeout: float) -> str:
    by_name = {t.name: t for t in targets}
    lines = list(mismatched.values())
    if pending:
        head = ("SSH not reached on" if mismatched else
                f"SSH did not answer within {timeout:g} s on")
        lines.append(f"{head} {len(pending)} of {len(targets)} hosts:")
        lines += [f"  {name} ({by_name[name].address}): {pending[name]}"
                  for name in sorted(pending)]
    return "\n".join(lines)


def combined_error(targets: Sequence[SSHTarget], errors: Sequence[SSHWaitError], timeout: float) -> SSHWaitError:
    """One error for several waits over parts of ``targets``: what one wait over them all says."""
    pending = {name: detail for e in errors for name, detail in e.pending_detail.items()}
    mismatched = {name: detail for e in errors for name, detail in e.mismatched.items()}
    return SSHWaitError(_message(targets, pending, mismatched, timeout), pending=pending, mismatched=mismatched,
                        hint=_hint(mismatched))


def _hint(mismatched: dict[str, str]) -> str:
    if mismatched:
        return ("check that the address still belongs to this environment's VM; csdeploy pins only "
                "the key it gave the VM, so if the VM was rebuilt outside csdeploy, destroy it and run "
                "'csdeploy create-env BLUEPRINT --env NAME' again to make a replacement")
    return ("check the firewall rules and allow_from for port 22, the VMs' state in "
            "CloudStack, and retry with a longer timeout if they are still booting")
