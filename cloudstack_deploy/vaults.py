"""Secret values from a vault, through the vault's own command-line tool (as `kamal secrets fetch`).

The blueprint's `secrets_source` names an adapter and, in Kamal's words, an `account` and a
`from` prefix: a secret NAME is looked up as `<from>/<NAME>` unless `paths` gives its own
reference. Every adapter runs its CLI once per command (one call per vault item where the CLI
reads one item at a time), with a timeout, and reads the values from the CLI's stdout: argv
holds names and paths only, never a value, and what the CLI needs to log in (BW_SESSION,
OP_SESSION_*, VAULT_TOKEN, DOPPLER_TOKEN, AWS_PROFILE...) comes from the environment it
inherits. Errors name the secret and the adapter; they never hold the CLI's stdout.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .blueprint_schema import VAULT_ADAPTERS, SecretsSource
from .errors import InvalidInput, OperationFailed
from .log import redact, terminal_safe

ADAPTERS = VAULT_ADAPTERS
#: Reads dotenv lines (and says where they came from in its errors): `secrets.parse_dotenv`.
DotenvParser = Callable[[Sequence[str], str], dict[str, str]]
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Call:
    """One run of the vault's CLI: its argv (names and paths only), the secrets it answers
    (name -> the key its parsed output holds the value under), and how to parse stdout."""

    argv: list[str]
    keys: dict[str, str]
    parse: Callable[[str], dict[str, str]]
    env: dict[str, str] = field(default_factory=dict)


def reference(source: SecretsSource, name: str) -> str:
    """Where ``name`` is in the vault: its own path, or ``<from>/<NAME>``, or the name."""
    ref = source.paths.get(name)
    if ref is None:
        ref = f"{source.from_.rstrip('/')}/{name}" if source.from_ else name
    return ref


def describe(source: SecretsSource, name: str) -> str:
    """Where a value came from, for `secrets print` and diagnostics (never the value)."""
    return f"{source.adapter} ({reference(source, name)})"


def fetch(source: SecretsSource, names: Sequence[str], *, environ: Mapping[str, str] | None = None,
          timeout: float | None = None, hide: Sequence[str] = (), dotenv: DotenvParser | None = None,
          ) -> dict[str, str]:
    """The values of ``names`` from ``source``'s vault: every CLI run once, with a timeout.

    Raises InvalidInput (exit 2) when the CLI is not on PATH or a secret is not in the vault,
    OperationFailed (exit 1) when the CLI fails or times out; both name the secret and the adapter.
    The CLI inherits ``environ`` (its login: tokens, sessions, profiles) without the names in
    ``hide`` (the blueprint's other secrets: the vault's CLI has no business with them).
    ``dotenv`` reads the `command` adapter's dotenv output (`secrets.parse_dotenv`).
    """
    if not names:
        return {}
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in hide}
    calls = plan(source, names, dotenv=dotenv)
    wait = timeout if timeout is not None else source.timeout or DEFAULT_TIMEOUT
    values: dict[str, str] = {}
    for call in calls:
        asked = (tuple(call.argv), tuple(call.keys.items()))
        if asked in _fetched:  # once per command: a nightly's create and deploy ask twice
            values.update(_fetched[asked])
            continue
        first = next(iter(call.keys))
        program = shutil.which(call.argv[0], path=env.get("PATH"))
        if program is None:
            raise InvalidInput(f"secret {first}: adapter {source.adapter} needs the `{call.argv[0]}` command, "
                               "which is not on PATH",
                               hint=f"install it, or set {first} in the environment or the secrets file")
        try:
            done = subprocess.run([program, *call.argv[1:]], stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=wait, env={**env, **call.env})
        except subprocess.TimeoutExpired:
            raise OperationFailed(f"secret {first}: adapter {source.adapter}: `{call.argv[0]}` did not answer in "
                              f"{wait:g} s", hint="is the vault reachable, and are you logged in?") from None
        except OSError as exc:
            raise OperationFailed(f"secret {first}: adapter {source.adapter}: cannot run `{call.argv[0]}`: "
                              f"{exc.strerror or exc}") from None
        if done.returncode != 0:
            raise OperationFailed(f"secret {first}: adapter {source.adapter}: `{' '.join(call.argv[:3])}` failed "
                              f"(exit {done.returncode}){_why(done.stderr)}",
                              hint=_LOGIN_HINTS.get(source.adapter))
        try:
            found = call.parse(done.stdout)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OperationFailed(f"secret {first}: adapter {source.adapter}: `{call.argv[0]}` printed something "
                              "that is not what it should (expected its JSON output)") from None
        for name, key in call.keys.items():
            value = found.get(key)
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"secret {name}: adapter {source.adapter} has no value at "
                                   f"{reference(source, name)}",
                                   hint="check `from`/`paths` in secrets_source, or the vault item")
            values[name] = value
        _fetched[asked] = {name: values[name] for name in call.keys}
    return values


#: What each CLI run answered, for the life of this process (one csdeploy command).
_fetched: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], dict[str, str]] = {}


def forget() -> None:
    """Drop the fetched values (for tests and long-lived library callers)."""
    _fetched.clear()


_LOGIN_HINTS = {
    "1password": "sign in with `op signin` (or set OP_SERVICE_ACCOUNT_TOKEN)",
    "bitwarden": "run `bw unlock` and export BW_SESSION",
    "bitwarden-sm": "export BWS_ACCESS_TOKEN",
    "lastpass": "run `lpass login`",
    "aws_secrets_manager": "check the AWS profile (account) and your credentials",
    "gcp_secret_manager": "run `gcloud auth login`",
    "doppler": "run `doppler login` or export DOPPLER_TOKEN",
    "vault": "run `vault login` or export VAULT_ADDR and VAULT_TOKEN",
}


def _why(stderr: str) -> str:
    """The CLI's last line of stderr, short, redacted and safe for a terminal."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    return f": {terminal_safe(redact(lines[-1][:200]), keep_newlines=False)}" if lines else ""


