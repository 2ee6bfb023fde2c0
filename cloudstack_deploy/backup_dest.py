"""Where logical backups are kept: a local directory, or object storage through
apache-libcloud's storage drivers (imported only when a URL names one).

    (none)                        $CSDEPLOY_HOME/backups (directories 0700, files 0600)
    /some/dir, file:///some/dir   that directory, the same way
    s3://BUCKET/PREFIX            Amazon S3; ?region=eu-west-1
    s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:9000
                                  an S3-compatible server (MinIO, Ceph RGW, Garage, ...)
    gs://BUCKET/PREFIX            Google Cloud Storage (HMAC interoperability keys)
    azure://CONTAINER/PREFIX      Azure Blob Storage
    azure://CONTAINER/PREFIX?endpoint=http://127.0.0.1:10000
                                  an Azure Storage emulator (Azurite) or a custom blob endpoint,
                                  the account in the path (path-style, as Azurite serves it)
    local://CONTAINER/PREFIX?root=/srv/store
                                  libcloud's local driver (a directory per container)

Credentials are never in the URL: they come from the environment (or the blueprint's secrets,
by the same names): AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN), GCS_ACCESS_KEY /
GCS_SECRET, AZURE_STORAGE_ACCOUNT / AZURE_STORAGE_KEY. Values are registered for redaction.

Every object is ``PREFIX/ENV/ACCESSORY/STAMP.EXT`` with its manifest beside it as ``.json``.
The stores are blocking (libcloud is); `upload`/`download` bridge them to async code through
a bounded queue and one worker thread, so a dump is never whole in memory.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import os
import queue
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from .errors import InvalidInput, OperationFailed
from .log import register_secrets
from .state import state_root

CHUNK = 1 << 16
#: The scheme -> (libcloud Provider name, the secret names its key and secret come from).
OBJECT_STORES = {
    "s3": ("S3", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
    "gs": ("GOOGLE_STORAGE", ("GCS_ACCESS_KEY", "GCS_SECRET")),
    "azure": ("AZURE_BLOBS", ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY")),
    "local": ("LOCAL", ()),
}
SCHEMES = ("file", *OBJECT_STORES)
#: Each scheme's options (``?NAME=``); ``endpoint`` names the server (S3-compatible ones, Azurite).
OPTIONS: dict[str, tuple[str, ...]] = {"s3": ("endpoint", "region"), "azure": ("endpoint",), "gs": (),
                                       "local": ("root",)}


class Store(Protocol):
    url: str

    def check(self) -> None: ...
    def put(self, key: str, chunks: Iterator[bytes]) -> None: ...
    def get(self, key: str) -> Iterator[bytes]: ...
    def keys(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...


@dataclass
class LocalDir:
    """A directory on this machine: written to a hidden partial file, renamed when complete."""

    root: Path
    url: str

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InvalidInput(f"backup destination {self.url}: cannot make the directory: {exc.strerror}",
                               hint="pass --to a directory you can write, or an object storage URL") from None
        if not os.access(self.root, os.W_OK):
            raise InvalidInput(f"backup destination {self.url}: not writable",
                               hint="pass --to a directory you can write") from None

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise InvalidInput(f"{key!r} is not a backup of {self.url}")
        return path

    def put(self, key: str, chunks: Iterator[bytes]) -> None:
        path = self._path(key)
        for parent in reversed(path.relative_to(self.root.resolve()).parents):
            (self.root / parent).mkdir(exist_ok=True, mode=0o700)
        partial = path.with_name(f".{path.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def get(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise InvalidInput(f"no backup {key} in {self.url}", hint="list them with `csdeploy backups`") from None
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


@dataclass
class ObjectStore:
    """A bucket (container) of a libcloud storage driver, objects under ``prefix``."""

    driver: Any
    bucket: str
    prefix: str
    url: str

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _container(self) -> Any:
        from libcloud.common.types import InvalidCredsError
        from libcloud.storage.types import ContainerDoesNotExistError

        try:
            return self.driver.get_container(self.bucket)
        except ContainerDoesNotExistError:
            raise InvalidInput(f"backup destination {self.url}: no bucket or container {self.bucket!r}",
                               hint="create it first; csdeploy does not create buckets") from None
        except InvalidCredsError:
            names = OBJECT_STORES.get(urlsplit(self.url).scheme.lower(), ("", ()))[1]
            raise InvalidInput(f"backup destination {self.url} refused the credentials"
                               + (f" ({' / '.join(names)})" if names else ""),
                               hint="check the account or key id and its secret, and that they may use "
                                    f"{self.bucket!r}") from None
        except InvalidInput:
            raise
        except Exception as exc:  # libcloud raises many kinds for an endpoint it cannot reach
            raise InvalidInput(f"backup destination {self.url} is unreachable or refused: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
                               hint="check the URL, its endpoint and the credentials in the environment") from None

    def check(self) -> None:
        self._container()

    def put(self, key: str, chunks: Iterator[bytes]) -> None:
        container = self._container()
        try:
            self.driver.upload_object_via_stream(iterator=chunks, container=container, object_name=self._key(key))
        except BaseException:
            with contextlib.suppress(Exception):  # some drivers (local) keep what came before the error
                self.delete(key)
            raise

    def get(self, key: str) -> Iterator[bytes]:
        from libcloud.storage.types import ObjectDoesNotExistError

        try:
            obj = self.driver.get_object(self.bucket, self._key(key))
        except ObjectDoesNotExistError:
            raise InvalidInput(f"no backup {key} in {self.url}", hint="list them with `csdeploy backups`") from None
        for chunk in self.driver.download_object_as_stream(obj, chunk_size=CHUNK):
            yield bytes(chunk)

    def keys(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        with warnings.catch_warnings():  # drivers without a server-side filter say so on each call
            warnings.simplefilter("ignore", UserWarning)
            objects = list(self.driver.iterate_container_objects(self._container(), prefix=full))
        return sorted(o.name[cut:] for o in objects if o.name.startswith(full))

    def delete(self, key: str) -> None:
        from libcloud.storage.types import ObjectDoesNotExistError

        try:
            self.driver.delete_object(self.driver.get_object(self.bucket, self._key(key)))
        except ObjectDoesNotExistError:
            pass


def _secret(lookup: Callable[[str], str | None], name: str, url: str) -> str:
    value = lookup(name) or os.environ.get(name)
    if not value:
        raise InvalidInput(f"backup destination {url}: the secret {name} is not set",
                           hint=f"export {name} (or put it in the blueprint's secrets); credentials never go in the URL")
    register_secrets([value])
    return value


@dataclass(frozen=True)
class Destination:
    """A destination URL, parsed (nothing contacted, no credentials read)."""

    scheme: str           # "dir" for a directory on this machine
    text: str
    path: str = ""        # dir
    bucket: str = ""
    prefix: str = ""
    query: tuple[tuple[str, str], ...] = ()

    @property
    def on_this_machine(self) -> bool:
        """Only the machine running csdeploy can write there (a directory, libcloud's local driver)."""
        return self.scheme in ("dir", "local")


def parse_url(url: str) -> Destination:
    """Parse a destination; InvalidInput naming it (never its credentials) if it cannot be used."""
    text = url.strip()
    if not text:
        raise InvalidInput("backup destination is empty", hint="pass --to a directory or " + ", ".join(
            f"{s}://" for s in OBJECT_STORES))
    if "://" not in text:
        return Destination("dir", text, path=text)
    try:
        parts = urlsplit(text)
        query = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=bool(parts.query)).items()}
    except ValueError as exc:
        raise InvalidInput(f"backup destination {text!r} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidInput(f"backup destination {text!r}: unknown scheme {scheme!r}",
                           hint="known: a directory, " + ", ".join(f"{s}://" for s in SCHEMES))
    if parts.username or parts.password:
        raise InvalidInput(f"backup destination {parts.scheme}://{parts.hostname}...: credentials in the URL",
                           hint="credentials come from the environment or the blueprint's secrets, never argv")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(f"backup destination {text!r}: a file:// URL names a local path (file:///dir)")
        return Destination("dir", text, path=parts.path)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket:
        raise InvalidInput(f"backup destination {text!r} names no bucket or container",
                           hint=f"{scheme}://BUCKET/PREFIX")
    if "endpoint" in query and "endpoint" not in OPTIONS[scheme]:
        raise InvalidInput(f"backup destination {text}: {scheme}:// takes no endpoint",
                           hint="endpoint is an option of " + ", ".join(
                               f"{s}://" for s, known in OPTIONS.items() if "endpoint" in known))
    unknown = set(query) - set(OPTIONS[scheme])
    if unknown:
        raise InvalidInput(f"backup destination {text!r}: unknown option(s) {', '.join(sorted(unknown))}",
                           hint=f"{scheme}:// takes " + (", ".join(OPTIONS[scheme]) or "none"))
    endpoint = query.get("endpoint")
    if endpoint is not None:
        try:
            ep = urlsplit(endpoint)
            ep.port  # noqa: B018 - raises for a port that is not a number or out of range
        except ValueError:
            ep = urlsplit("")
        if ep.scheme not in ("http", "https") or not ep.hostname or ep.query or ep.fragment:
            raise InvalidInput(f"backup destination {text}: endpoint {endpoint!r} is not an http(s) URL",
                               hint=f"{scheme}://BUCKET/PREFIX?endpoint=http://host:port")
        if ep.path.strip("/") and (scheme != "azure" or "/" in ep.path.strip("/")):
            raise InvalidInput(f"backup destination {text}: endpoint {endpoint!r} has a path",
                               hint="give the server only (http://host:port)"
                               + ("; an Azure endpoint may end in /ACCOUNT" if scheme == "azure" else ""))
    if scheme == "local" and not query.get("root"):
        raise InvalidInput(f"backup destination {text}: libcloud's local driver needs ?root=/a/directory")
    return Destination(scheme, text, bucket=bucket, prefix=prefix, query=tuple(sorted(query.items())))


