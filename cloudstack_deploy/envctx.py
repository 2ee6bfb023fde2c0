"""Everything a day-2 command needs about an environment: blueprint, inventory, secrets, keys.

`create-env` and `deploy` remember which blueprint (path and --set overrides) the
environment was deployed from, in its state dir, so `rollback`, `status`, `logs` and `exec`
take just `--env`. The inventory is a cache: when it is missing it is rebuilt from the cloud.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .blueprint import Blueprint, load_blueprint
from .errors import InvalidInput
from .inventory import Inventory
from .state import EnvState, write_private_file

RECORD = "blueprint.json"


@dataclass
class EnvContext:
    env: str
    state: EnvState
    bp: Blueprint
    inventory: Inventory


def remember_blueprint(state: EnvState, path: str, overrides: tuple[str, ...]) -> None:
    state.ensure_dir()
    data = {"path": str(Path(path).resolve()), "overrides": list(overrides)}
    # 0600 like every file there: --set overrides may carry values the user keeps private.
    write_private_file(state.dir / RECORD, json.dumps(data, indent=2) + "\n")


def recall_blueprint(state: EnvState, path: str | None, overrides: tuple[str, ...]) -> Blueprint:
    if path is not None:
        return load_blueprint(path, overrides=list(overrides))
    try:
        data = json.loads((state.dir / RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise InvalidInput(f"csdeploy does not know which blueprint environment '{state.env}' uses "
                            f"(no {state.dir / RECORD})",
                            hint="pass --blueprint FILE (and the same --set overrides as when deploying)") from None
    return load_blueprint(data["path"], overrides=[*data.get("overrides", []), *overrides])


async def load_context(env: str, blueprint: str | None = None, overrides: tuple[str, ...] = ()) -> EnvContext:
    state = EnvState(env)
    bp = recall_blueprint(state, blueprint, overrides)
    inventory = state.read_inventory()
    if inventory is None or not state.known_hosts_path.exists():
        from .cloud import Cloud, read_cloud_config
        from .provision.run import refresh_inventory

        async with Cloud(read_cloud_config()) as cloud:
            inventory = await refresh_inventory(cloud, bp, env, state)
    return EnvContext(env=env, state=state, bp=bp, inventory=inventory)
