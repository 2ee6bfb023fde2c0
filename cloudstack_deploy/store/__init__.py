"""The history store: environments, deployments and their events, nightly and reap runs.

SQLite at ``$CSDEPLOY_HOME/history.db`` by default; PostgreSQL when ``CSDEPLOY_STATE_URL``
is a ``postgresql://`` URL, so CI runners and people share one history. Commands write
through `Journal` (best effort: an unreachable store is a warning); `records` holds every
statement; `db.Store` the connection and the versioned schema (yoyo-migrations).
"""

from .db import Store
from .journal import Journal, check_reachable
from .records import Deployment, EnvironmentRow, Run, actor
from .url import ENV_VAR, StoreURL, parse_store_url, store_url

__all__ = ["ENV_VAR", "Deployment", "EnvironmentRow", "Journal", "Run", "Store", "StoreURL", "actor",
           "check_reachable", "parse_store_url", "store_url"]
