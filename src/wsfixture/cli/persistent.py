"""Workspaces that outlive a command (the CLI's): find them, start them through a
supervisor process, stop them, and compare them with the config.

Each runs under ``python -m wsfixture.cli.supervisor`` in the config's persistent lab; the
ledger is where later commands find them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from wsfixture.backends import backend_class
from wsfixture.errors import CleanupError
from wsfixture.host import ledger, limits, settings, system
from wsfixture.model import derive
from wsfixture.model.config import Config, WorkspaceSpec
from wsfixture.net.lab import Lab
from wsfixture.progress import Say
from wsfixture.retry import retry_until
from wsfixture.workspaces import Workspace

# What a supervisor says on its stdout as it starts its workspace, a line each: what it
# does (PROGRESS) and what the user should know (NOTE), then READY <seconds> or FAILED <why>.
PROGRESS, NOTE, READY, FAILED = "PROGRESS ", "NOTE ", "READY ", "FAILED "


def log_path(lab: str, name: str) -> Path:
    return settings.current().supervisor_logs / f"{lab}-{name}.log"


def _lab_lock(name: str) -> FileLock:
    """Held while the persistent lab is made or removed, and while a workspace is marked
    as starting in it: a lab is never removed under a workspace on its way in."""
    logs = settings.current().supervisor_logs
    logs.mkdir(parents=True, exist_ok=True)
    return FileLock(str(logs / f"lab-{name}.lock"))


def _starting_mark(lab: str, name: str) -> Path:
    return settings.current().supervisor_logs / f"{lab}-{name}.starting"


def shared_lab(config: Config, starting: str | None = None) -> Lab:
    """The config's persistent lab, created once even when several supervisors start;
    ``starting``: the workspace about to start in it, marked so until ``started``."""
    name = config.network.namespace
    with _lab_lock(name):
        # Day-to-day workspaces get the internet unless the config says no.
        internet = config.network.internet is not False
        lab = Lab(config.network, name, shared=True, die_with_owner=False, internet=internet)
        lab.open()
        lab.detach()
        if starting is not None:
            mark = json.dumps(system.ProcessRef.self().to_json())
            _starting_mark(name, starting).write_text(mark)
    return lab


def started(lab: str, name: str) -> None:
    """``name`` is in the lab's ledger now (running, or it failed): no mark needed."""
    _starting_mark(lab, name).unlink(missing_ok=True)


def _anyone_starting(lab: str) -> bool:
    """Whether a live supervisor marked a workspace as starting in ``lab``."""
    for mark in settings.current().supervisor_logs.glob(f"{lab}-*.starting"):
        try:
            if system.ProcessRef.from_json(json.loads(mark.read_text())).alive():
                return True
        except (OSError, ValueError, IndexError, TypeError):
            pass
        mark.unlink(missing_ok=True)  # its supervisor is gone
    return False


def config_snapshot(config: Config, spec: WorkspaceSpec) -> dict[str, str]:
    """What a running workspace was started from, field by field (each value as JSON): its
    own fields, and what it takes from the defaults and the network."""
    user = config.defaults.user
    fields = {key: json.dumps(value, sort_keys=True) for key, value in spec.to_dict().items()}
    got = config.resolve(spec)
    fields |= {
        "packages": json.dumps(list(got.packages)),
        "files": json.dumps({t: str(p) for t, p in got.files.items()}),
        "setup": json.dumps(list(got.setup)),
        "release": json.dumps(got.release),
        "docs": json.dumps(got.docs),
        "defaults.user": json.dumps([user.name, user.uid, list(user.authorized_keys)]),
        "network": json.dumps([str(config.network.subnet), str(config.network.gateway)]),
    }
    return fields


def config_hash(snapshot: Mapping[str, str]) -> str:
    """A snapshot's fingerprint: a change means a restart is needed."""
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()[:16]


def changed_fields(running: ledger.SupervisorInfo, now: Mapping[str, str]) -> list[str] | None:
    """The fields whose value differs between what ``running`` was started from and the
    config now; [] when none; None when the record cannot say (an older wsfixture's, with
    a fingerprint only, that no longer matches)."""
    if running.config:
        return sorted(k for k in {*running.config, *now} if running.config.get(k) != now.get(k))
    return [] if running.config_hash == config_hash(now) else None


def restart_reason(changed: list[str] | None) -> str:
    return "needs restart" + (f" ({', '.join(changed)} changed)" if changed else "")


def start_workspace(
    config: Config, name: str, ttl: int | None = None, say: Say | None = None
) -> tuple[bool, str]:
    """Start a supervisor for ``name`` (stopping it after ``ttl`` seconds, if given) and
    wait for its READY/FAILED line; ``say`` gets what it does meanwhile."""
    lab = config.network.namespace
    log = log_path(lab, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "wsfixture.cli.supervisor",
        str(Path(config.source).resolve()),
        name,
        *([str(ttl)] if ttl else []),
    ]
    with open(log, "ab") as stderr:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            start_new_session=True,  # it outlives this command and the terminal
        )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    notes = []
    while line.startswith((PROGRESS, NOTE)):
        if line.startswith(NOTE):
            notes.append(line.removeprefix(NOTE))
        elif say is not None:
            say(line.removeprefix(PROGRESS))
        line = proc.stdout.readline().decode().strip()
    proc.stdout.close()
    if line.startswith(READY):
        return True, "; ".join([f"ready in {line.removeprefix(READY)}s", *notes])
    # A failed one releases what it made first: within a boot's time, at most.
    proc.wait(backend_class(config.workspaces[name].type).ready_timeout)
    why = line.removeprefix(FAILED) if line.startswith(FAILED) else ""
    return False, why or f"supervisor exited; see {log}"


