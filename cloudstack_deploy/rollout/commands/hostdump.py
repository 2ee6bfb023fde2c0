"""Scheduled backups kept on the accessory's host (`accessories.X.backups` with a `schedule`
and no `to:`, or `to: host`): every word of the timer, the job script and the reads.

The machinery is the role jobs' (`jobs.py`): a systemd timer fires every minute and a job
script compares the minute with the cron line's expanded numbers, so nothing on the host parses
blueprint text. A due run takes a lock (``flock -n``: a minute that finds the previous run
still going is skipped), streams the accessory's own dump (the words `dump.py` builds for
`csdeploy backup`) into a temporary name in a root-only (0700) directory on the accessory's
data disk, checks it (exit code, the kind's magic bytes), writes the manifest `csdeploy backup`
writes (sha256, size, time, kind, image, ``by: schedule``) and only then renames both into
place, the dump first: a listing counts a dump only with its manifest, so a killed or failed
run never shows a partial file (the next run removes what a killed one left). Then the newest
``keep`` are kept. The run's outcome is written to ``last-run.json`` for `status`.

The timer's service runs as root (the directory is root's); the files under it are 0600.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .host import base_dir
from .jobs import TIMER_UNIT, due_gate, jobs_dir
from .script import Argv, Script, q

UNIT_PREFIX = "csdeploy-backup-"
LAST_RUN = "last-run.json"
#: What the host's backup timers were set from (a hash), read with the host's facts: a deploy
#: rewrites them only when it differs.
MARKER = "backup-schedules.sum"
_STAMP = "[0-9]*T[0-9]*Z"


@dataclass(frozen=True)
class HostDump:
    """What the job script of one accessory needs: all decided by csdeploy, none typed by hand."""

    service: str
    env: str
    accessory: str
    kind: str            # dumps.METHODS' kind: postgres, redis, valkey
    ext: str             # pgdump, rdb
    magic: str           # the first bytes of a good dump (ASCII)
    image: str
    host: str            # the VM's name (the manifest's ``host``)
    directory: str       # where the dumps are kept on the host
    where: str           # the manifests' ``destination`` (``host:PATH``)
    dump: Argv           # the dump on stdout (`dump.pg_dump` / `dump.redis_rdb`)
    when: str            # the cron line
    keep: int | None


def unit_name(service: str, accessory: str) -> str:
    return f"{UNIT_PREFIX}{service}-{accessory}"


def _script_path(service: str, accessory: str) -> str:
    return f"{base_dir(service)}/jobs/backup-{accessory}.sh"


def _manifest_format(d: HostDump) -> str:
    """A printf format writing the manifest (the fixed fields from here, the run's own as %s)."""
    s, n = "@@csdeploy-s@@", "@@csdeploy-n@@"
    doc = {"id": s, "env": d.env, "accessory": d.accessory, "kind": d.kind, "image": d.image,
           "created_at": s, "size": n, "sha256": s, "key": s, "by": "schedule", "host": d.host,
           "destination": d.where, "format": 1}
    text = json.dumps(doc).replace("\\", "\\\\").replace("%", "%%")
    text = text.replace(f'"{s}"', '"%s"').replace(f'"{n}"', "%s")
    return text + "\\n"


def job_script(d: HostDump) -> Script:
    """What the timer runs every minute (as root)."""
    s = Script()
    due_gate(s, d.when)
    s.raw(f"dir={q([d.directory])}")
    s.raw('mkdir -p "$dir" && chmod 700 "$dir" "${dir%/*}"')
    s.raw('exec 9>"$dir/.lock"')
    s.raw("flock -n 9 || exit 0")  # the previous run still going: this minute is skipped
    s.raw('rm -f "$dir"/.partial-*')  # left by a run that was killed
    s.raw("stamp=$(date -u +%Y%m%dT%H%M%S000000Z) at=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
    s.raw(f'id={q([f"{d.env}/{d.accessory}/"])}"$stamp" file="$stamp".{d.ext} tmp="$dir/.partial-$stamp"')
    s.raw("last() { printf '{\"result\": \"%s\", \"at\": \"%s\", \"detail\": \"%s\"}\\n' \"$1\" \"$at\" "
          "\"$(printf '%s' \"$2\" | tr -d '\"\\\\\\000-\\037' | cut -c1-300)\" > \"$dir/.last-run\" "
          f"&& mv \"$dir/.last-run\" \"$dir/{LAST_RUN}\"; }}")
    s.raw("trap 'rm -f \"$tmp\" \"$tmp.json\" \"$tmp.err\"' EXIT")
    s.raw(f'rc=0; {q(d.dump)} > "$tmp" 2> "$tmp.err" || rc=$?')
    s.raw('if [ "$rc" != 0 ]; then last failed "the dump failed (exit $rc): $(tail -n 1 "$tmp.err")"; exit "$rc"; fi')
    s.raw(f'if [ "$(head -c {len(d.magic)} "$tmp")" != {q([d.magic])} ]; then '
          f'last failed "the dump is not a {d.kind} dump"; exit 65; fi')
    s.raw("size=$(wc -c < \"$tmp\" | tr -d ' ') sum=$(sha256sum \"$tmp\" | cut -d ' ' -f 1)")
    key = q([f"{d.env}/{d.accessory}/"]) + '"$file"'
    s.raw(f"printf {q([_manifest_format(d)])} \"$id\" \"$at\" \"$size\" \"$sum\" {key} > \"$tmp.json\"")
    s.raw('chmod 600 "$tmp" "$tmp.json"')
    s.raw('mv "$tmp" "$dir/$file" && mv "$tmp.json" "$dir/$file.json"')  # the dump first: see the docstring
    if d.keep:
        s.raw(f'ls "$dir" | grep -x {q([_STAMP + "[.]" + d.ext])} | sort -r | tail -n +{d.keep + 1} '
              '| while read -r old; do rm -f "$dir/$old" "$dir/$old.json"; done')
    s.raw('last ok "$id"')
    return s


def _service_unit(service: str, accessory: str, user: str) -> str:
    home = "~" + user
    return "\n".join(["[Unit]", f"Description=csdeploy: scheduled backup of {service}'s {accessory}", "",
                      "[Service]", "Type=oneshot",
                      # a dump that hangs is ended (its partial file goes at the next run), so the
                      # minutes after it are not all skipped behind its lock
                      "TimeoutStartSec=12h",
                      f"ExecStart=/bin/sh -c \"cd {home} && exec /bin/sh {_script_path(service, accessory)}\""]) + "\n"


def marker(service: str) -> str:
    return f"{jobs_dir(service)}/{MARKER}"


def install(service: str, wanted: dict[str, Script], user: str, fingerprint: str) -> Script:
    """On an accessory host: each scheduled accessory's job script and units written and linked
    into systemd, their timers started; the timers of this host's accessories no longer
    scheduled on it stopped and their files removed (the dumps are kept)."""
    s = Script()
    s.step("backup schedules")
    if wanted:
        s.raw("[ -d /run/systemd/system ] || { echo 'scheduled backups on the host need systemd "
              "(no /run/systemd/system)' >&2; exit 69; }")
    s.raw('sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"')
    s.raw('home=$(printenv HOME)')
    d = jobs_dir(service)
    s.run(["mkdir", "-p", d])
    prefix = unit_name(service, "")
    keep = " ".join(f"{unit_name(service, a)}.timer" for a in wanted)
    s.raw(f"for unit in $(ls {q([d])} 2>/dev/null | grep -x {q([prefix + '.*[.]timer'])} || true); do")
    s.raw(f'  case " {keep} " in *" $unit "*) continue ;; esac')
    s.raw('  $sudo systemctl disable --now "$unit" "${unit%.timer}.service" >/dev/null 2>&1 || true')
    s.raw(f'  a=${{unit#{prefix}}}; a=${{a%.timer}}')
    s.raw(f'  rm -f {q([d])}/"${{unit%.timer}}".service {q([d])}/"$unit" {q([d])}/backup-"$a".sh')
    s.raw("done")
    for accessory, script in wanted.items():
        name = unit_name(service, accessory)
        s.write_file(_script_path(service, accessory), script.text(), mode="700")
        s.write_file(f"{d}/{name}.service", _service_unit(service, accessory, user), mode="644")
        s.write_file(f"{d}/{name}.timer", TIMER_UNIT, mode="644")
        for suffix in (".service", ".timer"):
            s.raw(f'$sudo systemctl link "$home"/{q([d + "/" + name + suffix])} >/dev/null')
    if wanted:
        s.raw("$sudo systemctl daemon-reload")
        s.raw("$sudo systemctl enable --now " + " ".join(q([f"{unit_name(service, a)}.timer"]) for a in wanted)
              + " >/dev/null 2>&1")
        s.write_file(marker(service), fingerprint + "\n", mode="644")
    else:
        s.run(["rm", "-f", marker(service)])
    return s


def _sudo(user: str) -> list[str]:
    return [] if user == "root" else ["sudo", "-n"]


def manifests(directory: str, user: str) -> Argv:
    """Every finished dump's manifest in ``directory``, one JSON document a line (nothing when
    there is no directory yet)."""
    line = (f'cd {q([directory])} 2>/dev/null || exit 0; for m in {_STAMP}.*.json; do '
            '[ -f "$m" ] && [ -f "${m%.json}" ] || continue; tr -d "\\n" < "$m"; echo; done')
    return [*_sudo(user), "sh", "-c", line]


def last_run(directory: str, user: str) -> Argv:
    """The last scheduled run's outcome (JSON), or nothing."""
    return [*_sudo(user), "sh", "-c", 'cat "$1" 2>/dev/null || true', "sh", f"{directory}/{LAST_RUN}"]


def read(directory: str, name: str, user: str) -> Argv:
    """One kept dump on stdout (``name``: the file's name in ``directory``)."""
    return [*_sudo(user), "cat", "--", f"{directory}/{name}"]
