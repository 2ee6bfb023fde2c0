"""The root of csdeploy's exception hierarchy.

Every error a user can act on derives from `CsdeployError`, so the CLI (and any library
caller) can catch one class at the top and still let genuine bugs surface as tracebacks.
Modules define their own subclasses next to the code that raises them (for example
`blueprint.BlueprintError`, `secrets.SecretsError`); this module stays small on purpose.
"""

from __future__ import annotations


class CsdeployError(Exception):
    """An error the user can act on: `str()` says what failed, `hint` what to do about it.

    The message must never contain secret values: exceptions end up in logs and terminals.
    """

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
