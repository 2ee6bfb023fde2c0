"""An API behind HTTPS, as every real CloudStack is: the certificate is checked against the
system's CAs (here: SSL_CERT_FILE, which replaces them), a CA bundle given as `cs` reads it
(``verify = PATH`` in cloudstack.ini, ``CLOUDSTACK_VERIFY=PATH``), or not at all
(``verify = false``); an untrusted certificate is said once, naming the endpoint, and not
retried. The API is the simulator behind a real TLS listener (OpenSSL, through Python's ssl)
with a certificate for 127.0.0.1 from a CA of the test's own.

The CAs are loaded when the first TLS connection needs them, not when aiohttp is imported
(cloudstack_deploy/lazy_cas.py): the last tests prove that the contexts aiohttp makes on
import still trust exactly the system's CAs, read at that first connection.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudstack_deploy.lab.ca import ensure_ca, ensure_server_cert
from cloudstack_deploy.lab.simulator.server import ThreadedSimulator
from tests.support.cli import REPO, Run, run_cli
from tests.support.sim import KEY, SECRET, make_config


@dataclass
class TlsApi:
    endpoint: str        # https://127.0.0.1:PORT/client/api
    ca: Path             # the CA that signed the listener's certificate
    other_ca: Path       # a CA that did not


class TlsRelay:
    """A TLS listener on 127.0.0.1 that hands each connection's plain bytes to ``port``."""

    def __init__(self, context: ssl.SSLContext, port: int) -> None:
        self.context, self.target = context, port
        self.port = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="tls-relay")
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.context))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsApi]:
    base = tmp_path_factory.mktemp("tls")
    ca = ensure_ca(base / "ca")
    other = ensure_ca(base / "other-ca")
    server = ensure_server_cert(ca, base / "server", ["localhost"], ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    with ThreadedSimulator(make_config(ssh=False)) as sim:
        port = int(sim.endpoint.split(":")[2].split("/")[0])
        relay = TlsRelay(context, port)
        try:
            yield TlsApi(f"https://127.0.0.1:{relay.port}/client/api", ca.cert, other.cert)
        finally:
            relay.close()


def envs(api: TlsApi, home: Path, *, ini: dict[str, str] | None = None, **env: str) -> Run:
    """`csdeploy envs` against the HTTPS API: from the environment, or from a cloudstack.ini."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("CLOUDSTACK_", "CSDEPLOY_", "SSL_CERT_", "REQUESTS_CA_BUNDLE"))}
    base.update(CSDEPLOY_HOME=str(home), CSDEPLOY_STATE_URL="none", **env)
    if ini is None:
        base.update(CLOUDSTACK_ENDPOINT=api.endpoint, CLOUDSTACK_KEY=KEY, CLOUDSTACK_SECRET=SECRET)
    else:
        lines = ["[cloudstack]", f"endpoint = {api.endpoint}", f"key = {KEY}", f"secret = {SECRET}",
                 *(f"{k} = {v}" for k, v in ini.items())]
        (home / "cloudstack.ini").parent.mkdir(parents=True, exist_ok=True)
        (home / "cloudstack.ini").write_text("\n".join(lines) + "\n")
        base["CLOUDSTACK_CONFIG"] = str(home / "cloudstack.ini")
    return run_cli(["envs"], base, timeout=60)


def test_the_system_s_cas_are_trusted(api: TlsApi, tmp_path: Path) -> None:
    run = envs(api, tmp_path, SSL_CERT_FILE=str(api.ca))
    assert run.code == 0 and run.stdout.strip() == "no environments", run.explain()


def test_an_untrusted_certificate_is_said_once_naming_the_endpoint(api: TlsApi, tmp_path: Path) -> None:
    run = envs(api, tmp_path, SSL_CERT_FILE=str(api.other_ca))
    assert run.code == 1, run.explain()
    said = run.stderr
    assert f"{api.endpoint} has a TLS certificate that is not trusted" in said, run.explain()
    assert "certificate verify failed" in said, run.explain()
    assert "CLOUDSTACK_VERIFY=/path/to/ca.pem" in said, run.explain()   # the hint: what to do
    assert "Traceback" not in said, run.explain()
    # not retried with backoff like a cloud that does not answer: said at once
    assert run.seconds < 5, run.explain()


@pytest.mark.parametrize("how", ["ini", "env", "env-dir"])
def test_a_ca_bundle_given_as_cs_reads_it_is_trusted(api: TlsApi, tmp_path: Path, how: str) -> None:
    untrusting = {"SSL_CERT_FILE": str(api.other_ca)}   # the system's CAs would refuse it
    if how == "ini":
        run = envs(api, tmp_path, ini={"verify": str(api.ca)}, **untrusting)
    elif how == "env":
        run = envs(api, tmp_path, CLOUDSTACK_VERIFY=str(api.ca), **untrusting)
    else:  # a directory of hashed certificates, as OpenSSL's c_rehash leaves it
        hashed = tmp_path / "cas"
        hashed.mkdir()
        subject_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(api.ca)], capture_output=True,
                                      text=True, check=True).stdout.strip()
        (hashed / f"{subject_hash}.0").write_bytes(api.ca.read_bytes())
        run = envs(api, tmp_path, CLOUDSTACK_VERIFY=str(hashed), **untrusting)
    assert run.code == 0 and run.stdout.strip() == "no environments", run.explain()


@pytest.mark.parametrize("ini", [{"verify": "false"}, {"dangerous_no_tls_verify": "true"}])
def test_verification_turned_off_as_cs_does_it(api: TlsApi, tmp_path: Path, ini: dict[str, str]) -> None:
    run = envs(api, tmp_path, ini=ini, SSL_CERT_FILE=str(api.other_ca))
    assert run.code == 0 and run.stdout.strip() == "no environments", run.explain()


def test_a_ca_bundle_that_is_not_there_is_refused_naming_where_it_was_set(api: TlsApi, tmp_path: Path) -> None:
    run = envs(api, tmp_path, ini={"verify": str(tmp_path / "missing.pem")})
    assert run.code == 2, run.explain()
    assert f"cloudstack.ini [cloudstack]: verify: no CA bundle at {tmp_path / 'missing.pem'}" in run.stderr, \
        run.explain()
    run = envs(api, tmp_path, CLOUDSTACK_VERIFY=str(tmp_path / "missing.pem"))
    assert run.code == 2 and "CLOUDSTACK_VERIFY: no CA bundle at" in run.stderr, run.explain()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    run = envs(api, tmp_path, CLOUDSTACK_VERIFY=str(garbage))
    assert run.code == 2 and f"cannot read the CA bundle {garbage}" in run.stderr, run.explain()


# ---- the CAs of aiohttp's own contexts are read at the first connection -----------------------
FIRST_USE = textwrap.dedent("""
    import asyncio, os, shutil, sys
    first = sys.argv[1] == "csdeploy-first"
    if first:
        import cloudstack_deploy
    import aiohttp
    # the system's CAs are only now put where SSL_CERT_FILE says: trusted only if read from now on
    shutil.copy(sys.argv[3], os.environ["SSL_CERT_FILE"])

    async def main():
        async with aiohttp.ClientSession() as session:   # aiohttp's default: its own verified context
            try:
                async with session.get(sys.argv[2]) as resp:
                    print("answered", resp.status)
            except aiohttp.ClientConnectorCertificateError as exc:
                print("refused", exc.certificate_error)

    asyncio.run(main())
""")


@pytest.mark.parametrize("order", ["csdeploy-first", "aiohttp-alone"])
def test_aiohttp_s_own_contexts_read_the_system_s_cas_at_the_first_connection(api: TlsApi, tmp_path: Path,
                                                                            order: str) -> None:
    """With csdeploy imported first, aiohttp's contexts read SSL_CERT_FILE at the first
    connection (a file that did not exist at import is trusted); aiohttp alone reads it on
    import (the control: the same script is refused), so the test tells the two apart."""
    cas = tmp_path / "system-cas.pem"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT_")}
    env["SSL_CERT_FILE"] = str(cas)
    out = subprocess.run([sys.executable, "-c", FIRST_USE, order, api.endpoint, str(api.ca)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    said = out.stdout.strip()
    if order == "csdeploy-first":
        assert said.startswith("answered"), said   # any HTTP status: TLS was trusted
    else:
        assert said.startswith("refused") and "certificate verify failed" in said, said


def test_aiohttp_s_contexts_still_refuse_what_the_system_does_not_trust(api: TlsApi, tmp_path: Path) -> None:
    """Deferred is not weakened: with the wrong CAs at the first connection, refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT_")}
    env["SSL_CERT_FILE"] = str(tmp_path / "system-cas.pem")
    out = subprocess.run([sys.executable, "-c", FIRST_USE, "csdeploy-first", api.endpoint, str(api.other_ca)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused") and "certificate verify failed" in out.stdout, out.stdout
