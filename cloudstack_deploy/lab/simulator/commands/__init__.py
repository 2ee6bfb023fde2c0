"""Every command the simulator serves; importing this package registers them all."""

from . import account, catalog_cmds, compute, jobs, networking, rules, storage  # noqa: F401
