"""What csdeploy sets up on a host's operating system (the blueprint's `hosts:` section), and
what `csdeploy hosts upgrade` runs there.

- sshd: key-only, root by key only, few tries (a drop-in that sorts first in
  ``sshd_config.d``: sshd keeps the first value it reads, so a cloud image's own drop-ins,
  such as cloud-init's ``50-cloud-init.conf``, cannot turn passwords back on). The new
  configuration is checked with ``sshd -t`` before sshd is told to reload: a reload (SIGHUP)
  re-reads it for new connections and keeps the open ones, csdeploy's own included.
- unattended-upgrades: security updates daily, and an automatic reboot at this VM's own time
  inside the blueprint's reboot window: the window is cut into one slot per VM of the role
  (by its index), so two VMs of one role never reboot at once.
- fail2ban: an sshd jail (3 tries, a ban of an hour).

The host records a hash of everything it was given (`MARKER`); the facts read it back, so a
deploy whose `hosts:` section did not change sends none of this again.
"""

from __future__ import annotations

import hashlib
import json

from ...blueprint_schema import HostsSpec, Upgrades
from . import docker as d
from .script import Script, Var, matches, nonempty, succeeds

MARKER = "/etc/csdeploy-hardening"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-csdeploy.conf"
UPGRADES_CONF = "/etc/apt/apt.conf.d/52csdeploy-upgrades"
AUTO_UPGRADES_CONF = "/etc/apt/apt.conf.d/20auto-upgrades"
FAIL2BAN_JAIL = "/etc/fail2ban/jail.d/csdeploy.conf"

#: sshd settings (keyword, value), in the order written. `sshd -T` prints them lowercased.
SSHD_SETTINGS = (
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("PermitRootLogin", "prohibit-password"),
    ("MaxAuthTries", "3"),
)

#: `hosts upgrade`'s default: Debian/Ubuntu package updates, never asking (keeping changed
#: configuration files). A blueprint's `hosts.upgrade_command` replaces it.
DEFAULT_UPGRADE: tuple[str, ...] = (
    "sh", "-c", "apt-get update -qq && apt-get -y -q -o Dpkg::Options::=--force-confdef "
                "-o Dpkg::Options::=--force-confold upgrade",
)
NONINTERACTIVE = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}


def reboot_time(upgrades: Upgrades, slot: int, slots: int) -> str:
    """``HH:MM`` of the ``slot``-th of ``slots`` VMs (0-based): the window cut in equal parts."""
    start, _ = upgrades.reboot_window
    step = upgrades.minutes // max(1, slots)
    minute = (start + (slot % max(1, slots)) * step) % (24 * 60)
    return f"{minute // 60:02d}:{minute % 60:02d}"


def sshd_dropin() -> str:
    return "# written by csdeploy (blueprint hosts.ssh_hardening)\n" + \
        "".join(f"{key} {value}\n" for key, value in SSHD_SETTINGS)


def upgrades_conf(upgrades: Upgrades, at: str) -> str:
    return ("// written by csdeploy (blueprint hosts.upgrades)\n"
            'Unattended-Upgrade::Automatic-Reboot "true";\n'
            'Unattended-Upgrade::Automatic-Reboot-WithUsers "true";\n'
            f'Unattended-Upgrade::Automatic-Reboot-Time "{at}";\n')


def auto_upgrades_conf() -> str:
    return 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'


def fail2ban_jail() -> str:
    return "# written by csdeploy (blueprint hosts.fail2ban)\n[sshd]\nenabled = true\nmaxretry = 3\nbantime = 1h\n"


def wanted(spec: HostsSpec, slot: int, slots: int) -> str:
    """The hash of what a host is given (what its `MARKER` holds once done)."""
    at = reboot_time(spec.upgrades, slot, slots) if spec.upgrades else None
    data = json.dumps(["v1", spec.ssh_hardening, spec.fail2ban,
                       [spec.upgrades.timezone, at] if spec.upgrades else None]).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def asks_nothing(spec: HostsSpec) -> bool:
    return not (spec.ssh_hardening or spec.fail2ban or spec.upgrades)


def needed(spec: HostsSpec, have: str, slot: int, slots: int) -> bool:
    """Whether the host must be (re)configured: its marker differs from what ``spec`` gives it
    (a host never touched needs nothing when ``spec`` asks nothing)."""
    if not have and asks_nothing(spec):
        return False
    return have != wanted(spec, slot, slots)


def read_marker() -> list[str]:
    """The argv whose output is the host's marker ("" when never hardened)."""
    return ["cat", MARKER]


def _apt_install(s: Script, package: str) -> None:
    with s.when(~succeeds(["dpkg-query", "-W", "-f", "${Status}", package])):
        s.raw("export DEBIAN_FRONTEND=noninteractive")
        s.run(["apt-get", "update", "-qq"])
        s.run(["apt-get", "install", "-y", "-qq", package], quiet=True)


