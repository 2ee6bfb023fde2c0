"""The `csdeploy` command line: one module per command group; each parses options, calls a
function of `service.py`, and renders its result. Shared options and the one error handler
live in `common.py`.

Plugins add command groups through the ``csdeploy.commands`` entry point group, loaded when
first used: that is how the lab (`cloudstack_deploy.lab.cli`) plugs in without the product
importing it.
"""

from __future__ import annotations

from . import (
    backups,
    build,
    data,
    fleet,
    formats,
    hosts,
    preview,
    provision,
    rollout,
    secrets,
    server,
)
from .common import main

for _command in [*provision.COMMANDS, *rollout.COMMANDS, *fleet.COMMANDS, *build.COMMANDS, *formats.COMMANDS,
                 *preview.COMMANDS, *secrets.COMMANDS, *server.COMMANDS, *data.COMMANDS,
                 *backups.COMMANDS, *hosts.COMMANDS]:
    main.add_command(_command)

__all__ = ["main"]