def open_store(url: str | None, *, lookup: Callable[[str], str | None] = lambda _: None) -> Store:
    """The store ``url`` names (None: ``$CSDEPLOY_HOME/backups``). InvalidInput, naming the URL,
    for one that cannot be parsed, an unknown scheme or missing credentials; nothing is
    contacted here (`Store.check` does that)."""
    if url is None:
        root = state_root() / "backups"
        return LocalDir(root, str(root))
    dest = parse_url(url)
    if dest.scheme == "dir":
        return LocalDir(Path(dest.path).expanduser().absolute(), dest.text)
    return ObjectStore(_driver(dest.scheme, dict(dest.query), dest.text, lookup), dest.bucket, dest.prefix,
                       dest.text)


def _driver(scheme: str, query: dict[str, str], url: str, lookup: Callable[[str], str | None]) -> Any:
    try:
        from libcloud.storage.providers import get_driver
        from libcloud.storage.types import Provider
    except ImportError:
        raise InvalidInput(f"backup destination {url}: object storage needs apache-libcloud",
                           hint="pip install 'cloudstack-deploy[backups]'") from None
    provider, names = OBJECT_STORES[scheme]
    if scheme == "local":
        root = query["root"]
        Path(root).mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return get_driver(getattr(Provider, provider))(root)
        except ImportError as exc:
            raise InvalidInput(f"backup destination {url}: {exc}") from None
    key, secret = (_secret(lookup, n, url) for n in names)
    kwargs: dict[str, Any] = {}
    if scheme == "s3":
        endpoint = query.get("endpoint")
        if endpoint:  # any S3-compatible server, signature v4, path-style
            ep = urlsplit(endpoint)
            secure = ep.scheme == "https"
            return get_driver(Provider.MINIO)(key, secret, secure=secure, host=ep.hostname,
                                              port=ep.port or (443 if secure else 80))
        token = lookup("AWS_SESSION_TOKEN") or os.environ.get("AWS_SESSION_TOKEN")
        if token:
            register_secrets([token])
            kwargs["token"] = token
        kwargs["region"] = query.get("region", "us-east-1")
    if scheme == "azure":
        kwargs = _azure_kwargs(key, secret, query.get("endpoint"), url)
    if scheme == "gs":
        return _hmac_gcs(key, secret)
    return get_driver(getattr(Provider, provider))(key, secret, **kwargs)


