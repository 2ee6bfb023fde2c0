"""`csdeploy lab up | status | down`."""

from __future__ import annotations

import json
from typing import Any

import click

from .cli import _run, lab


@lab.command("up")
@click.option("--port", default=None, type=int,
              help="Port of the simulator's API [default: this lab's, 8080 for ~/.csdeploy].")
@click.option("--registry-port", default=None, type=int,
              help="Port of the lab registry on 127.0.0.1 [default: this lab's, 5000 for ~/.csdeploy].")
@click.option("--rebuild", is_flag=True, help="Rebuild templates and images even if cached.")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "tty", "plain", "json"]), default="auto",
              show_default=True)
def lab_up(port: int | None, registry_port: int | None, rebuild: bool, progress_mode: str) -> None:
    """Start the lab (Docker-backed simulator, registry, images); a second run changes nothing."""
    from .lab.manage import lab_up as up
    from .progress import make_progress

    progress = make_progress(progress_mode)

    async def go() -> Any:
        return await up(port=port, registry_port=registry_port, progress=progress, force_build=rebuild)

    try:
        st = _run(go)
    finally:
        progress.close()
    click.echo(f"lab is up: CloudStack API {st.endpoint} (pid {st.pid}), registry {st.registry}")
    click.echo("csdeploy now targets the lab by default (unless CLOUDSTACK_* or a cloudstack.ini says otherwise)")


@lab.command("status")
@click.option("--port", default=None, type=int, help="[default: this lab's]")
@click.option("--json", "as_json", is_flag=True)
def lab_status(port: int | None, as_json: bool) -> None:
    """Is the lab running: simulator, registry, images, VMs."""
    from .lab.manage import lab_status as status

    async def go() -> Any:
        return await status(port=port)

    st = _run(go)
    if as_json:
        click.echo(json.dumps(st.__dict__, indent=2))
        return
    click.echo(f"simulator: {st.simulator}" + (f" ({st.endpoint}, pid {st.pid})" if st.pid else ""))
    click.echo(f"registry:  {st.registry}")
    missing = [name for name, ok in st.images.items() if not ok]
    click.echo(f"images:    {len(st.images) - len(missing)}/{len(st.images)} built"
               + (f" (missing: {', '.join(missing)})" if missing else ""))
    click.echo(f"VMs:       {st.vms} running")


@lab.command("down")
@click.option("--purge", is_flag=True, help="Also delete the lab's images, registry data and simulator state.")
def lab_down(purge: bool) -> None:
    """Stop the lab: simulator, VMs, networks, forwarders, registry (images kept unless --purge)."""
    from .lab.manage import lab_down as down
    from .progress import make_progress

    progress = make_progress("plain")

    async def go() -> Any:
        return await down(purge=purge, progress=progress)

    try:
        removed = _run(go)
    finally:
        progress.close()
    click.echo("lab is down: " + ", ".join(f"{n} {k}" for k, n in removed.items()))
