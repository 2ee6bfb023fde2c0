"""Preview environments: one environment per pull request, created or updated by every push
(`csdeploy preview up`) and removed when the pull request closes (`csdeploy preview down`).

A preview is an ordinary environment with a TTL (three days unless told): each `up`
converges it (no new VMs when nothing changed), rolls out the new version and moves the
expiry on, so a pull request that is never closed is torn down by `csdeploy reap`. This
module holds the pure parts: the name, the URL and what CI gets (`$GITHUB_OUTPUT`,
`$GITHUB_STEP_SUMMARY`, a dotenv file for GitLab); `service.preview_up`/`preview_down` act.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidInput
from .state import validate_env_name

if TYPE_CHECKING:
    from .blueprint import Blueprint
    from .dns import DnsResult
    from .inventory import Inventory

DEFAULT_TTL = timedelta(days=3)
_PR_RE = re.compile(r"[1-9][0-9]{0,8}")


def preview_name(name: str | None, pr: str | None, prefix: str = "pr") -> str:
    """The environment's name: ``name`` as given, or ``<prefix>-<pr>`` for pull request ``pr``.
    Exactly one of the two; either way a valid environment name (InvalidInput, exit 2)."""
    if (name is None) == (pr is None):
        raise InvalidInput("give the preview's name (--name pr-123) or its pull request (--pr 123), one of them")
    if pr is not None:
        pr = pr.strip()
        if not _PR_RE.fullmatch(pr):
            raise InvalidInput(f"--pr {pr!r}: a pull request number is a positive whole number",
                               hint="in GitHub Actions: --pr \"${{ github.event.pull_request.number }}\"")
        name = f"{prefix}-{pr}"
    assert name is not None
    return validate_env_name(name)


def preview_url(bp: Blueprint, inventory: Inventory, dns: DnsResult | None) -> str | None:
    """Where the preview answers: the first proxy role's DNS name when the blueprint has
    `dns:`, else its entry point's address (https when the role's proxy has ssl)."""
    role = next((r for r in bp.roles.values() if r.proxy is not None), None)
    if role is None:
        return inventory.app_url
    scheme = "https" if role.proxy is not None and role.proxy.ssl else "http"
    if dns is not None:
        rec = next((r for r in dns.records if r.role == role.name), None)
        if rec is not None:
            return f"{scheme}://{rec.name}/"
    address = inventory.entrypoint(role.name)
    return f"{scheme}://{address}/" if address else None


@dataclass
class PreviewResult:
    env: str
    url: str | None
    version: str | None
    created: bool                    # the first `up` of this preview (VMs made), else a redeploy
    expires: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "url": self.url, "version": self.version, "created": self.created,
                "expires": self.expires, **self.details}


@dataclass
class PreviewDown:
    env: str
    deleted: list[str]
    dns_removed: list[str]

    @property
    def existed(self) -> bool:
        return bool(self.deleted or self.dns_removed)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "deleted": self.deleted, "dns_removed": self.dns_removed,
                "existed": self.existed}


def ci_files(github: bool, dotenv: str | None, environ: dict[str, str] | None = None) -> dict[str, Path]:
    """Where the results go for CI, checked before anything is created: GitHub's
    ``$GITHUB_OUTPUT`` and ``$GITHUB_STEP_SUMMARY`` (``--github-output``), a dotenv file."""
    env = os.environ if environ is None else environ
    out: dict[str, Path] = {}
    if github:
        for var in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
            if not env.get(var):
                raise InvalidInput(f"--github-output: {var} is not set (not a GitHub Actions step?)",
                                   hint="drop --github-output outside GitHub Actions")
            out[var] = Path(env[var])
    if dotenv is not None:
        out["dotenv"] = Path(dotenv)
    for what, path in out.items():
        parent = path.absolute().parent
        if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise InvalidInput(f"{what}: cannot write {path}", hint="give a writable file path")
    return out


def _one_line(value: str | None) -> str:
    """A value for a ``key=value`` line: a newline would let it write other outputs."""
    return (value or "").replace("\r", " ").replace("\n", " ")


def write_ci_files(files: dict[str, Path], *, env: str, url: str | None, up: bool, version: str | None = None,
                   created: bool = False, expires: str | None = None, removed: int = 0) -> None:
    """Append ``url=``/``env=`` to ``$GITHUB_OUTPUT``, a Markdown summary to
    ``$GITHUB_STEP_SUMMARY`` and ``PREVIEW_URL=``/``PREVIEW_ENV=`` to the dotenv file."""
    if "GITHUB_OUTPUT" in files:
        with files["GITHUB_OUTPUT"].open("a", encoding="utf-8") as f:
            f.write(f"url={_one_line(url)}\nenv={_one_line(env)}\n")
    if "GITHUB_STEP_SUMMARY" in files:
        with files["GITHUB_STEP_SUMMARY"].open("a", encoding="utf-8") as f:
            f.write(summary_markdown(env=env, url=url, up=up, version=version, created=created, expires=expires,
                                     removed=removed))
    if "dotenv" in files:
        with files["dotenv"].open("a", encoding="utf-8") as f:
            f.write(f"PREVIEW_URL={_one_line(url)}\nPREVIEW_ENV={_one_line(env)}\n")


def _md(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def summary_markdown(*, env: str, url: str | None, up: bool, version: str | None = None, created: bool = False,
                     expires: str | None = None, removed: int = 0) -> str:
    if not up:
        what = f"removed ({removed} resources)" if removed else "already gone: nothing to remove"
        return f"### Preview `{_md(env)}`\n\n{what}\n\n"
    rows = [("URL", f"[{_md(url)}]({_md(url)})" if url else "(no proxy role)"),
            ("environment", f"`{_md(env)}`"), ("version", f"`{_md(version)}`" if version else "(provision only)"),
            ("", "created" if created else "redeployed (same VMs)"), ("expires", _md(expires) or "never")]
    lines = ["### Preview `" + _md(env) + "`", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n\n"