def _hmac_gcs(key: str, secret: str) -> Any:
    """libcloud's GCS driver with HMAC keys whatever the key id looks like. Left to guess from
    its shape, libcloud takes a key id that does not start with GOOG for an OAuth client: it
    asks GCE's metadata server (169.254.169.254), then starts an installed application's
    interactive sign-in. Both of its connections are told (the driver does not pass
    ``auth_type`` on to the XML one)."""
    from libcloud.common.google import GoogleAuthType
    from libcloud.storage.drivers.google_storage import GoogleStorageDriver

    class HmacGoogleStorage(GoogleStorageDriver):  # type: ignore[misc]
        def _ex_connection_class_kwargs(self) -> dict[str, Any]:
            return {**super()._ex_connection_class_kwargs(), "auth_type": GoogleAuthType.GCS_S3}

    return HmacGoogleStorage(key, secret, auth_type=GoogleAuthType.GCS_S3)


def _azure_kwargs(account: str, key: str, endpoint: str | None, url: str) -> dict[str, Any]:
    """The driver's host, port and scheme for ``endpoint`` (none: the account's own
    ``ACCOUNT.blob.core.windows.net``). With a host of its own libcloud addresses the account
    in the path, as Azurite and Azure IoT Edge serve it; an endpoint copied from a connection
    string (``http://127.0.0.1:10000/devstoreaccount1``) names the account too, and it must be
    the one the credentials are for."""
    try:  # the account key, as the portal and connection strings give it
        binascii.a2b_base64(key.encode("ascii"), strict_mode=True)
    except (ValueError, UnicodeEncodeError):
        raise InvalidInput(f"backup destination {url}: AZURE_STORAGE_KEY is not an account key (base64)",
                           hint="copy the storage account's key1 or key2 as it is shown") from None
    if not endpoint:
        return {}
    ep = urlsplit(endpoint)
    named = ep.path.strip("/")
    if named and named != account:
        raise InvalidInput(f"backup destination {url}: the endpoint names an account that is not "
                           "AZURE_STORAGE_ACCOUNT",
                           hint="drop the account from the endpoint, or set AZURE_STORAGE_ACCOUNT to it")
    secure = ep.scheme == "https"
    return {"host": ep.hostname, "port": ep.port or (443 if secure else 80), "secure": secure}


