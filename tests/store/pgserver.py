"""A throwaway PostgreSQL server for tests: Debian's binaries, a cluster in a temp dir,
listening on 127.0.0.1 and a free port (and a Unix socket in ``socket_dir``), password
authentication; stopped and removed after.

``shared_pg_server()`` is the one every fixture uses: a single server per test process (each
pytest-xdist worker), started on first use and stopped when pytest ends (its config's cleanup); tests share it
through databases of their own. (A cluster per fixture meant up to three ``initdb`` runs and
servers per worker, seconds of CPU each, for the same thing.)

As root the cluster belongs to the ``postgres`` user (``initdb`` refuses root), run through
``runuser``; as anyone else it belongs to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ports import free_port


def bindir() -> Path | None:
    """The newest Debian PostgreSQL's bin dir (``/usr/lib/postgresql/N/bin``), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str
    database: str
    socket_dir: str = ""  # where it also listens on a Unix socket (-k)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"


@contextlib.contextmanager
def pg_server() -> Iterator[PgServer]:
    bins = bindir()
    assert bins is not None, "PostgreSQL is not installed (apt-get install postgresql)"
    as_root = os.geteuid() == 0
    run_as: list[str] = ["runuser", "-u", "postgres", "--"] if as_root else []
    top = Path(tempfile.mkdtemp(prefix="csdeploy-pg-"))
    data, sock = top / "data", top / "sock"
    password = "pw-" + secrets.token_hex(8)
    pwfile = top / "pwfile"
    pwfile.write_text(password + "\n")
    sock.mkdir()
    if as_root:
        shutil.chown(top, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
    port = free_port()
    log = top / "server.log"

    def run(*argv: str) -> None:
        proc = subprocess.run([*run_as, *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{argv[0]} failed: {proc.stdout}\n{proc.stderr}"

    try:
        run(str(bins / "initdb"), "-D", str(data), "-U", "csdeploy", "--pwfile", str(pwfile),
            "-A", "scram-sha-256", "-E", "UTF8", "--no-sync")
        run(str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start", "-o",
            f"-h 127.0.0.1 -p {port} -k {sock} -c fsync=off")
        server = PgServer("127.0.0.1", port, "csdeploy", password, "postgres", str(sock))
        import psycopg

        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE csdeploy_test")
        server.database = "csdeploy_test"
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*run_as, str(bins / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        _remove_detached(top)


def _remove_detached(top: Path) -> None:
    """Remove the cluster's directory in a process of its own session, not waited for.

    A cluster that served a whole worker holds hundreds of databases (0.5-1.5 s of unlinking,
    more on a loaded machine), and pytest-xdist kills a worker still busy 10 s after the
    session's end: a removal cut short there left half-deleted clusters in /tmp (13 of them,
    2.5 GB, found on 2026-12-07). ``rm`` in its own session outlives the worker and takes the
    unlinking off the tier's end."""
    try:
        subprocess.Popen(["rm", "-rf", "--", str(top)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        shutil.rmtree(top, ignore_errors=True)


_shared: list[PgServer] = []


def shared_pg_server(config: Any) -> PgServer:
    """This process's server (see the module's docstring): started by the first caller, stopped
    and removed with pytest's ``config`` (``add_cleanup``)."""
    if not _shared:
        stack = contextlib.ExitStack()
        _shared.append(stack.enter_context(pg_server()))
        config.add_cleanup(stack.close)
        config.add_cleanup(_shared.clear)
    return _shared[0]
