"""The demo web app: a threading http.server behind kamal-proxy.

Routes: GET /up (health), GET / (version, host, DB and Redis status), POST /jobs (enqueue),
GET /jobs/<id> (result from PostgreSQL), POST/GET /notes (rows in PostgreSQL, to prove data
survives redeploys). The version is baked into the image (APP_VERSION); the version
"broken" answers 500 on /up forever, so the lab can show a deploy that must not switch;
"degrading" passes /up but answers 500 on / once it has run DEGRADE_AFTER seconds (5 by
default), so the lab can show a watch that notices what a health check does not.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import db, jobs

MAX_BODY = 64 * 1024

ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/up"), "up"),
    ("GET", re.compile(r"/"), "index"),
    ("POST", re.compile(r"/jobs"), "enqueue"),
    ("GET", re.compile(r"/jobs/(?P<job_id>[0-9a-f]{32})"), "job"),
    ("POST", re.compile(r"/notes"), "add_note"),
    ("GET", re.compile(r"/notes"), "notes"),
]

Response = tuple[int, str, bytes]


def route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """(handler name, path parameters) for a request; ("method_not_allowed", {}) when only
    the method is wrong; None for an unknown path. Query strings are ignored."""
    path = path.split("?", 1)[0]
    path_known = False
    for want, pattern, name in ROUTES:
        m = pattern.fullmatch(path)
        if m:
            if want == method or (method == "HEAD" and want == "GET"):
                return name, m.groupdict()
            path_known = True
    return ("method_not_allowed", {}) if path_known else None


def _json(status: int, data: Any) -> Response:
    return status, "application/json", (json.dumps(data, default=str) + "\n").encode()


class App:
    """Request handling without sockets: `handle()` maps a request to a response."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.version = env.get("APP_VERSION", "dev")
        self.hostname = socket.gethostname()
        self.healthy = self.version != "broken"
        self.started = time.monotonic()
        self.degrade_after = float(env.get("DEGRADE_AFTER", "5")) if self.version == "degrading" else None
        self.db_url = db.database_url(env)
        self.redis_url = jobs.redis_url(env)
        self._schema_ready = False
        self._status_db = db.Pool(self.db_url)  # GET / checks the database on every request
        self._db_lock = threading.Lock()
        self._redis_lock = threading.Lock()
        self._redis: Any = None

    # -- resources -------------------------------------------------------------------------
    def _db(self) -> Any:
        """A database connection (context manager), creating the tables on first use."""
        if not self._schema_ready:
            with self._db_lock, db.connect(self.db_url) as conn:
                db.ensure_schema(conn)
                self._schema_ready = True
        return db.connect(self.db_url)

    def _queue(self) -> Any:
        with self._redis_lock:
            if self._redis is None:
                self._redis = jobs.connect(self.redis_url)
            return self._redis

    def startup(self) -> None:
        """Create the tables now if the database is there; otherwise on first use."""
        try:
            with self._db():
                pass
        except Exception as exc:  # a missing database must not stop the web process
            log(f"database not ready at startup ({type(exc).__name__}: {exc}); will retry on use")

    # -- requests --------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: bytes = b"") -> Response:
        found = route(method, path)
        if found is None:
            return _json(404, {"error": "not found"})
        name, params = found
        if name == "method_not_allowed":
            return _json(405, {"error": "method not allowed"})
        try:
            return getattr(self, f"do_{name}")(body=body, **params)
        except Exception as exc:  # dependency errors become 503s a client can retry
            return _json(503, {"error": f"{type(exc).__name__}: {exc}".strip()})

    def do_up(self, body: bytes) -> Response:
        if not self.healthy:
            return 500, "text/plain", b"unhealthy (this is the 'broken' demo version)\n"
        return 200, "text/plain", b"OK\n"

    def do_index(self, body: bytes) -> Response:
        if self.degrade_after is not None and time.monotonic() - self.started > self.degrade_after:
            return 500, "text/plain", (f"demo {self.version}\nhost: {self.hostname}\n"
                                       f"failing since {self.degrade_after:g}s after start\n").encode()
        lines = [f"demo {self.version}", f"host: {self.hostname}",
                 f"db: {self._check(self._check_db)} ({db.describe(self.db_url)})",
                 f"redis: {self._check(self._check_redis)}"]
        return 200, "text/plain", ("\n".join(lines) + "\n").encode()

    def do_enqueue(self, body: bytes) -> Response:
        job = jobs.new_job(body.decode(errors="replace"), self.hostname, self.version)
        self._queue().rpush(jobs.QUEUE, jobs.encode(job))
        return _json(202, {"id": job["id"], "queue": jobs.QUEUE})

    def do_job(self, body: bytes, job_id: str) -> Response:
        with self._db() as conn:
            found = db.get_job(conn, job_id)
        return _json(200, found) if found else _json(404, {"id": job_id, "status": "pending"})

    def do_add_note(self, body: bytes) -> Response:
        text = body.decode(errors="replace").strip()
        if not text:
            return _json(400, {"error": "POST the note's text as the request body"})
        with self._db() as conn:
            return _json(201, db.add_note(conn, text, self.hostname, self.version))

    def do_notes(self, body: bytes) -> Response:
        with self._db() as conn:
            return _json(200, db.list_notes(conn))

    @staticmethod
    def _check(probe: Any) -> str:
        try:
            probe()
            return "ok"
        except Exception as exc:
            return f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"

    def _check_db(self) -> None:
        def select_1(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")

        self._status_db.run(select_1)

    def _check_redis(self) -> None:
        self._queue().ping()


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 on purpose: no idle keep-alive threads to wait for at shutdown."""

    server_version = "demo"
    app: App  # set on the class by serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            status, ctype, payload = _json(413, {"error": f"body over {MAX_BODY} bytes"})
        else:
            body = self.rfile.read(length) if length else b""
            status, ctype, payload = self.app.handle(self.command, self.path, body)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        if not self.path.startswith("/up"):  # health checks every second would drown the log
            log(f"{self.address_string()} {format % args}")


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for in-flight requests: a clean drain
    allow_reuse_address = True


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def serve(app: App, port: int) -> None:
    """Serve until SIGTERM/SIGINT, then finish in-flight requests and exit 0."""
    Handler.app = app
    server = Server(("0.0.0.0", port), Handler)

    def stop(signum: int, _frame: Any) -> None:
        log(f"signal {signum}: shutting down")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"demo {app.version} listening on :{port} (db {db.describe(app.db_url)})")
    server.serve_forever()
    server.server_close()
    log("stopped")


def main() -> None:
    app = App()
    app.startup()
    serve(app, int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
