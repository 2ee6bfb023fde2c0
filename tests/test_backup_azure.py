"""Logical backups kept in Azure Blob Storage, against Microsoft's own emulator, Azurite, on
loopback (tests/support/azurite.py), reached as a user reaches it:
``azure://CONTAINER/PREFIX?endpoint=http://127.0.0.1:PORT`` with AZURE_STORAGE_ACCOUNT and
AZURE_STORAGE_KEY in the environment, through apache-libcloud's Azure Blobs driver.

A real `pg_dump -Fc` goes in (tests/test_dumps.py's stand-in for the accessory's host, on a
throwaway PostgreSQL), is listed by `csdeploy backups`, pruned by `keep`, and restored into
another environment with the manifest's sha256 checked on the way; what a user gets wrong
(the key, the endpoint's account, a missing container) is one line and exit 2, before any
dump is taken.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from cloudstack_deploy import backup_dest as bd
from cloudstack_deploy import dumps
from cloudstack_deploy.cli import main
from cloudstack_deploy.errors import InvalidInput
from tests.store.pgserver import PgServer
from tests.support.azurite import ACCOUNT, KEY, Azurite, destination, serve
from tests.test_dumps import _maintenance_log, environment, notes, postgres, sql  # noqa: F401 - fixtures

BLOCK = 4 << 20  # libcloud's Azure driver sends a stream as blocks of 4 MiB, committed at its end


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    yield from serve(tmp_path_factory)


@pytest.fixture
def azure_url(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    return destination(azurite, monkeypatch)


def rows(server: PgServer, here: object, *bodies: str) -> None:
    sql(server, here, "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
    if bodies:
        sql(server, here, "INSERT INTO notes (body) VALUES " + ", ".join(f"('{b}')" for b in bodies))


def blobs(azurite: Azurite, url: str) -> list[str]:
    """Every blob of ``url``'s container, as Azurite lists it (whatever csdeploy thinks)."""
    driver = azurite.driver()
    container = driver.get_container(bd.parse_url(url).bucket)  # type: ignore[attr-defined]
    return sorted(o.name for o in driver.list_container_objects(container))  # type: ignore[attr-defined]


async def test_backup_list_keep_and_restore_through_azure(postgres: PgServer, azurite: Azurite,  # noqa: F811 - the fixture
                                                          azure_url: str) -> None:
    old, old_host, _ = environment(postgres, "shop-old")
    rows(postgres, old_host, "first", "second", "third")
    store = bd.open_store(azure_url)
    start = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    taken = [await dumps.take(old, "db", store, by="cron", keep=2, now=start + timedelta(days=d)) for d in range(3)]
    newest = taken[-1].manifest
    assert taken[-1].pruned == [taken[0].manifest.id], "keep 2: the oldest went"
    assert blobs(azurite, azure_url) == [f"team/backups/{m.key}{ext}" for m in (taken[1].manifest, newest)
                                         for ext in ("", ".json")], "under the URL's prefix, dump and manifest"
    assert newest.destination == azure_url and newest.size > 0

    res = await asyncio.to_thread(CliRunner().invoke, main, ["backups", "--env", "shop-old", "--to", azure_url,
                                                             "--json"])  # the command runs its own loop
    assert res.exit_code == 0, res.output
    assert [(b["id"], b["sha256"], b["destination"]) for b in json.loads(res.output)] == [
        (newest.id, newest.sha256, azure_url), (taken[1].manifest.id, taken[1].manifest.sha256, azure_url)]

    sql(postgres, old_host, "INSERT INTO notes (body) VALUES ('after the backup')")
    new, new_host, maintenance = environment(postgres, "shop-new")
    rows(postgres, new_host, "only in the new one")
    where, manifest, key = await dumps.choose(bd.open_store(azure_url), "shop-old", "db", None)
    assert manifest is not None and manifest.id == newest.id
    await dumps.restore(new, "db", where, manifest, key, label=manifest.id)
    assert notes(postgres, new_host) == ["first", "second", "third"]
    assert maintenance == [True, False]


