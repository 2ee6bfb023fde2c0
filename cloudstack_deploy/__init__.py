"""csdeploy: stand up application environments on Apache CloudStack and deploy to them.

The Python API, without the command line::

    import asyncio
    from cloudstack_deploy import load_blueprint, service

    bp = load_blueprint("blueprints/demo.yml")
    outcome = asyncio.run(service.create_env(bp, "demo", version="v1"))
    print(outcome.inventory.app_url)

Errors are the classes of `cloudstack_deploy.errors` (each with its exit code and hint).
Names are imported on first use, so `import cloudstack_deploy` stays cheap.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from . import lazy_cas

__version__ = "0.1.0"

# asyncssh (2.x) still names DSA in its type hints, which cryptography (>= 44) warns about on
# import: ten lines before every command's output that the user can do nothing about. Only
# that warning, only from asyncssh's modules, is silenced.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")

# aiohttp's import reads the system's CA bundle twice (0.05 s of every command): deferred to the
# first TLS connection (see lazy_cas.py).
lazy_cas.install()

_LAZY = {
    "service": "cloudstack_deploy.service",
    "errors": "cloudstack_deploy.errors",
    "load_blueprint": "cloudstack_deploy.blueprint",
    "Blueprint": "cloudstack_deploy.blueprint",
    "Inventory": "cloudstack_deploy.inventory",
    "CsdeployError": "cloudstack_deploy.errors",
    "InvalidInput": "cloudstack_deploy.errors",
    "OperationFailed": "cloudstack_deploy.errors",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cloudstack_deploy' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if module.__name__.endswith("." + name) else getattr(module, name)


__all__ = ["Blueprint", "CsdeployError", "InvalidInput", "Inventory", "OperationFailed", "errors", "load_blueprint",
           "service"]
