"""The sandboxes ``wsfixture serve`` runs: each one a workspace in the server's own lab,
shaped as a workspace of the config (its *template*), with what E2B says of a sandbox
beside it (metadata, environment, an end time, an access token for its envd calls).

A sandbox past its end time is killed by the reaper thread; the lab's workspaces go with
the server, and a killed server's with ``wsfixture gc`` (the lab is an ordinary one)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import secrets
import threading
from collections.abc import Mapping

from wsfixture import api
from wsfixture.serve.commands import Command, Spec
from wsfixture.serve.refusals import BadRequest, NotFound, TooMany
from wsfixture.serve.watch import Watcher
from wsfixture.workspaces import Workspace

BASE_TEMPLATE = "base"  # a container of the config's defaults, as E2B's own "base"
DEFAULT_TIMEOUT = 300  # seconds, E2B's default
MAX_TIMEOUT = 24 * 3600
REAP_EVERY = 1.0  # seconds between the reaper's looks
MAX_COMMANDS = 256  # running in one sandbox: each is a channel and a thread on the host
ENVD_VERSION = "0.5.7"  # envd features served: stdin and its closing, a default user


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass
class Sandbox:
    id: str
    template: str
    workspace: Workspace
    access_token: str
    started_at: datetime.datetime
    end_at: datetime.datetime
    metadata: dict[str, str]
    envs: dict[str, str]
    auto_pause: bool = False  # past its end time: paused (E2B's autoPause), else killed
    paused: bool = False
    commands: dict[int, Command] = dataclasses.field(default_factory=dict)
    watchers: dict[str, Watcher] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def start_command(self, spec: Spec, stdin: bool) -> Command:
        """``spec`` started with the sandbox's environment under its own; listed until it
        ends. The caller subscribes, then calls ``begin``."""
        spec = dataclasses.replace(spec, envs={**self.envs, **spec.envs})
        if len(self.running()) >= MAX_COMMANDS:
            raise TooMany(f"sandbox {self.id} runs {MAX_COMMANDS} commands already")
        command = Command.start(self.workspace._session().client(), spec, stdin)
        with self.lock:
            self.commands[command.pid] = command
        return command

    def ended(self, command: Command) -> None:
        with self.lock:
            if self.commands.get(command.pid) is command:
                del self.commands[command.pid]

    def command(self, pid: int) -> Command:
        with self.lock:
            command = self.commands.get(pid)
        if command is None:
            raise NotFound(f"process with pid {pid} not found")
        return command

    def running(self) -> list[Command]:
        with self.lock:
            return list(self.commands.values())


class Sandboxes:
    """The server's sandboxes, by id, ``most`` at once; ``close`` kills them all."""

    def __init__(self, lab: api.Lab, most: int) -> None:
        self.lab = lab
        self.most = most
        self._sandboxes: dict[str, Sandbox] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="e2b-reaper", daemon=True)
        self._reaper.start()

    def templates(self) -> list[str]:
        return [BASE_TEMPLATE, *self.lab.config.workspaces]

    def reaches_internet(self, template: str) -> bool:
        """Whether a sandbox of ``template`` has any way out (open, or an allowlist)."""
        config = self.lab.config
        return config.internet_for(config.workspaces.get(template)) not in (None, False)

    def create(
        self, template: str, timeout: object, metadata: Mapping[str, str],
        envs: Mapping[str, str], auto_pause: bool = False,
    ) -> Sandbox:  # fmt: skip
        """A new sandbox of ``template``, started and ready. BadRequest naming the field
        for a template the config has not, or a timeout out of range; nothing is made."""
        if template not in self.templates():
            raise BadRequest(f"templateID: no template {template!r}; the templates are: "
                             f"{', '.join(self.templates())}")  # fmt: skip
        seconds = check_timeout(timeout)
        if len(self.listed()) >= self.most:
            raise TooMany(f"{self.most} sandboxes run already (serve --max-sandboxes)")
        sid = "sb" + secrets.token_hex(6)
        like = None if template == BASE_TEMPLATE else template
        ws = self.lab.workspace(sid, like=like)
        now = utcnow()
        sandbox = Sandbox(
            sid, template, ws, secrets.token_urlsafe(24), now,
            now + datetime.timedelta(seconds=seconds), dict(metadata), dict(envs), auto_pause,
        )  # fmt: skip
        with self._lock:
            self._sandboxes[sid] = sandbox
        return sandbox

    def get(self, sid: str) -> Sandbox:
        with self._lock:
            sandbox = self._sandboxes.get(sid)
        if sandbox is None:
            raise NotFound(f"sandbox {sid!r} not found")
        return sandbox

    def listed(self) -> list[Sandbox]:
        with self._lock:
            return sorted(self._sandboxes.values(), key=lambda s: s.started_at)

    def set_timeout(self, sid: str, timeout: object) -> None:
        """The sandbox ends ``timeout`` seconds from now."""
        seconds = check_timeout(timeout)
        sandbox = self.get(sid)
        sandbox.end_at = utcnow() + datetime.timedelta(seconds=seconds)

    def pause(self, sid: str) -> bool:
        """Stop every process of the sandbox where it is (a container's cgroup frozen, a
        VM's vCPUs stopped): its memory, files and processes wait for ``resume``, and its
        end time no longer runs. False if it was paused already."""
        sandbox = self.get(sid)
        with sandbox.lock:
            if sandbox.paused:
                return False
            for watcher in sandbox.watchers.values():
                watcher.stop()
            sandbox.watchers.clear()
            sandbox.workspace.pause()
            sandbox.paused = True
        return True

    def resume(self, sid: str, timeout: object = DEFAULT_TIMEOUT) -> bool:
        """Let a paused sandbox go on, ending ``timeout`` seconds from now. False if it
        was running."""
        seconds = check_timeout(timeout)
        sandbox = self.get(sid)
        with sandbox.lock:
            if not sandbox.paused:
                return False
            sandbox.workspace.resume()
            sandbox.paused = False
            sandbox.end_at = utcnow() + datetime.timedelta(seconds=seconds)
        return True

    def kill(self, sid: str) -> None:
        """Stop the sandbox's workspace and forget it."""
        with self._lock:
            sandbox = self._sandboxes.pop(sid, None)
        if sandbox is None:
            raise NotFound(f"sandbox {sid!r} not found")
        for watcher in list(sandbox.watchers.values()):
            watcher.stop()
        sandbox.workspace.stop()
        self.lab.workspaces.remove(sandbox.workspace)

    def _reap(self) -> None:
        while not self._closing.wait(REAP_EVERY):
            now = utcnow()
            for sandbox in self.listed():
                if sandbox.end_at <= now and not sandbox.paused:
                    with contextlib.suppress(NotFound):  # killed by a client meanwhile
                        if sandbox.auto_pause:
                            self.pause(sandbox.id)
                        else:
                            self.kill(sandbox.id)

    def close(self) -> None:
        """Stop the reaper and every sandbox (the lab closes them)."""
        self._closing.set()
        self._reaper.join(timeout=10)
        with self._lock:
            self._sandboxes.clear()


def check_timeout(timeout: object) -> int:
    """``timeout`` as seconds, if it is a whole number in range; BadRequest otherwise."""
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout <= MAX_TIMEOUT:
        raise BadRequest(f"timeout: {timeout!r} is not a number of seconds from 1 to "
                         f"{MAX_TIMEOUT}")  # fmt: skip
    return timeout
