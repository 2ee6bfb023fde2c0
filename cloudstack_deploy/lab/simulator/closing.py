"""Bounded waits for teardown paths: a close that does not finish in time is logged, never
awaited for ever.

Why: what "closed" waits for differs between Pythons. Since 3.12 ``asyncio.Server.wait_closed()``
(and so asyncssh's ``SSHAcceptor.wait_closed()``) waits until every connection the server
accepted has ended, and ``Server.close()`` still leaves them open (3.13 added
``close_clients()``/``abort_clients()`` for that). So the simulator tracks its connections
itself, closes them explicitly, and waits for anything only through :func:`bounded`: the same
behaviour on 3.11, 3.12 and 3.13, and a stop that always ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger("csdeploy.lab.simulator")

#: How long one teardown step (a close, a listener's end, a task's cancellation) may take.
CLOSE_TIMEOUT = 5.0


async def bounded(aw: Awaitable[Any], what: str, seconds: float = CLOSE_TIMEOUT) -> bool:
    """Await ``aw`` for at most ``seconds``; False (and a warning naming ``what``) if it did not
    finish in time, or failed with an OSError (a connection that is gone already)."""
    try:
        await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        log.warning("%s did not finish within %.0f s; going on without it", what, seconds)
        return False
    except OSError as exc:
        log.debug("%s: %s", what, exc)
        return False
    return True
