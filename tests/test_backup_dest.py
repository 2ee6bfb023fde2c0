"""Where backups go: a private local directory, libcloud's local driver, an S3-compatible
server over HTTP on loopback (moto's server: the S3 wire protocol with signature v4, through
libcloud's S3-compatible driver exactly as a MinIO or Ceph endpoint is reached). Azure Blob
Storage, as Microsoft's emulator Azurite serves it, has its own module (one emulator start):
tests/test_backup_azure.py.

Each store is driven through the same async bridges the backup uses: bytes go in chunk by
chunk, the digest and size come back, and a failing source leaves no object behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cloudstack_deploy import backup_dest as bd
from cloudstack_deploy.errors import InvalidInput


async def chunks(data: bytes, size: int = 7000, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        if fail_after is not None and i >= fail_after:
            raise RuntimeError("the dump broke off")
        yield data[i:i + size]
        await asyncio.sleep(0)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-value")
    bucket = f"b{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing-key",
                 aws_secret_access_key="testing-secret-value").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/team/backups?endpoint={s3_endpoint}"


@pytest.fixture(params=["dir", "libcloud-local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bd.Store:
    if request.param == "dir":
        return bd.open_store(str(tmp_path / "dumps"))
    if request.param == "libcloud-local":
        pytest.importorskip("fasteners")
        # libcloud's local driver takes a lock file per object in tempfile.gettempdir(), and
        # leaves it there: the test's own directory, so that runs leave nothing in /tmp.
        (tmp_path / "tmp").mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        (tmp_path / "objects" / "vault").mkdir(parents=True)
        return bd.open_store(f"local://vault/nightly?root={tmp_path / 'objects'}")
    return bd.open_store(request.getfixturevalue("s3_url"))


async def test_a_dump_goes_in_by_chunks_and_comes_back_the_same(store: bd.Store) -> None:
    store.check()
    data = os.urandom(300_000)
    size, digest = await bd.upload(store, "shop/db/20261206T030000Z.pgdump", chunks(data))
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    back = b"".join([c async for c in bd.download(store, "shop/db/20261206T030000Z.pgdump")])
    assert back == data
    await bd.write_small(store, "shop/db/20261206T030000Z.pgdump.json", b"{}")
    assert store.keys("shop/") == ["shop/db/20261206T030000Z.pgdump", "shop/db/20261206T030000Z.pgdump.json"]
    assert store.keys("other/") == []
    store.delete("shop/db/20261206T030000Z.pgdump")
    assert store.keys("shop/") == ["shop/db/20261206T030000Z.pgdump.json"]


async def test_a_source_that_breaks_off_leaves_no_object(store: bd.Store) -> None:
    with pytest.raises(RuntimeError, match="broke off"):
        await bd.upload(store, "shop/db/broken.pgdump", chunks(os.urandom(200_000), fail_after=70_000))
    assert store.keys("shop/") == []


async def test_the_default_directory_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "home"))
    store = bd.open_store(None)
    store.check()
    await bd.upload(store, "shop/db/x.pgdump", chunks(b"PGDMP" + b"\0" * 100))
    path = tmp_path / "home" / "backups" / "shop" / "db" / "x.pgdump"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in (path.parent, path.parent.parent, tmp_path / "home" / "backups"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_a_key_cannot_leave_the_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        list(bd.open_store(str(tmp_path)).get("../../etc/passwd"))


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://host/x", "unknown scheme 'ftp'"),
    ("s3:///prefix", "names no bucket"),
    ("s3://AKIA:secret@bucket/x", "credentials in the URL"),
    ("s3://bucket/x?endpiont=http://h", "unknown option(s) endpiont"),
    ("s3://bucket/x?endpoint=127.0.0.1:9000", "is not an http(s) URL"),
    ("azure://c/x?endpoint=127.0.0.1:10000", "is not an http(s) URL"),
    ("azure://c/x?endpoint=http://127.0.0.1:port", "is not an http(s) URL"),
    ("s3://bucket/x?endpoint=http://minio:9000/bucket", "has a path"),
    ("azure://c/x?endpoint=http://127.0.0.1:10000/acct/blob", "has a path"),
    ("gs://bucket/x?endpoint=http://127.0.0.1:4443", "gs:// takes no endpoint"),
    ("azure://c/x?region=west", "unknown option"),  # region is s3's
    ("local://vault/x", "needs ?root="),
    ("file://otherhost/x", "names a local path"),
    ("", "empty"),
])
def test_an_unusable_url_is_one_line_naming_it(url: str, says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct")
    monkeypatch.setenv("AZURE_STORAGE_KEY", "a2V5")
    with pytest.raises(InvalidInput) as caught:
        bd.open_store(url)
    assert says in str(caught.value) and "\n" not in str(caught.value)
    assert "secret@" not in str(caught.value)


def test_missing_credentials_are_named_not_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(InvalidInput, match="AWS_ACCESS_KEY_ID is not set"):
        bd.open_store("s3://bucket/x")


def test_credentials_may_come_from_the_blueprint_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    given = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    store = bd.open_store("s3://bucket/x?region=eu-west-1", lookup=given.get)
    assert isinstance(store, bd.ObjectStore) and store.bucket == "bucket" and store.prefix == "x"


def test_a_missing_bucket_and_an_unreachable_endpoint_are_said(s3_url: str) -> None:
    missing = s3_url.replace("s3://b", "s3://nope", 1)
    with pytest.raises(InvalidInput, match="no bucket or container 'nope"):
        bd.open_store(missing).check()
    dead = "s3://bucket/x?endpoint=http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(InvalidInput, match="unreachable or refused"):
        bd.open_store(dead).check()


@pytest.mark.parametrize("key_id", ["GOOG1EXAMPLEKEYID", "backups-writer", "123-abc.apps.googleusercontent.com"])
def test_a_gs_key_id_of_any_shape_is_an_hmac_key(key_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """libcloud guesses the kind of Google credentials from the key id's shape
    (libcloud.common.google.GoogleAuthType.guess_type): one not starting with GOOG made it ask
    GCE's metadata server (traffic off this machine), then start an interactive OAuth sign-in.
    gs:// takes HMAC keys (GCS_ACCESS_KEY / GCS_SECRET) whatever they look like."""
    from libcloud.common.google import GoogleAuthType, GoogleOAuth2Credential

    asked: list[str] = []

    def sign_in(*args: object, **kwargs: object) -> None:  # it listens on 127.0.0.1:8087 until a browser comes
        asked.append("OAuth sign-in")
        raise RuntimeError("an OAuth sign-in was started")

    monkeypatch.setattr(GoogleAuthType, "_is_gce", staticmethod(lambda: asked.append("metadata server") or False))
    monkeypatch.setattr(GoogleOAuth2Credential, "__init__", sign_in)
    monkeypatch.setenv("GCS_ACCESS_KEY", key_id)
    monkeypatch.setenv("GCS_SECRET", "hmac-secret-value")
    store = bd.open_store("gs://bucket/team")
    assert isinstance(store, bd.ObjectStore) and asked == []
    for connection in (store.driver.connection, store.driver.json_connection):
        assert connection.auth_type == GoogleAuthType.GCS_S3 and connection.oauth2_credential is None
