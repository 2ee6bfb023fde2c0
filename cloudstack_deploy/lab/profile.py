"""The lab's secret values and where the product finds them: ``secrets_file`` in its profile.

Product code never imports the lab. The lab writes its secret values (registry password, a
PostgreSQL password) to ``$CSDEPLOY_HOME/lab/secrets.env`` (0600) and names that file in the
cloud profile it writes (``$CSDEPLOY_HOME/lab/cloudstack.ini``), as ``secrets_file``: the
product reads secret values from there after the environment, as from any profile.
"""

from __future__ import annotations

import configparser
import io
from pathlib import Path

from .ca import lab_dir, write_private


def secrets_path() -> Path:
    """``$CSDEPLOY_HOME/lab/secrets.env``: the lab's secret values, 0600."""
    return lab_dir() / "secrets.env"


def read_secrets(path: Path | None = None) -> dict[str, str]:
    """NAME=value lines of the lab's secrets file ({} when there is none)."""
    try:
        lines = (path or secrets_path()).read_text().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def add_secrets_file(profile: Path) -> bool:
    """Name the lab's secrets file in every section of ``profile`` when that file exists.

    Rewrites the profile atomically, 0600 (it holds the API secret); returns whether it
    changed. A profile without sections, or no secrets file yet, is left alone.
    """
    secrets = secrets_path()
    if not secrets.is_file() or not profile.is_file():
        return False
    parser = configparser.ConfigParser()
    parser.read(profile)
    value = str(secrets.resolve())
    sections = [s for s in parser.sections() if parser[s].get("secrets_file") != value]
    if not sections:
        return False
    for section in sections:
        parser[section]["secrets_file"] = value
    text = io.StringIO()
    parser.write(text)
    write_private(profile, text.getvalue().encode())
    return True