def stop_supervised(record: ledger.Record, timeout: float = 60.0) -> None:
    """Stop the supervised workspace of ``record``: ask its supervisor, force it if it
    will not."""
    record.owner.signal(signal.SIGTERM)
    if retry_until(lambda _: None if record.path.exists() else True, timeout, 0.1) is None:
        record.owner.signal(signal.SIGKILL)
        failures = ledger.release(record)
        if failures:
            raise CleanupError(failures)


def remove_lab_if_idle(lab: str) -> bool:
    """Remove the persistent lab when none of its workspaces runs or is starting; True if
    it was removed. ``down`` calls it, and a supervisor whose workspace stopped by itself
    (its ttl, its idle timeout): the lab goes with its last workspace."""
    with _lab_lock(lab):
        record = ledger.lab_record(lab)
        if record is None or ledger.workspaces(lab, live=True) or _anyone_starting(lab):
            return False
        failures = ledger.release(record)
    if failures:
        raise CleanupError(failures)
    return True


def status_rows(config: Config) -> list[dict[str, Any]]:
    live = ledger.workspaces(config.network.namespace, live=True)
    rows = []
    for name, spec in config.workspaces.items():
        record = live.get(name)
        resources = config.resources_for(spec)
        row: dict[str, Any] = {
            "name": name, "type": spec.type, "ip": str(spec.ip),
            "limits": {**limits.describe(resources), "summary": limits.summary(resources)},
            "forwards": " ".join(f"127.0.0.1:{local}->{port}" for local, port in spec.forwards),
        }  # fmt: skip
        supervisor = ledger.workspace_info(record).supervisor if record else None
        if record is not None:  # what the OOM killer ended under its memory bound
            cgroup = settings.current().cgroup_root / f"{config.network.namespace}-{name}"
            row["limits"]["oom_kills"] = limits.oom_kills(cgroup)
        if record is None:
            row.update(state="stopped", uptime=None, matches=None, changed=[], stops=None)
        else:
            started = supervisor.started if supervisor else time.time()
            changed = (
                changed_fields(supervisor, config_snapshot(config, spec)) if supervisor else None
            )
            row.update(state="running", uptime=int(time.time() - started),
                       matches=changed == [], changed=changed,
                       stops=stops_in(supervisor) if supervisor else None)  # fmt: skip
        rows.append(row)
    return rows


def stops_in(info: ledger.SupervisorInfo, now: float | None = None) -> str | None:
    """When the supervisor will stop it, for `status`: "in 4m12s (ttl)", "in 29m (idle)",
    "idle timer: a session is open"; None without ttl or idleTimeout."""
    now = time.time() if now is None else now
    due = []
    if info.stop_at is not None:
        due.append((info.stop_at - now, "ttl"))
    if info.idle_timeout is not None and info.idle_since is not None:
        due.append((info.idle_since + info.idle_timeout - now, "idle"))
    if due:
        seconds, why = min(due)
        minutes, rest = divmod(max(int(seconds), 0), 60)
        return f"in {f'{minutes}m' if minutes else ''}{rest}s ({why})"
    if info.idle_timeout is not None:
        return "idle timer: a session is open"
    return None


def handle_on_running(
    config: Config, name: str, handle: type[Workspace] | None = None
) -> Workspace:
    """A handle (a ``Workspace``, or of the class given) on CLI workspace ``name``,
    running under its supervisor: pinned SSH only; its ``stop()`` closes the connection
    and leaves the workspace running."""
    lab = Lab(config.network, config.network.namespace, shared=True).open()
    return (handle or Workspace)(config.workspaces[name], config, lab)._attach()


def own_command() -> list[str]:
    """How to run this very wsfixture again: its script by absolute path, or (run as a
    module) this Python with -m; an alias then works after ``deactivate`` too."""
    script = Path(sys.argv[0]).resolve()
    if script.name == "wsfixture" and script.exists():
        return [str(script)]
    return [sys.executable, "-m", "wsfixture.cli"]


def alias_lines(config: Config, shell: str) -> list[str]:
    """``workspace_<name>`` (ssh) and its _start/_stop/_restart/_status, for a shell."""
    base = f"{shlex.join(own_command())} -c {shlex.quote(str(Path(config.source).resolve()))}"
    lines = []
    for name in config.workspaces:
        ssh, start, stop, restart, status = derive.alias_names(name)
        commands = {
            ssh: f"{base} ssh {name}",
            start: f"{base} up {name}",
            stop: f"{base} down {name}",
            restart: f"{base} restart {name}",
            status: f"{base} status {name}",
        }
        for alias, command in commands.items():
            if shell == "fish":
                lines.append(f"alias {alias} {shlex.quote(command)}")
            else:
                lines.append(f"alias {alias}={shlex.quote(command)}")
    return lines


def publish(lab_name: str, name: str, info: ledger.SupervisorInfo) -> None:
    """What `status` and the other commands read of a supervisor (its timers, a pause),
    into the workspace's record."""
    record = ledger.workspaces(lab_name, live=True).get(name)
    if record is not None:
        record.update(dataclasses.replace(ledger.workspace_info(record), supervisor=info))
