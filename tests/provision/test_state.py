"""The per-environment state dir: key, pinned host keys, inventory cache, lock."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncssh
import pytest

from cloudstack_deploy.errors import CsdeployError, InvalidInput, Locked
from cloudstack_deploy.inventory import Host, HostDisk, Inventory, LoadBalancer, Network, SSHAccess
from cloudstack_deploy.state import (
    EnvState,
    env_dir,
    state_root,
    validate_env_name,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state(tmp_path: Path) -> EnvState:
    return EnvState("demo", root=tmp_path)


# ---- names and places -----------------------------------------------------------------------
def test_state_root_from_env_or_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CSDEPLOY_HOME", str(tmp_path / "h"))
    assert state_root() == tmp_path / "h"
    assert env_dir("demo") == tmp_path / "h" / "envs" / "demo"
    assert EnvState("demo").dir == tmp_path / "h" / "envs" / "demo"
    monkeypatch.delenv("CSDEPLOY_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_root() == tmp_path / "home" / ".csdeploy"


@pytest.mark.parametrize("name", ["demo", "a", "shop-staging", "x1", "a" * 20, "a-b-c"])
def test_valid_env_names(name: str) -> None:
    assert validate_env_name(name) == name


@pytest.mark.parametrize("name", ["", "Demo", "1abc", "-abc", "abc-", "a_b", "a.b", "a b",
                                  "a" * 21, "../etc", "a/b", "démo"])
def test_invalid_env_names_say_what_is_allowed(name: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_env_name(name)
    assert isinstance(err.value, CsdeployError)
    assert repr(name) in str(err.value)
    assert "lower-case" in (err.value.hint or "")


def test_env_state_refuses_a_path_as_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        EnvState("../../tmp", root=tmp_path)


# ---- the SSH key ----------------------------------------------------------------------------
def test_ensure_keypair_makes_a_private_key_once(state: EnvState) -> None:
    path, public = state.ensure_keypair()
    assert path == state.key_path == state.dir / "id_ed25519"
    assert mode(state.dir) == 0o700
    assert mode(path) == 0o600
    key = asyncssh.read_private_key(path)
    assert key.algorithm == b"ssh-ed25519"
    assert public.startswith("ssh-ed25519 ") and "\n" not in public
    assert asyncssh.import_public_key(public).public_data == key.public_data
    assert (state.dir / "id_ed25519.pub").read_text().strip() == public
    assert public.endswith(" csdeploy-demo")  # named in CloudStack's and the user's listings
    # a second run reuses the key: the keypair registered in CloudStack stays valid
    assert state.ensure_keypair() == (path, public)
    assert state.public_key() == public


def test_public_key_without_a_key_is_an_actionable_error(state: EnvState) -> None:
    with pytest.raises(InvalidInput) as err:
        state.public_key()
    assert f"csdeploy create-env BLUEPRINT --env {state.env}" in (err.value.hint or "")


def test_given_key_is_used_as_is(state: EnvState, tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    given = tmp_path / "mykey"
    key.write_private_key(given)
    path, public = state.ensure_keypair(given)
    assert path == given
    assert asyncssh.import_public_key(public).public_data == key.public_data
    assert not state.key_path.exists()  # nothing generated


def test_given_key_public_half_is_derived_over_a_stale_pub(state: EnvState, tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    given = tmp_path / "mykey"
    key.write_private_key(given)
    other.write_public_key(tmp_path / "mykey.pub")
    _, public = state.ensure_keypair(given)
    assert asyncssh.import_public_key(public).public_data == key.public_data


def test_encrypted_given_key_falls_back_to_its_pub(state: EnvState, tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    given = tmp_path / "enc"
    key.write_private_key(given, format_name="pkcs8-pem", passphrase="secret")
    with pytest.raises(InvalidInput) as err:
        state.ensure_keypair(given)
    assert "unencrypted" in (err.value.hint or "")
    key.write_public_key(tmp_path / "enc.pub")
    _, public = state.ensure_keypair(given)
    assert asyncssh.import_public_key(public).public_data == key.public_data


@pytest.mark.parametrize("kind", [["-t", "rsa", "-b", "2048", "-m", "PEM"], ["-t", "ecdsa"], ["-t", "ed25519"]],
                         ids=["rsa-pem", "ecdsa-openssh", "ed25519-openssh"])
def test_given_key_made_by_ssh_keygen_gives_openssh_s_public_line(state: EnvState, tmp_path: Path,
                                                                  kind: list[str]) -> None:
    """Keys as users make them (OpenSSH's ssh-keygen, RSA in the old PEM format too): the
    public line is the one OpenSSH derives, with the comment of the .pub beside it."""
    given = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", *kind, "-N", "", "-C", "me@laptop", "-f", str(given)], check=True)
    openssh = subprocess.run(["ssh-keygen", "-y", "-f", str(given)], capture_output=True, text=True,
                             check=True).stdout.split()[:2]
    _, public = state.ensure_keypair(given)
    assert public.split() == [*openssh, "me@laptop"]
    (tmp_path / "id.pub").unlink()
    _, public = state.ensure_keypair(given)
    assert public.split()[:2] == openssh
    (tmp_path / "id.pub").write_bytes(b"\xff\xfe not text")  # a .pub that is no key line
    _, public = state.ensure_keypair(given)
    assert public.split()[:2] == openssh


def test_missing_given_key(state: EnvState, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        state.ensure_keypair(tmp_path / "nope")


# ---- known_hosts ----------------------------------------------------------------------------
def test_known_hosts_round_trip(state: EnvState) -> None:
    assert state.known_hosts() is None
    a = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    b = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    state.write_known_hosts({"127.200.0.5": a, "[127.200.0.6]:2201": b + "\n"})
    assert mode(state.known_hosts_path) == 0o600
    assert state.known_hosts_path.read_text().splitlines() == [
        f"127.200.0.5 {a}", f"[127.200.0.6]:2201 {b}"]
    known = state.known_hosts()
    assert known is not None
    trusted = known.match("127.200.0.5", "127.200.0.5", 22)[0]
    assert {k.export_public_key().decode().strip() for k in trusted} == {a}
    assert not known.match("127.200.0.6", "127.200.0.6", 22)[0]
    assert {k.export_public_key().decode().strip()
            for k in known.match("127.200.0.6", "127.200.0.6", 2201)[0]} == {b}
    # replaced, not appended: a re-pinned host loses its old key
    state.write_known_hosts({"127.200.0.5": b})
    assert state.known_hosts_path.read_text() == f"127.200.0.5 {b}\n"
    assert [p.name for p in state.dir.iterdir() if p.name.startswith(".")] == []


def test_known_hosts_rejects_bad_patterns(state: EnvState) -> None:
    with pytest.raises(InvalidInput):
        state.write_known_hosts({"a b": "ssh-ed25519 AAAA"})


# ---- inventory ------------------------------------------------------------------------------
INVENTORY = Inventory(
    env="demo", service="shop", network=Network(id="n-1", name="csdeploy-demo", cidr="10.1.1.0/24"),
    ssh=SSHAccess(user="root", key=Path("/k/id_ed25519"), known_hosts=Path("/k/known_hosts")),
    hosts=(Host(name="demo-web-1", role="web", index=1, vm_id="vm-1", public_ip="127.200.0.5", ssh_port=22,
                private_ip="10.1.1.5", host_key="ssh-ed25519 AAAA", accessories=("redis",), proxy=True,
                disks=(HostDisk(name="demo-web-1-web", label="web", mount="/data", size_gb=5),)),
           Host(name="demo-db-1", role="db", index=1, vm_id="vm-2", public_ip="127.200.0.6", ssh_port=22,
                private_ip="10.1.1.6", host_key="ssh-ed25519 BBBB", accessories=("db",))),
    expires="2026-12-01T00:00:00Z",
    load_balancers=(LoadBalancer(role="web", public_ip="127.200.0.9", ports=(80, 443), members=("demo-web-1",)),),
)


def test_inventory_round_trip(state: EnvState) -> None:
    assert state.read_inventory() is None
    state.write_inventory(INVENTORY)
    assert mode(state.inventory_path) == 0o600
    assert mode(state.dir) == 0o700
    assert state.read_inventory() == INVENTORY
    data = json.loads(state.inventory_path.read_text())
    assert data["roles"] == {"web": ["demo-web-1"], "db": ["demo-db-1"]}, "derived maps for outside readers"
    assert data["accessories"] == {"redis": "demo-web-1", "db": "demo-db-1"}
    state.inventory_path.write_text("{half")
    assert state.read_inventory() is None  # a cache: unreadable means "rebuild"
    state.inventory_path.write_text('{"env": "demo", "hosts": [{"name": "x"}]}')
    assert state.read_inventory() is None  # an older or damaged shape too


def test_inventory_queries() -> None:
    assert INVENTORY.primary.name == "demo-web-1"
    assert [h.name for h in INVENTORY.role_hosts("web")] == ["demo-web-1"]
    assert INVENTORY.role_hosts("db") == [], "an accessory's own VM runs no app role"
    assert INVENTORY.accessory_host("db").name == "demo-db-1"
    assert INVENTORY.app_url == "http://127.200.0.9/", "through the role's load balancer"
    assert INVENTORY.entrypoint("db") is None and INVENTORY.load_balancer("worker") is None


def test_remove_deletes_everything(state: EnvState) -> None:
    state.ensure_keypair()
    state.write_inventory(INVENTORY)
    state.remove()
    assert not state.dir.exists()
    assert state.read_inventory() is None
    state.remove()  # idempotent


def test_loose_dir_permissions_are_tightened(state: EnvState) -> None:
    state.dir.mkdir(parents=True)
    os.chmod(state.dir, 0o755)
    state.write_inventory(INVENTORY)
    assert mode(state.dir) == 0o700


# ---- the lock -------------------------------------------------------------------------------
def test_lock_is_exclusive_and_names_the_holder(state: EnvState) -> None:
    with state.lock("csdeploy up demo"):
        info = json.loads((state.dir / "lock").read_text())
        assert info["pid"] == os.getpid() and info["command"] == "csdeploy up demo"
        assert {"host", "user", "since"} <= info.keys()
        with pytest.raises(Locked) as err:
            with EnvState("demo", root=state.dir.parent.parent).lock():
                pass
        message = str(err.value)
        assert message.startswith("environment 'demo' is being changed by another csdeploy: ")
        assert f"pid {os.getpid()} on host " in message and " since 20" in message
        assert "csdeploy up demo" in message and message.endswith("wait for it to finish")
    assert (state.dir / "lock").read_text() == ""
    with state.lock():  # released
        pass


def test_lock_released_when_body_raises(state: EnvState) -> None:
    with pytest.raises(RuntimeError):
        with state.lock():
            raise RuntimeError("boom")
    with state.lock():
        pass


def test_lock_held_by_another_process(state: EnvState) -> None:
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from cloudstack_deploy.state import EnvState
        with EnvState("demo", root=Path({str(state.dir.parent.parent)!r})).lock("csdeploy deploy"):
            print("locked", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(Locked, match=f"pid {proc.pid} .*csdeploy deploy"):
            with state.lock():
                pass
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    with state.lock():  # the kernel released it with the process
        pass


def test_ensure_home_leaves_a_shared_directory_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CSDEPLOY_HOME pointed at $HOME or a sticky directory like /tmp: never chmod those."""
    from cloudstack_deploy.state import ensure_home

    user_home = tmp_path / "home"
    user_home.mkdir(mode=0o755)
    user_home.chmod(0o755)
    monkeypatch.setenv("HOME", str(user_home))
    ensure_home(user_home)
    assert mode(user_home) == 0o755
    sticky = tmp_path / "shared"
    sticky.mkdir()
    sticky.chmod(0o1777)
    ensure_home(sticky)
    assert stat.S_IMODE(sticky.stat().st_mode) == 0o1777
    own = tmp_path / "own"
    own.mkdir(mode=0o755)
    own.chmod(0o755)
    ensure_home(own)
    assert mode(own) == 0o700
