"""The job queue between the web app and the worker: a Redis list of JSON messages.

The app RPUSHes, the worker BLPOPs, so jobs are handled first in, first out. redis is
imported lazily so these helpers can be unit-tested without the library.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

QUEUE = "demo:jobs"
SOCKET_TIMEOUT = 3
"""Seconds: a status page must answer quickly even when Redis is unreachable."""


def redis_url(env: Mapping[str, str] | None = None) -> str:
    """REDIS_URL if set, else redis://[:REDIS_PASSWORD@]REDIS_HOST:REDIS_PORT/0."""
    env = os.environ if env is None else env
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    password = env.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{env.get('REDIS_HOST') or 'localhost'}:{int(env.get('REDIS_PORT') or 6379)}/0"


def connect(url: str, *, blocking: bool = False) -> Any:
    """A Redis client; ``blocking`` clients get no read timeout (BLPOP waits on its own)."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=SOCKET_TIMEOUT,
                                socket_timeout=None if blocking else SOCKET_TIMEOUT,
                                health_check_interval=30)


def new_job(payload: str, enqueued_by: str, version: str) -> dict[str, str]:
    return {"id": uuid.uuid4().hex, "payload": payload, "enqueued_by": enqueued_by,
            "version": version}


def encode(job: Mapping[str, str]) -> bytes:
    return json.dumps(dict(job), sort_keys=True).encode()


def decode(raw: bytes | str) -> dict[str, str]:
    """A queued job; raises ValueError for anything that is not one (never trust a queue)."""
    job = json.loads(raw)
    if not isinstance(job, dict) or not isinstance(job.get("id"), str) or "payload" not in job:
        raise ValueError(f"not a demo job: {raw!r:.80}")
    return {k: str(v) for k, v in job.items()}


def process(job: Mapping[str, str], processed_by: str, version: str) -> dict[str, str]:
    """The 'work': upper-case the payload. What matters is who did it and with which version."""
    return {"id": job["id"], "payload": job["payload"], "result": job["payload"].upper(),
            "processed_by": processed_by, "version": version}
