"""csdeploy's errors: one small tree; each class knows its exit code and a default hint.

    CsdeployError                 an error the user can act on (exit 1)
    ├── InvalidInput              the input is wrong: blueprint, flag, name, catalog (exit 2)
    │   └── BlueprintError        (blueprint.py: every problem with file:line)
    ├── OperationFailed           the cloud or a host said no, or did not answer (exit 1)
    │   ├── CloudError            (cloud/client.py: command, code, CloudStack's text)
    │   └── HostError             (rollout/hosts.py: host, step, the host's output)
    ├── Locked                    someone else is changing the environment right now (exit 1)
    └── Interrupted               Ctrl-C or SIGTERM; re-run to finish (exit 130)

A library caller catches `CsdeployError` (or one branch) and lets genuine bugs surface as
tracebacks; the CLI renders every error the same way (`cli/common.py`). Messages never hold
secret values: they end up in logs and terminals.
"""

from __future__ import annotations


class CsdeployError(Exception):
    """An error the user can act on: `str()` says what failed, `hint` what to do about it."""

    exit_code = 1
    default_hint: str | None = None

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint if hint is not None else self.default_hint


class InvalidInput(CsdeployError):
    """The input is wrong (blueprint, flag, environment name, a name the cloud does not offer,
    a refused plan such as shrinking a disk, no cloud configured). Nothing was changed."""

    exit_code = 2


class OperationFailed(CsdeployError):
    """The cloud or a host refused or failed; what completed is kept and a re-run continues."""

    exit_code = 1


class Locked(CsdeployError):
    """Another run holds the environment (local lock, the cloud's lock tag, the deploy lock)."""

    exit_code = 1

    def __init__(self, message: str = "", *, holder: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder = holder


class Interrupted(CsdeployError):
    """Interrupted by the user or a signal; what was started is finished by a re-run."""

    exit_code = 130
    default_hint = "re-run the command to finish what was started"
