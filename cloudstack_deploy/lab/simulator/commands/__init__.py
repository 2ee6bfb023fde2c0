"""Every command the simulator serves; importing this package registers them all."""

from . import (  # noqa: F401
    account,
    affinity,
    catalog_cmds,
    compute,
    jobs,
    loadbalancer,
    networking,
    rules,
    snapshots,
    storage,
    vm_ops,
)
