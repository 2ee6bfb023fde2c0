"""Scheduled jobs: a systemd timer per job on the role's first host, firing every minute, and a
job script that runs the role's image when the minute matches the job's cron line.

The cron line is expanded here (`cron.parse`) into the sets of minutes, hours, ... it
matches; the host only compares numbers, so no cron daemon is needed and nothing on the host
ever parses text from the blueprint. One run at a time: the script holds a `flock` while its
container runs, and a minute that finds the previous run still going is skipped. Each run is
a container of its own (``<service>-<role>-job-<job>-<YYYYmmddHHMM>``, label
``csdeploy.job=<role>.<job>``), kept after it ends so `csdeploy logs` and `status` show the
runs and their exit codes; the newest `KEEP_RUNS` are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ... import cron
from . import docker as d
from .host import base_dir
from .script import Script, Var, Word, q, succeeds

JOB_LABEL = "csdeploy.job"
KEEP_RUNS = 5
UNIT_PREFIX = "csdeploy-job-"


def jobs_dir(service: str) -> str:
    return f"{base_dir(service)}/jobs"


def unit_name(service: str, role: str, job: str) -> str:
    return f"{UNIT_PREFIX}{service}-{role}-{job}"


def job_label(role: str, job: str) -> str:
    return f"{role}.{job}"


def run_prefix(service: str, role: str, job: str) -> str:
    return f"{service}-{role}-job-{job}-"


def _in(values: Sequence[int], var: str) -> str:
    """``case`` test: is ``$var`` one of ``values``?"""
    return f'case " {" ".join(map(str, values))} " in *" ${var} "*) ;; *) exit 0 ;; esac'


def due_gate(s: Script, when: str) -> Script:
    """Lines that end the script (exit 0) unless this minute matches the cron line ``when``
    (expanded here: the host compares numbers only). Also used by scheduled backups."""
    c = cron.parse(when)
    s.raw("set -- $(date '+%M %H %d %m %w')")
    s.raw('m=${1#0} h=${2#0} d=${3#0} mo=${4#0} w=$5')
    s.raw(_in(c.minutes, "m"))
    s.raw(_in(c.hours, "h"))
    s.raw(_in(c.months, "mo"))
    days = f'case " {" ".join(map(str, c.days))} " in *" $d "*) dok=1 ;; *) dok=0 ;; esac'
    weekdays = f'case " {" ".join(map(str, c.weekdays))} " in *" $w "*) wok=1 ;; *) wok=0 ;; esac'
    s.raw(days)
    s.raw(weekdays)
    both = c.any_day or c.any_weekday  # crontab(5): restricted day fields match if either does
    s.raw('[ "$dok" = 1 ] && [ "$wok" = 1 ] || exit 0' if both else '[ "$dok" = 1 ] || [ "$wok" = 1 ] || exit 0')
    return s


def job_script(service: str, role: str, job: str, when: str, run_argv: list[str | Var | Word]) -> Script:
    """The script the timer runs every minute (from the deploy user's home)."""
    s = Script()
    due_gate(s, when)
    s.raw("stamp=$(date +%Y%m%d%H%M)")
    lock = f"{jobs_dir(service)}/{role}-{job}.lock"
    s.raw(f"rc=0; {q(['flock', '-n', lock, *run_argv])} >/dev/null 2>&1 || rc=$?")
    old = Var("old")
    s.capture(old, ["sh", "-c", f"docker ps --all --format '{{{{.Names}}}}' --filter "
                                f"label={JOB_LABEL}={job_label(role, job)} | tail -n +{KEEP_RUNS + 1}"])
    with s.when(succeeds(["test", "-n", old])):
        s.raw("docker rm $old >/dev/null 2>&1 || true")
    s.raw("exit $rc")
    return s


def run_argv(*, service: str, env: str, role: str, job: str, image: str, clear: Mapping[str, str],
             env_file: str, mounts: Sequence[d.Mount], cmd: Sequence[str] | None,
             settings: d.ContainerSettings | None) -> list[str | Var | Word]:
    """`docker run` of one run of the job, in the foreground (the lock is held while it runs)."""
    name = Word(run_prefix(service, role, job), Var("stamp"))
    argv = d.run(name=name, image=image, env=clear, env_file=env_file,  # type: ignore[arg-type]
                 labels={"service": service, "destination": env, JOB_LABEL: job_label(role, job)},
                 mounts=mounts, cmd=cmd, settings=settings, restart="no")
    return [w for w in argv if w != "--detach"]


def _service_unit(service: str, role: str, job: str, user: str) -> str:
    lines = ["[Unit]", f"Description=csdeploy: scheduled job {job} of {service} (role {role})", "",
             "[Service]", "Type=oneshot", "WorkingDirectory=~",
             f"ExecStart=/bin/sh {jobs_dir(service)}/{role}-{job}.sh"]
    if user != "root":
        lines.insert(lines.index("Type=oneshot"), f"User={user}")
    return "\n".join(lines) + "\n"


TIMER_UNIT = "\n".join(["[Unit]", "Description=csdeploy: every minute, for a scheduled job", "",
                        "[Timer]", "OnCalendar=*-*-* *:*:00", "AccuracySec=1s", "",
                        "[Install]", "WantedBy=timers.target"]) + "\n"


def install(service: str, role: str, jobs: Mapping[str, Script], user: str) -> Script:
    """Write each job's script and units (in the deploy user's csdeploy directory, linked into
    systemd), start their timers, and stop and remove the role's timers of jobs no longer in
    the blueprint. Needs systemd, and root or passwordless sudo."""
    s = Script()
    s.step(f"schedule {role}")
    if jobs:
        with s.when(~succeeds(["test", "-d", "/run/systemd/system"])):
            s.fail(69, "scheduled jobs need systemd on the host (no /run/systemd/system)")
    s.raw('sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"')
    home = Var("home")
    s.capture(home, ["printenv", "HOME"], may_fail=False)
    directory = q([jobs_dir(service)])
    s.run(["mkdir", "-p", jobs_dir(service)])
    wanted = [unit_name(service, role, job) for job in jobs]
    prefix = unit_name(service, role, "")
    have, unit = Var("have"), Var("unit")
    s.raw(f"{have.name}=$(ls {directory} 2>/dev/null | grep -x {q([prefix + '.*[.]timer'])} || true)")
    keep = " ".join(f"{u}.timer" for u in wanted)
    with s.each_word(unit, have):  # a job no longer in the blueprint: its timer stopped, its files gone
        s.raw(f'case " {keep} " in *" $unit "*) continue ;; esac')
        s.raw('$sudo systemctl disable --now "$unit" "${unit%.timer}.service" >/dev/null 2>&1 || true')
        s.raw(f'j=${{unit#{prefix}}}; j=${{j%.timer}}')
        s.raw(f'rm -f {directory}/"${{unit%.timer}}".service {directory}/"$unit" '
              f'{directory}/{q([role])}-"$j".sh {directory}/{q([role])}-"$j".lock')
    for job, script in jobs.items():
        name = unit_name(service, role, job)
        s.write_file(f"{jobs_dir(service)}/{role}-{job}.sh", script.text(), mode="700")
        s.write_file(f"{jobs_dir(service)}/{name}.service", _service_unit(service, role, job, user), mode="644")
        s.write_file(f"{jobs_dir(service)}/{name}.timer", TIMER_UNIT, mode="644")
        for suffix in (".service", ".timer"):
            s.raw(f'$sudo systemctl link "$home"/{q([jobs_dir(service) + "/" + name + suffix])} >/dev/null')
    if wanted:
        s.raw("$sudo systemctl daemon-reload")
        s.raw("$sudo systemctl enable --now " + " ".join(q([f"{u}.timer"]) for u in wanted) + " >/dev/null 2>&1")
    return s


def logs_script(role: str, job: str, tail: int, since_seconds: int | None = None) -> Script:
    """The job's kept runs, oldest first: a header per run (name, state, exit code), then its logs."""
    s = Script()
    runs, run, state = Var("runs"), Var("run"), Var("state")
    s.capture(runs, d.ps_names({JOB_LABEL: job_label(role, job)}, all_=True))
    with s.when(~succeeds(["test", "-n", runs])):
        s.emit(f"no run of job {job} yet")
    s.raw(f"{runs.name}=$(printf '%s\\n' $runs | tac)")
    with s.each_word(run, runs):
        s.capture(state, d.inspect(run, "{{.State.Status}} (exit {{.State.ExitCode}}) {{.State.StartedAt}}"))
        s.emit("== ", run, ": ", state)
        s.run(d.logs(run, tail=tail, since_seconds=since_seconds), stderr_to_stdout=True, may_fail=True)
    return s