def _reload_sshd(s: Script) -> None:
    """Reload, never restart: sshd re-reads its files for new logins; open sessions go on."""
    with s.when(succeeds(["systemctl", "is-active", "--quiet", "ssh"])):
        s.run(["systemctl", "reload", "ssh"])
    with s.otherwise():
        s.run(["systemctl", "reload", "sshd"])


def harden(spec: HostsSpec, slot: int, slots: int) -> Script:
    """Everything ``spec`` asks of a host, then its `MARKER`; what it no longer asks is undone
    (csdeploy's files removed: the image's own settings apply again)."""
    s = Script()
    if spec.ssh_hardening:
        s.step("ssh-hardening")
        s.run(["mkdir", "-p", "/etc/ssh/sshd_config.d"])
        s.write_file(SSHD_DROPIN, sshd_dropin(), mode="644")
        with s.when(~succeeds(["sshd", "-t"])):
            s.run(["rm", "-f", SSHD_DROPIN])
            s.fail(70, "sshd refused csdeploy's hardening drop-in (sshd -t): removed it, sshd unchanged")
        _reload_sshd(s)
    else:
        with s.when(succeeds(["test", "-f", SSHD_DROPIN])):
            s.run(["rm", "-f", SSHD_DROPIN])
            _reload_sshd(s)
    if spec.upgrades is not None:
        s.step("unattended-upgrades")
        s.run(["ln", "-sf", f"/usr/share/zoneinfo/{spec.upgrades.timezone}", "/etc/localtime"])
        s.write_file("/etc/timezone", spec.upgrades.timezone + "\n", mode="644")
        _apt_install(s, "unattended-upgrades")
        s.write_file(AUTO_UPGRADES_CONF, auto_upgrades_conf(), mode="644")
        s.write_file(UPGRADES_CONF, upgrades_conf(spec.upgrades, reboot_time(spec.upgrades, slot, slots)),
                     mode="644")
    else:
        s.run(["rm", "-f", UPGRADES_CONF])
    if spec.fail2ban:
        s.step("fail2ban")
        _apt_install(s, "fail2ban")
        s.run(["mkdir", "-p", "/etc/fail2ban/jail.d"])
        s.write_file(FAIL2BAN_JAIL, fail2ban_jail(), mode="644")
        s.run(["systemctl", "enable", "--now", "fail2ban"], quiet=True)
        s.run(["systemctl", "reload-or-restart", "fail2ban"])
    else:
        with s.when(succeeds(["test", "-f", FAIL2BAN_JAIL])):
            s.run(["rm", "-f", FAIL2BAN_JAIL])
            s.run(["systemctl", "reload-or-restart", "fail2ban"], may_fail=True)
    s.write_file(MARKER, wanted(spec, slot, slots) + "\n", mode="644")
    return s


def upgrade(command: tuple[str, ...] | None) -> Script:
    """`hosts upgrade` on one host: the blueprint's command (or `DEFAULT_UPGRADE`), never asking."""
    s = Script()
    s.step("upgrade")
    for key, value in NONINTERACTIVE.items():
        s.raw(f"export {key}={value}")
    s.run(list(command or DEFAULT_UPGRADE), stderr_to_stdout=True)
    return s


def boot_mark() -> Script:
    """What changes with each boot of a host, printed: the kernel's boot id (a VM's) and PID 1's
    start time (a container host's, whose kernel does not reboot): a reboot is seen to have
    happened, not assumed from a finished API call."""
    s = Script()
    s.run(["cat", "/proc/sys/kernel/random/boot_id"])
    s.run(["cut", "-d", " ", "-f", "22", "/proc/1/stat"])
    return s


#: The exit code of `wait_serving` when the host did not serve again in time.
NOT_SERVING = 71


def wait_serving(role_labels: dict[str, str], *, timeout: float, host_header: str | None = None,
                 path: str | None = None) -> Script:
    """After a reboot: wait until the role's newest container runs (healthy, when it has a
    HEALTHCHECK) and, with ``path``, kamal-proxy on this host answers 2xx for it (``host_header``:
    the role's proxy host name, when it has one); stops with `NOT_SERVING` after ``timeout`` s."""
    s = Script()
    name, st, t0, now = Var("name"), Var("st"), Var("t0"), Var("now")
    s.step("wait-serving")
    s.extend(d.clock(t0))
    curl = ["curl", "-fsS", "-o", "/dev/null", "--max-time", "2",
            *(["-H", f"Host: {host_header}"] if host_header else []), f"http://127.0.0.1{path or '/'}"]
    with s.loop():
        s.extend(d.current(role_labels, into=name))
        s.extend(d.clock(now))
        with s.when(nonempty(name)):
            s.capture(st, d.inspect(name, d.HEALTH_STATE))
            ready = matches(st, "healthy running", "none running")
            with s.when(ready & succeeds(curl) if path else ready):
                s.break_()
        with s.when(d.elapsed_at_least(t0, now, timeout)):
            s.fail(NOT_SERVING, f"not serving {timeout:g}s after the reboot (container: ", name, " ", st, ")")
        s.sleep(1)
    s.emit("serving ", name)
    return s
