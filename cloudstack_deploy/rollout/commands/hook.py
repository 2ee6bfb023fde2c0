"""The blueprint's deploy hooks: local commands, run by `sh -c` on this machine.

A hook gets the deploy's facts as ``CSDEPLOY_*`` variables (Kamal's hooks get ``KAMAL_*``)
and the caller's environment without any secret: the blueprint's secret names, the cloud's
API keys and the history store's URL (it may hold a database password) are removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .script import Argv

#: Variables a hook never sees, whatever the caller's shell holds.
NEVER_PASSED = ("CLOUDSTACK_KEY", "CLOUDSTACK_SECRET", "CSDEPLOY_STATE_URL")


def argv(command: str) -> Argv:
    """How a hook's command line is run: one ``sh -c`` word, as written in the blueprint."""
    return ["sh", "-c", command]


def environment(base: Mapping[str, str], facts: Mapping[str, str], secret_names: Iterable[str]) -> dict[str, str]:
    """``base`` minus every secret name (and NEVER_PASSED), plus ``CSDEPLOY_<FACT>`` for each fact."""
    drop = {*secret_names, *NEVER_PASSED}
    env = {k: v for k, v in base.items() if k not in drop}
    env.update({f"CSDEPLOY_{k.upper()}": v for k, v in facts.items()})
    return env
