"""A workspace's life, the same for containers and VMs: what it is made of (its backend, its
SSH session, its runtime directory, its ledger record) and its states, from ``start()``
(boot, then wait until the address answers, sshd listens and one SSH command succeeds with
the pinned host key) to ``stop()`` (release everything). As a context manager it stops what
it started, also when start fails half way. The verbs a test or a script uses are the
handle's (``workspaces.handle``), over this.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from wsfixture.backends import backend_class
from wsfixture.backends.base import Backend, BackendContext
from wsfixture.cleanup import Cleanup
from wsfixture.errors import CleanupError, ReadyTimeout, StartError, WorkspaceGone
from wsfixture.guest import identity
from wsfixture.host import keys, ledger, logcap, settings, system
from wsfixture.image.build import Progress
from wsfixture.model.config import Config, WorkspaceSpec
from wsfixture.model.validation import check_share_sources
from wsfixture.net import allowlisted
from wsfixture.net.forward import PortForward
from wsfixture.net.lab import Lab
from wsfixture.remote import SSH_PORT, SshSession
from wsfixture.retry import POLL_INTERVAL, retry_until
from wsfixture.workspaces import guardrails
from wsfixture.workspaces.checkpoints import Checkpointing
from wsfixture.workspaces.power import Power
from wsfixture.workspaces.prepare import prepare
from wsfixture.workspaces.states import WorkspaceState

logger = logging.getLogger("wsfixture.workspace")
# How often a start knocks on sshd's port: a refused or unreachable knock costs the host a
# connect in the lab and the guest nothing, and a container's sshd is up ~0.3 s into its
# start, so a 50 ms poll left it waiting ~25 ms on average. A failed login, which costs
# the guest a forked session, is tried again at the usual pace (``retry.POLL_INTERVAL``).
PORT_POLL_INTERVAL = 0.01


class Machine:
    """What a workspace is made of and its life: booted by ``start()``, released by
    ``stop()``; the handle (``Workspace``) adds the verbs."""

    def __init__(
        self,
        spec: WorkspaceSpec,
        config: Config,
        lab: Lab,
        *,
        timeout: float | None = None,
        progress: Progress | None = None,
        die_with_owner: bool = True,
        supervisor: ledger.SupervisorInfo | None = None,
        command_timeout: float | None = None,
        overcommit: bool | None = None,
        discard_at_stop: bool = False,
    ) -> None:
        self.spec = spec
        self.config = config
        self.lab = lab
        self.timeout = timeout or backend_class(spec.type).ready_timeout
        self._progress = progress
        self._die_with_owner = die_with_owner
        self._supervisor = supervisor  # a CLI workspace: what it was started from
        self.command_timeout = command_timeout  # run()'s default; None: commands may run on
        # May it take more memory than the host has available? (None: the config says.)
        self._overcommit = config.defaults.overcommit if overcommit is None else overcommit
        # What ``stop()`` does unless told: discard (see ``stop``) a workspace whose state
        # goes with it (a throwaway ``api.Lab``'s), as the pytest plugin does its tests'.
        self.discard_at_stop = discard_at_stop
        self.state_dir = config.state_dir(spec.name)
        self._runtime_dir = lab.dir / spec.name
        self._backend: Backend | None = None
        self._ssh: SshSession | None = None
        self._started_at: float | None = None
        self.ready_seconds: float | None = None
        self.stop_seconds: float | None = None
        self._record: ledger.Record | None = None
        self.state = WorkspaceState.NEW
        self._online = False  # whether it may use its lab's internet (decided at launch)
        # Its own resolver, where an allowlist holds it (``net.egress``).
        self._egress_resolver: subprocess.Popen[bytes] | None = None
        self._forwards: list[PortForward] = []
        # The logs its guest writes, held to settings.log_max while this handle owns it.
        self._log_cap: logcap.LogCap | None = None
        self._stop_hooks: list[Callable[[], None]] = []
        self._checkpointing = Checkpointing(self)  # where checkpoints are kept, and how
        self._power = Power(self)  # pause, resume, crash, the clock

    # -- identity ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ip(self) -> str:
        return str(self.spec.ip)

    @property
    def user(self) -> str:
        return self.config.defaults.user.name

    @property
    def console_log(self) -> Path:
        return self._runtime_dir / settings.CONSOLE_LOG

    @property
    def _allowlist(self) -> tuple[str, ...] | None:
        return guardrails.allowlist_of(self.config, self.spec)

    def __repr__(self) -> str:
        return f"<Workspace {self.name} {self.spec.type} {self.ip} in lab {self.lab.name}>"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Boot the workspace and wait until it is ready; raise StartError/ReadyTimeout.

        When it fails half way, whatever was started is released before the error goes on.
        """
        try:
            self._launch()
            self._wait_ready()
        except BaseException as exc:
            try:
                # No orderly shutdown of a machine that never became ready: a VM half way
                # through its boot ignores the ACPI button, and a Ctrl-C would wait for it.
                self._release(orderly=False)
            except CleanupError as cleanup:
                exc.add_note(str(cleanup))
            raise
        return self

    def _launch(self) -> None:
        """Everything up to the machine running; does not wait for it to boot (then
        ``wait_ready()``: several launched first boot side by side). On failure, call
        ``stop()`` to release what was made (``start()`` does). Any thread may call it:
        the machine lives until it is stopped or this process ends."""
        system.require_root()
        if self.state not in (WorkspaceState.NEW, WorkspaceState.STOPPED):
            raise StartError(self.name, f"this handle is {self.state.value} already")
        check_share_sources(self.config, self.spec)  # before anything is made
        self.lab.ensure_free(self.name, self.ip)
        self._online = self.lab.check_internet(self.name, self.spec.internet)
        guardrails.admit(self.config, self.spec, self._overcommit)
        self.state = WorkspaceState.OWNED
        self._record = ledger.Record.create(
            f"ws-{self.lab.name}-{self.name}",
            ledger.WorkspaceInfo(
                self.name, self.lab.name, self.spec.type, supervisor=self._supervisor
            ),
        )
        self._boot(self._record)

    def _boot(self, record: ledger.Record) -> None:
        ready = prepare(self.config, self.spec, self._progress)
        self.lab.set_client_key(ready.client.private)
        record.add_dir(self._runtime_dir)
        system.private_dir(self._runtime_dir)
        host = ready.lab_host
        info = ledger.workspace_info(record)
        record.update(dataclasses.replace(info, ip=host.ip, user=host.user, host_key=host.host_key))
        self.lab.add_host(host, online=self._online)
        self._log_cap = logcap.LogCap([self.console_log], settings.current().log_max).start()
        if (allowed := self._allowlist) is not None and self._online:
            log = self._runtime_dir / settings.EGRESS_LOG
            self._log_cap.watch(log)
            self._egress_resolver = allowlisted.hold(self.lab, self.ip, allowed, record, log)
        ctx = BackendContext(
            config=self.config,
            spec=self.spec,
            lab=self.lab,
            runtime_dir=self._runtime_dir,
            state_dir=self.state_dir,
            record=record,
            provision=lambda root, uid_offset: identity.write(root, ready.identity, uid_offset),
            die_with_owner=self._die_with_owner,
            progress=self._progress,
        )
        self._backend = backend_class(self.spec.type)(ctx, ready.image)
        self._ssh = SshSession(
            self.lab, self.name, self.ip, self.user, ready.client.private, ready.host_public_key
        )
        # Boot time (and the ready timeout) count from here: an image build is not a boot.
        self._started_at = time.monotonic()
        self._backend.start()

    def _wait_ready(self) -> None:
        """Wait for the port, then one SSH command with the pinned key."""
        assert self._backend is not None
        assert self._ssh is not None
        backend, session = self._backend, self._ssh
        state = {"now": "waiting for the machine process"}

        def port_open(last: bool) -> bool | None:
            if (reason := backend.failure()) is not None:
                raise StartError(self.name, reason, system.tail(self.console_log))
            state["now"] = f"{self.ip}:{SSH_PORT} not accepting connections"
            try:
                session.adopt(self.lab.connect(self.ip, SSH_PORT, 0.25))
            except OSError:
                return None
            return True

        def ssh_works(last: bool) -> bool | None:
            try:
                rc, _, _ = session.run("true", probe=True)
            except Exception as exc:
                if (reason := backend.failure()) is not None:
                    raise StartError(self.name, reason, system.tail(self.console_log)) from exc
                state["now"] = f"ssh login failed: {type(exc).__name__}: {exc}"
                session.close()
                return None
            return True if rc == 0 else None

        assert self._started_at is not None
        if self._progress is not None:
            self._progress(f"waiting for sshd on {self.ip} (pinned-key login)")
        reached = []
        for check, interval in ((port_open, PORT_POLL_INTERVAL), (ssh_works, POLL_INTERVAL)):
            remaining = self.timeout - (time.monotonic() - self._started_at)
            if retry_until(check, max(remaining, 0.1), interval) is None:
                awaited = f"sshd on {self.ip}:{SSH_PORT} to accept the pinned-key login"
                raise ReadyTimeout(
                    self.name, awaited, self.timeout, state["now"], system.tail(self.console_log)
                )
            reached.append(f"{check.__name__} at {time.monotonic() - self._started_at:.2f}s")
        self.ready_seconds = time.monotonic() - self._started_at
        logger.debug("%s ready: %s", self.name, ", ".join(reached))

    def stop(self, discard: bool | None = None) -> None:
        """Shut down and release everything; the state directory stays. ``discard``:
        nothing inside is wanted any more but what it wrote to its shares, and the machine
        may be ended without its shutdown once that is out (the pytest plugin's are; a VM's
        shutdown is ~5 s of its CPU under TCG). None: ``discard_at_stop`` says."""
        try:
            self._release(discard=self.discard_at_stop if discard is None else discard)
        finally:
            hooks, self._stop_hooks = self._stop_hooks, []
            for hook in hooks:
                hook()

    def _on_stop(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once, when this handle is stopped (``wsfixture.workspace()``'s lab
        goes with its workspace)."""
        self._stop_hooks.append(hook)

    def _detach(self) -> None:
        """Let the workspace outlive this process: its machine process becomes the owner in
        the ledger, so ``gc`` reaps it only once that process is gone."""
        if self.state is not WorkspaceState.OWNED:
            return
        assert self._record is not None
        assert self._backend is not None
        if self._backend.process is None:
            return
        machine = system.ProcessRef.of(self._backend.process.pid)
        if machine is not None:
            self._record.owner = machine
            self._record.save()
        self._stop_log_cap()  # no process of ours holds its logs now
        if self._ssh is not None:
            self._ssh.close()
        self._record = None
        self._backend = None
        self.state = WorkspaceState.DETACHED

    def _stop_log_cap(self) -> None:
        if self._log_cap is not None:
            self._log_cap.stop()
            self._log_cap = None

    def _release(self, orderly: bool = True, discard: bool = False) -> None:
        cleanup = Cleanup()
        attempt = cleanup.attempt
        attempt("stop holding its logs", self._stop_log_cap)
        if self._power.paused:  # a frozen machine cannot shut down: it goes on first
            attempt("resume it", self._power.resume)
        for forward in self._forwards:
            attempt(f"close {forward!r}", forward.close)
        self._forwards.clear()
        attempt("close ssh", self._drop_session)
        if self._backend is not None:
            backend = self._backend
            started = time.monotonic()
            grace = backend.stop_timeout if orderly else 0.0
            attempt(f"stop {self.spec.type}", lambda: backend.stop(grace, discard))
            self.stop_seconds = time.monotonic() - started
        if self.state is WorkspaceState.OWNED and self._record is not None:
            if (allowed := self._allowlist) is not None and self._egress_resolver is not None:
                resolver = self._egress_resolver
                attempt(
                    "lift its allowlist", lambda: allowlisted.release(self.lab, self.ip, allowed)
                )
                attempt("end its resolver", lambda: system.end_process(resolver))
                self._egress_resolver = None
            attempt("remove lab host", lambda: self.lab.remove_host(self.name))
            cleanup.add(ledger.release(self._record))
        self._record = None
        self._backend = None
        if self.state is not WorkspaceState.DETACHED:
            self.state = WorkspaceState.STOPPED
        cleanup.raise_any()

    def _drop_session(self) -> None:
        """Close the SSH session and forget ``host`` and ``conn``: the next use logs in anew."""
        if self._ssh is not None:
            self._ssh.close()
        self.__dict__.pop("host", None)
        self.__dict__.pop("conn", None)

    def __enter__(self) -> Self:
        """Start it, unless it runs already (``wsfixture.workspace()``, ``connect``)."""
        if self.state in (WorkspaceState.OWNED, WorkspaceState.ATTACHED):
            return self
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def is_running(self) -> bool:
        return self._backend is not None and self._backend.is_up()

    # -- the connection ------------------------------------------------------------------

    def _attach(self) -> Self:
        """Talk to a workspace that another process started (the CLI's): pinned SSH only,
        from the persisted keys; ``stop`` then only closes the connection."""
        host_key = keys.host_key(self.state_dir / "ssh-host-keys", self.name)
        client = keys.client_key(self.config.state_root())
        self._ssh = SshSession(
            self.lab, self.name, self.ip, self.user, client.private, host_key.public_key()
        )
        self.state = WorkspaceState.ATTACHED
        return self

    def _session(self) -> SshSession:
        if self.state not in (WorkspaceState.OWNED, WorkspaceState.ATTACHED):
            raise WorkspaceGone(self.name, f"this handle is {self.state.value}")
        if self._ssh is None:
            raise WorkspaceGone(self.name, "it is still starting")
        if self._backend is not None and not self._backend.is_up():
            # Also when the rest of the machine still answers (a killed nspawn leaves its
            # container running): what this handle manages is gone, say so.
            reason = self._backend.failure() or "the machine process is gone"
            raise WorkspaceGone(self.name, reason, system.tail(self.console_log, 40))
        return self._ssh