# ---- the adapters: what to run, how to read it -----------------------------------------------

def plan(source: SecretsSource, names: Sequence[str], *, dotenv: DotenvParser | None = None) -> list[Call]:
    """The CLI runs that fetch ``names`` (pure: for tests and `--dry-run`)."""
    builder = _BUILDERS.get(source.adapter)
    if builder is None:
        raise InvalidInput(f"unknown secrets adapter {source.adapter!r}", hint="one of: " + ", ".join(ADAPTERS))
    refs = {name: reference(source, name) for name in names}
    if source.adapter == "command":
        return _command(source, refs, dotenv)
    return builder(source, refs)


def _grouped(refs: Mapping[str, str], split: Callable[[str], tuple[str, str]]) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    for name, ref in refs.items():
        item, key = split(ref)
        groups.setdefault(item, {})[name] = key
    return groups


def _last(ref: str) -> tuple[str, str]:
    item, _, key = ref.rpartition("/")
    return item, key


def _one_password(source: SecretsSource, refs: Mapping[str, str]) -> list[Call]:
    def split(ref: str) -> tuple[str, str]:
        parts = ref.removeprefix("op://").split("/")
        if len(parts) < 2:
            raise InvalidInput(f"1password reference {ref!r} needs at least VAULT/ITEM (op://VAULT/ITEM/FIELD)")
        vault, item, fields = parts[0], parts[1], parts[2:] or ["password"]
        return f"{vault}/{item}", ".".join(fields)

    calls = []
    for where, keys in _grouped(refs, split).items():
        vault, item = where.split("/", 1)
        argv = ["op", "item", "get", item, "--vault", vault, "--format", "json",
                "--fields", ",".join(f"label={f}" for f in dict.fromkeys(keys.values()))]
        if source.account:
            argv += ["--account", source.account]
        calls.append(Call(argv, keys, _op_fields))
    return calls


def _op_fields(stdout: str) -> dict[str, str]:
    data = json.loads(stdout)
    fields = data if isinstance(data, list) else [data]
    out: dict[str, str] = {}
    for f in fields:
        label = f.get("label") or f.get("id")
        if label is not None and isinstance(f.get("value"), str):
            out[str(label)] = f["value"]
    return out


def _bitwarden(source: SecretsSource, refs: Mapping[str, str]) -> list[Call]:
    def split(ref: str) -> tuple[str, str]:
        item, _, fld = ref.partition("/")
        return item, fld or "password"

    return [Call(["bw", "get", "item", item, "--nointeraction"], keys, _bw_item)
            for item, keys in _grouped(refs, split).items()]


def _bw_item(stdout: str) -> dict[str, str]:
    data = json.loads(stdout)
    out = {str(f["name"]): f["value"] for f in data.get("fields") or [] if isinstance(f.get("value"), str)}
    login = data.get("login") or {}
    for key in ("password", "username", "totp"):
        if isinstance(login.get(key), str):
            out.setdefault(key, login[key])
    if isinstance(data.get("notes"), str):
        out.setdefault("notes", data["notes"])
    return out


def _bitwarden_sm(source: SecretsSource, refs: Mapping[str, str]) -> list[Call]:
    calls = []
    for project, keys in _grouped(refs, _last).items():
        argv = ["bws", "secret", "list", *([project] if project else []), "--output", "json"]
        calls.append(Call(argv, keys, lambda s: {str(x["key"]): x["value"] for x in json.loads(s)}))
    return calls


