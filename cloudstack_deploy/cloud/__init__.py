"""The CloudStack facade: configuration, one shared async session, retries, job waits.

Thin on purpose: CloudStack's own command and field names go through unchanged.

The session and its errors (``client``, which loads aiohttp) are imported when first asked
for: a command that only reads its configuration never loads the HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import DEFAULT_IN_FLIGHT, CloudConfig, read_cloud_config

if TYPE_CHECKING:
    from .client import Cloud, CloudError, CloudUnavailable, JobFailed, StillListed

_FROM_CLIENT = frozenset({"Cloud", "CloudError", "CloudUnavailable", "JobFailed", "StillListed"})

__all__ = [
    "DEFAULT_IN_FLIGHT",
    "Cloud",
    "CloudConfig",
    "CloudError",
    "CloudUnavailable",
    "JobFailed",
    "StillListed",
    "read_cloud_config",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_CLIENT:
        value = getattr(importlib.import_module(".client", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
