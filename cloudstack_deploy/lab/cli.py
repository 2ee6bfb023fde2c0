"""`csdeploy lab up | status | down | simulator`: the lab's commands, a plugin of the CLI.

Registered through the ``csdeploy.commands`` entry point (pyproject.toml): the product's CLI
finds it by name and never imports the lab itself.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..cli.common import progress_for, run
from ..errors import InvalidInput, OperationFailed


@click.group()
def lab() -> None:
    """The local lab: a CloudStack simulator (and real hosts) on this machine."""


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
    from .manage import lab_up as up

    with progress_for(progress_mode) as progress:
        st = run(up(port=port, registry_port=registry_port, progress=progress, force_build=rebuild))
    click.echo(f"lab is up: CloudStack API {st.endpoint} (pid {st.pid}), registry {st.registry}")
    click.echo("csdeploy now targets the lab by default (unless CLOUDSTACK_* or a cloudstack.ini says otherwise)")


@lab.command("status")
@click.option("--port", default=None, type=int, help="[default: this lab's]")
@click.option("--json", "as_json", is_flag=True)
def lab_status(port: int | None, as_json: bool) -> None:
    """Is the lab running: simulator, registry, images, VMs."""
    from .manage import lab_status as status

    st: Any = run(status(port=port))
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
    from .manage import lab_down as down

    with progress_for("plain") as progress:
        removed = run(down(purge=purge, progress=progress))
    click.echo("lab is down: " + ", ".join(f"{n} {k}" for k, n in removed.items()))


@lab.command("cert")
@click.argument("host")
@click.option("--ip", "ips", multiple=True, help="Also valid for this IP address (repeatable).")
@click.option("--cert-secret", default="TLS_CERTIFICATE", show_default=True,
              help="Secret name the certificate (PEM) is stored under.")
@click.option("--key-secret", default="TLS_PRIVATE_KEY", show_default=True,
              help="Secret name the private key (PEM) is stored under.")
def lab_cert(host: str, ips: tuple[str, ...], cert_secret: str, key_secret: str) -> None:
    """Issue a certificate for HOST from the lab CA; it and its key go into the lab's secrets."""
    from .profile import issue_certificate, secrets_path

    issued = issue_certificate(host, ips=ips, cert_secret=cert_secret, key_secret=key_secret)
    click.echo(f"certificate for {issued.host}: {issued.cert} (key {issued.key}, 0600), signed by the lab CA "
               f"{issued.ca}")
    click.echo(f"secrets {issued.cert_secret} and {issued.key_secret} are in {secrets_path()}; a blueprint uses them "
               f"with proxy: {{host: {issued.host}, ssl: {{certificate_pem: {issued.cert_secret}, "
               f"private_key_pem: {issued.key_secret}}}}} (and lists them under secrets)")
    click.echo(f"check: curl --cacert {issued.ca} --resolve {issued.host}:443:PUBLIC_IP https://{issued.host}/")


@lab.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--backend", type=click.Choice(["memory", "docker"]), default="memory", show_default=True,
              help="memory: records only; docker: every VM is a real host (a systemd container).")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), help="Persist the cloud to this JSON file.")
@click.option("--api-key", default="lab-api-key", show_default=True)
@click.option("--secret-key", default="lab-secret-key", show_default=True)
@click.option("--vm-boot-seconds", default=1.0, show_default=True, type=float, help="Time a VM spends Starting.")
@click.option("--job-seconds", default=0.2, show_default=True, type=float, help="Time an async job stays pending (a tenth of it for tag and affinity-group jobs: database-only in CloudStack).")
@click.option("--fault", "faults", multiple=True, metavar="COMMAND:KIND:CODE:TIMES",
              help="Inject a fault, KIND one of http, job, drop, slow; TIMES a count or 'always' (repeatable).")
@click.option("--limit", "limits", multiple=True, metavar="TYPE=MAX",
              help="Account resource limit, e.g. user_vm=10 (repeatable; -1 is unlimited).")
@click.option("--public-range", default=None, help="Loopback CIDR for public IPs (default 127.200.0.0/16).")
@click.option("--no-ssh", is_flag=True, help="Do not serve SSH on public addresses.")
@click.option("--write-profile", is_flag=True,
              help="Make this simulator csdeploy's default cloud (when no CLOUDSTACK_* config is set).")
def lab_simulator(write_profile: bool, **kwargs: object) -> None:
    """Serve a CloudStack API simulator until interrupted."""
    from .simulator.faults import FaultSpecError
    from .simulator.server import SimulatorConfig, serve_forever

    try:
        config = SimulatorConfig.from_cli(**kwargs)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="'--fault'") from None
    except ValueError as exc:  # only --limit values raise this
        raise click.BadParameter(str(exc), param_hint="'--limit'") from None
    try:
        serve_forever(config, write_profile=write_profile)
    except KeyboardInterrupt:  # only before the signal handlers are in place; after, it stops cleanly (0)
        sys.exit(130)
    except ValueError as exc:  # e.g. an unreadable --state file
        raise InvalidInput(f"cannot start the simulator: {exc}") from None
    except OSError as exc:
        raise OperationFailed(f"cannot start the simulator: {exc}") from None