def _lastpass(source: SecretsSource, refs: Mapping[str, str]) -> list[Call]:
    def parse(stdout: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for entry in json.loads(stdout):
            for key in ("name", "fullname"):
                if entry.get(key) and isinstance(entry.get("password"), str):
                    out[str(entry[key])] = entry["password"]
        return out

    keys = dict(refs)
    return [Call(["lpass", "show", "--json", *dict.fromkeys(keys.values())], keys, parse)]


def _aws(source: SecretsSource, refs: Mapping[str, str]) -> list[Call]:
    def parse(stdout: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for entry in json.loads(stdout).get("SecretValues", []):
            name, text = entry.get("Name"), entry.get("SecretString")
            if not isinstance(name, str) or not isinstance(text, str):
                continue
            out[name] = text
            if entry.get("ARN"):
                out[str(entry["ARN"])] = text
            try:  # a secret holding a JSON object: its keys as NAME/KEY, as Kamal reads them
                inner = json.loads(text)
            except ValueError:
                continue
            if isinstance(inner, dict):
                out.update({f"{name}/{k}": v for k, v in inner.items() if isinstance(v, str)})
        return out

    keys = dict(refs)
    argv = ["aws", "secretsmanager", "batch-get-secret-value", "--secret-id-list", *dict.fromkeys(keys.values()),
            "--output", "json"]
    if source.account:
        argv += ["--profile", source.account]
    return [Call(argv, keys, parse)]


def _gcp(source: SecretsSource, refs: Mapping[str, str]) -> list[Call]:
    calls = []
    for name, ref in refs.items():
        parts = ref.split("/")
        if len(parts) == 1:
            parts.insert(0, "default")
        project, secret, version = parts[0], parts[1], (parts[2] if len(parts) > 2 else "latest")
        argv = ["gcloud", "secrets", "versions", "access", version, f"--secret={secret}", "--format=json"]
        if project != "default":
            argv.append(f"--project={project}")
        user, _, impersonate = (source.account or "default").partition("|")
        if user != "default":
            argv.append(f"--account={user}")
        if impersonate:
            argv.append(f"--impersonate-service-account={impersonate}")
        calls.append(Call(argv, {name: "value"},
                          lambda s: {"value": base64.b64decode(json.loads(s)["payload"]["data"]).decode()}))
    return calls


def _doppler(source: SecretsSource, refs: Mapping[str, str]) -> list[Call]:
    calls = []
    for where, keys in _grouped(refs, _last).items():
        argv = ["doppler", "secrets", "get", *dict.fromkeys(keys.values()), "--json"]
        project, _, config = where.partition("/")
        if project and config:
            argv += ["--project", project, "--config", config]
        calls.append(Call(argv, keys, lambda s: {str(k): v.get("computed") for k, v in json.loads(s).items()}))
    return calls


def _vault(source: SecretsSource, refs: Mapping[str, str]) -> list[Call]:
    def parse(stdout: str) -> dict[str, str]:
        data = json.loads(stdout)["data"]
        inner = data.get("data") if isinstance(data.get("data"), dict) else data  # KV v2 : v1
        return {str(k): v for k, v in inner.items() if isinstance(v, str)}

    calls = []
    for path, keys in _grouped(refs, _last).items():
        if not path:
            raise InvalidInput(f"vault reference for {next(iter(keys))} needs MOUNT/PATH/KEY "
                               "(set `from: secret/myapp` in secrets_source)")
        calls.append(Call(["vault", "kv", "get", "-format=json", path], keys, parse))
    return calls


def _command(source: SecretsSource, refs: Mapping[str, str], dotenv: DotenvParser | None = None) -> list[Call]:
    def parse(stdout: str) -> dict[str, str]:
        text = stdout.strip()
        if text.startswith("{") or dotenv is None:
            return {str(k): v for k, v in json.loads(text).items() if isinstance(v, str)}
        return dotenv(stdout.splitlines(), "the secrets command's output")

    keys = dict(refs)
    return [Call(list(source.command), keys, parse, env={"CSDEPLOY_SECRET_NAMES": " ".join(keys.values())})]


_BUILDERS: dict[str, Callable[[SecretsSource, Mapping[str, str]], list[Call]]] = {
    "1password": _one_password, "bitwarden": _bitwarden, "bitwarden-sm": _bitwarden_sm, "lastpass": _lastpass,
    "aws_secrets_manager": _aws, "gcp_secret_manager": _gcp, "doppler": _doppler, "vault": _vault,
    "command": _command,
}
