"""The history store: environments, deployments and their events, nightly and reap runs.

SQLite at ``$CSDEPLOY_HOME/history.db`` by default; PostgreSQL when ``CSDEPLOY_STATE_URL``
is a ``postgresql://`` URL, so CI runners and people share one history. Commands write
through `Journal` (best effort: an unreachable store is a warning); `records` holds every
statement; `db.Store` the connection and the versioned schema (yoyo-migrations).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .db import Store
    from .journal import Journal, check_reachable
    from .records import Deployment, EnvironmentRow, Run, actor
    from .url import ENV_VAR, StoreURL, parse_store_url, store_url

_WHERE = {"Store": "db", "Journal": "journal", "check_reachable": "journal", "Deployment": "records",
          "EnvironmentRow": "records", "Run": "records", "actor": "records", "ENV_VAR": "url",
          "StoreURL": "url", "parse_store_url": "url", "store_url": "url"}


def __getattr__(name: str) -> Any:
    """Names are imported on first use: the CLI reads `records.STATUSES` without loading the
    database layer (and what it imports)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)

__all__ = ["ENV_VAR", "Deployment", "EnvironmentRow", "Journal", "Run", "Store", "StoreURL", "actor",
           "check_reachable", "parse_store_url", "store_url"]