async def test_a_blob_changed_in_the_container_fails_the_sha256_check_and_nothing_changes(
        postgres: PgServer, azurite: Azurite, azure_url: str) -> None:  # noqa: F811 - the fixture
    r, here, maintenance = environment(postgres, "shop")
    rows(postgres, here, "kept")
    store = bd.open_store(azure_url)
    m = (await dumps.take(r, "db", store, by="t")).manifest
    data = bytearray(b"".join([c async for c in bd.download(store, m.key)]))
    data[-1] ^= 0xFF  # same size, same magic: only the digest can tell
    driver = azurite.driver()
    driver.upload_object_via_stream(iter([bytes(data)]), driver.get_container(store.bucket),  # type: ignore
                                    f"{store.prefix}/{m.key}")
    with pytest.raises(InvalidInput, match="does not match its manifest") as caught:
        await dumps.restore(r, "db", store, m, m.key, label=m.id)
    assert caught.value.exit_code == 2 and "nothing was changed" in str(caught.value)
    assert maintenance == [] and "pg_restore --clean" not in here.ran
    assert notes(postgres, here) == ["kept"]


async def test_a_dump_broken_off_after_blocks_were_sent_leaves_no_blob(azurite: Azurite, azure_url: str) -> None:
    """Azure keeps a stream's blocks uncommitted until the block list is put: a source that
    fails after two blocks went up leaves no blob, and `backups` lists nothing."""
    store = bd.open_store(azure_url)
    sent = 0

    async def dump() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(3 * BLOCK // (1 << 20)):
            yield os.urandom(1 << 20)
            sent += 1 << 20
        raise RuntimeError("the dump broke off")

    with pytest.raises(RuntimeError, match="broke off"):
        await bd.upload(store, "shop/db/20261206T030000000000Z.pgdump", dump())
    assert sent == 3 * BLOCK
    assert blobs(azurite, azure_url) == [] and await dumps.listing(store, "shop") == []


def test_refused_credentials_are_one_line_and_exit_2(azure_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "d3JvbmcgYnV0IGJhc2U2NA=="  # base64, not the account's key
    monkeypatch.setenv("AZURE_STORAGE_KEY", wrong)
    res = CliRunner().invoke(main, ["backups", "--env", "shop", "--to", azure_url])
    assert res.exit_code == 2, res.output
    first, *rest = res.output.splitlines()
    assert first.endswith(f"backup destination {azure_url} refused the credentials "
                          "(AZURE_STORAGE_ACCOUNT / AZURE_STORAGE_KEY)"), res.output
    assert all(line.startswith("hint:") for line in rest), res.output
    assert wrong not in res.output and KEY not in res.output


async def test_a_backup_with_refused_credentials_dumps_nothing(
        postgres: PgServer, azure_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811 - the fixture
    monkeypatch.setenv("AZURE_STORAGE_KEY", "d3JvbmcgYnV0IGJhc2U2NA==")
    r, here, _ = environment(postgres, "shop")
    with pytest.raises(InvalidInput, match="refused the credentials"):
        await dumps.take(r, "db", bd.open_store(azure_url), by="t")
    assert here.ran == [], "the destination is checked before the dump starts"


@pytest.mark.parametrize(("key", "account_in_endpoint", "says"), [
    ("not a key!", "", "AZURE_STORAGE_KEY is not an account key (base64)"),
    (KEY, "/someoneelse", "the endpoint names an account that is not AZURE_STORAGE_ACCOUNT"),
], ids=["key-not-base64", "endpoint-of-another-account"])
def test_a_key_or_endpoint_account_that_cannot_work_is_refused_before_contact(
        azure_url: str, monkeypatch: pytest.MonkeyPatch, key: str, account_in_endpoint: str, says: str) -> None:
    monkeypatch.setenv("AZURE_STORAGE_KEY", key)
    url = azure_url + account_in_endpoint
    res = CliRunner().invoke(main, ["backups", "--env", "shop", "--to", url])
    assert res.exit_code == 2 and says in res.output.splitlines()[0], res.output
    assert "not a key!" not in res.output


def test_the_endpoint_may_name_the_account_as_a_connection_string_does(azure_url: str) -> None:
    """``BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1`` pasted as it is."""
    store = bd.open_store(azure_url + f"/{ACCOUNT}")
    store.check()
    assert store.keys("shop/") == []


def test_a_missing_container_is_said(azurite: Azurite, azure_url: str) -> None:
    missing = azure_url.replace("azure://c", "azure://nope", 1)
    with pytest.raises(InvalidInput, match="no bucket or container 'nope") as caught:
        bd.open_store(missing).check()
    assert caught.value.exit_code == 2
