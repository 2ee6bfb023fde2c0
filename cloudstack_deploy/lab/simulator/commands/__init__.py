"""Every command the simulator serves; importing this package registers them all."""

from . import account, catalog_cmds, compute, jobs, loadbalancer, networking, rules, storage, vm_ops  # noqa: F401