# ---- async bridges ---------------------------------------------------------------------------------

_END = object()


class _Aborted(Exception):
    pass


async def upload(store: Store, key: str, chunks: AsyncIterator[bytes]) -> tuple[int, str]:
    """Write ``chunks`` to ``key`` as they come (bounded buffering); (size, sha256 hex). If
    ``chunks`` fails, the object is not completed and the error is raised."""
    q: queue.Queue[Any] = queue.Queue(maxsize=8)

    def produce() -> Iterator[bytes]:
        while (item := q.get()) is not _END:
            if isinstance(item, _Aborted):
                raise item
            yield item

    done = asyncio.get_running_loop().run_in_executor(None, store.put, key, produce())
    digest, size = sha256(), 0

    async def send(item: Any) -> None:
        while True:
            if done.done():
                await done  # the store failed: its error
                raise OperationFailed(f"backup destination {store.url} stopped reading {key}")
            try:
                q.put_nowait(item)
                return
            except queue.Full:
                await asyncio.wait({done}, timeout=0.05)  # wakes at once if the store fails

    try:
        async for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            await send(chunk)
    except BaseException as exc:
        if not done.done():
            with contextlib.suppress(Exception):
                await send(_Aborted(str(exc)))
        with contextlib.suppress(Exception):
            await done
        raise
    await send(_END)
    await done
    return size, digest.hexdigest()


async def download(store: Store, key: str) -> AsyncIterator[bytes]:
    """``key``'s bytes as they arrive from the store (bounded buffering)."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[Any] = asyncio.Queue(maxsize=8)
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in store.get(key):
                if stop.is_set():
                    return
                asyncio.run_coroutine_threadsafe(q.put(chunk), loop).result()
            asyncio.run_coroutine_threadsafe(q.put(_END), loop).result()
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            if not stop.is_set():
                asyncio.run_coroutine_threadsafe(q.put(exc), loop).result()

    worker = loop.run_in_executor(None, pump)
    try:
        while (item := await q.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not q.empty():  # let a blocked put finish so the thread ends
            q.get_nowait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(worker), 5)


async def read_small(store: Store, key: str) -> bytes:
    return b"".join([c async for c in download(store, key)])


async def write_small(store: Store, key: str, data: bytes) -> None:
    async def one() -> AsyncIterator[bytes]:
        yield data

    await upload(store, key, one())
