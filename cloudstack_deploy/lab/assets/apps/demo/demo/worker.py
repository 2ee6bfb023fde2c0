"""The demo worker: takes jobs from Redis (BLPOP on demo:jobs), stores results in PostgreSQL.

Run as ``python3 -m demo.worker`` from the app image. On SIGTERM it finishes the job in hand
and exits 0, so a deploy that stops the old worker loses nothing. A job whose result cannot
be stored goes back to the head of the queue (at-least-once; the jobs table upserts by id).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

from . import db, jobs

POLL_SECONDS = 1
"""BLPOP timeout: how often the loop looks at the stop flag while the queue is empty."""
MAX_BACKOFF = 10.0


class Worker:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.version = env.get("APP_VERSION", "dev")
        self.hostname = socket.gethostname()
        self.db_url = db.database_url(env)
        self.redis_url = jobs.redis_url(env)
        self.stop = threading.Event()
        self.processed = 0

    def run(self) -> None:
        backoff = 0.5
        schema_ready = False
        queue: Any = None
        log(f"worker {self.version} on {self.hostname}: queue {jobs.QUEUE}, db {db.describe(self.db_url)}")
        while not self.stop.is_set():
            try:
                if not schema_ready:
                    with db.connect(self.db_url) as conn:
                        db.ensure_schema(conn)
                    schema_ready = True
                if queue is None:
                    queue = jobs.connect(self.redis_url, blocking=True)
                item = queue.blpop([jobs.QUEUE], timeout=POLL_SECONDS)
                if item is not None:
                    self._handle(queue, item[1])
                backoff = 0.5
            except Exception as exc:  # dependencies come and go; keep trying until stopped
                log(f"error: {type(exc).__name__}: {str(exc).strip()}; retrying in {backoff:.1f}s")
                queue = None
                self.stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        log(f"stopped after {self.processed} job(s)")

    def _handle(self, queue: Any, raw: bytes) -> None:
        try:
            job = jobs.decode(raw)
        except ValueError as exc:
            log(f"dropping a malformed message: {exc}")
            return
        result = jobs.process(job, self.hostname, self.version)
        try:
            with db.connect(self.db_url) as conn:
                db.save_job(conn, result)
        except Exception:
            queue.lpush(jobs.QUEUE, raw)  # put it back first in line, then let run() back off
            raise
        self.processed += 1
        log(f"job {job['id']} done")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    worker = Worker()

    def stop(signum: int, _frame: Any) -> None:
        log(f"signal {signum}: finishing the current job, then stopping")
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()


if __name__ == "__main__":
    main()
