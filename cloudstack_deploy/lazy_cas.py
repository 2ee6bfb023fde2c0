"""aiohttp without the certificate store it reads on import: the system's CAs are loaded when a
TLS connection first needs them.

aiohttp (3.10 and later) builds two TLS contexts when ``aiohttp.connector`` is imported, and each
reads the system's CA bundle (``set_default_verify_paths``): about 0.05 s of CPU here, a sixth of
what a command spends before its first API call, paid by every process that imports aiohttp,
even when it only talks plain HTTP (the lab, a simulator) or brings its own context (``verify =
PATH``). The finder installed here (by ``cloudstack_deploy/__init__.py``, before anything of
ours imports aiohttp) runs that one module's body with the CA loading noted instead of done;
the contexts it made then load the very same default paths, with the environment
(``SSL_CERT_FILE``, ``SSL_CERT_DIR``) as it is at that moment, the first time one of them wraps
a connection or is asked for its CAs. Verification is never weakened: until then such a
context trusts no CA at all, and nothing can use it without loading them first.

If aiohttp was imported before csdeploy, or makes its contexts lazily itself (3.9), nothing
here runs. The loading then happens inside the event loop, once (a few tens of milliseconds).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl
    from importlib.machinery import ModuleSpec
    from types import ModuleType

#: the module whose body makes the contexts
TARGET = "aiohttp.connector"
#: the attribute a retyped context keeps its deferred purpose in until it loads
PENDING = "_csdeploy_pending_cas"


def _on_first_use_class() -> type[ssl.SSLContext]:
    """``ssl.SSLContext`` whose default CAs (what ``load_default_certs`` would have loaded) are
    loaded when it is first used. Made on demand: ``import cloudstack_deploy`` imports no ssl."""
    global _ON_FIRST_USE
    if _ON_FIRST_USE is not None:
        return _ON_FIRST_USE
    import ssl
    import threading

    lock = threading.Lock()

    class CAsOnFirstUse(ssl.SSLContext):
        """Contexts aiohttp made, retyped (``__class__``): they stay the objects aiohttp holds."""

        def _load_pending(self) -> None:
            if PENDING not in self.__dict__:
                return
            with lock:
                purpose = self.__dict__.pop(PENDING, None)
                if purpose is not None:
                    ssl.SSLContext.load_default_certs(self, purpose)

        def wrap_bio(self, *args: Any, **kwargs: Any) -> Any:
            self._load_pending()
            return super().wrap_bio(*args, **kwargs)

        def wrap_socket(self, *args: Any, **kwargs: Any) -> Any:
            self._load_pending()
            return super().wrap_socket(*args, **kwargs)

        def get_ca_certs(self, binary_form: bool = False) -> Any:
            self._load_pending()
            return super().get_ca_certs(binary_form)

        def cert_store_stats(self) -> Any:
            self._load_pending()
            return super().cert_store_stats()

    _ON_FIRST_USE = CAsOnFirstUse
    return CAsOnFirstUse


_ON_FIRST_USE: type[ssl.SSLContext] | None = None


@contextmanager
def deferred_default_cas() -> Iterator[None]:
    """While this runs, ``load_default_certs`` and ``set_default_verify_paths`` on a plain
    ``ssl.SSLContext`` only note the context; afterwards each noted context loads them on first
    use (a context of another class, which cannot be retyped, loads them at once)."""
    import ssl

    noted: list[tuple[ssl.SSLContext, Any]] = []
    cls = ssl.SSLContext
    load_default_certs, set_default_verify_paths = cls.load_default_certs, cls.set_default_verify_paths

    def note_load(self: ssl.SSLContext, purpose: Any = ssl.Purpose.SERVER_AUTH) -> None:
        noted.append((self, purpose))

    def note_paths(self: ssl.SSLContext) -> None:
        # off Windows, load_default_certs(SERVER_AUTH) is set_default_verify_paths: one replays the other
        noted.append((self, ssl.Purpose.SERVER_AUTH))

    cls.load_default_certs = note_load  # type: ignore[method-assign]
    cls.set_default_verify_paths = note_paths  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.load_default_certs = load_default_certs  # type: ignore[method-assign]
        cls.set_default_verify_paths = set_default_verify_paths  # type: ignore[method-assign]
        for context, purpose in noted:
            if type(context) is ssl.SSLContext:
                context.__class__ = _on_first_use_class()
                context.__dict__[PENDING] = purpose
            else:
                context.load_default_certs(purpose)


class _Finder:
    """A one-shot meta path finder: finds ``aiohttp.connector`` as the other finders do and runs
    its body inside ``deferred_default_cas``."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != TARGET:
            return None
        uninstall()
        import importlib.util

        spec = importlib.util.find_spec(name)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_deferred(module: ModuleType) -> None:
            with deferred_default_cas():
                exec_module(module)

        loader.exec_module = exec_deferred  # type: ignore[method-assign]
        return spec


_FINDER = _Finder()


def install() -> None:
    """Defer the CA loading of aiohttp's import-time contexts (once; not if aiohttp is loaded)."""
    if TARGET not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
