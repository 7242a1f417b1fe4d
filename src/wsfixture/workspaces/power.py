"""A running workspace's power and clock: ``pause`` and ``resume`` (every process stops
where it stands and goes on as the same process: a container's cgroup frozen, a VM's vCPUs
stopped), ``crash`` (a power cut: nothing inside is told; the handle is then stopped, and
``start()`` boots it again with the same name, address and host key), and a VM's
``clock_offset`` (its wall clock set that far from the host's; a container has none of its
own: it shares the host kernel's).

While a workspace is paused, a command sent to it fails at once with WorkspacePaused
(its SSH session refuses, testinfra's and fabric's included): it would only hang.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from wsfixture.errors import CommandError, FaultError, WorkspaceGone, WorkspacePaused
from wsfixture.model.config import WorkspaceSpec
from wsfixture.workspaces.commands import OWN_COMMAND_TIMEOUT
from wsfixture.workspaces.states import WorkspaceState

if TYPE_CHECKING:
    from wsfixture.backends.base import Backend
    from wsfixture.remote import SshSession


class PowerOwner(Protocol):
    """What ``Power`` reads of the handle it is a part of."""

    spec: WorkspaceSpec
    state: WorkspaceState
    _backend: Backend | None
    _ssh: SshSession | None

    @property
    def name(self) -> str: ...

    def stop(self, discard: bool | None = None) -> None: ...


class Power:
    """The power and clock of ``ws``, a part of its handle (``ws._power``); the handle's
    ``pause``, ``resume``, ``crash`` and ``clock_offset`` are these."""

    def __init__(self, ws: PowerOwner) -> None:
        self.ws = ws

    @property
    def paused(self) -> bool:
        session = self.ws._ssh
        return session is not None and session.refusal is not None

    def pause(self) -> None:
        """Stop every process of the workspace where it stands, until ``resume``."""
        backend, session = self._powered("pause")
        if session.refusal is None:
            backend.pause()
            session.refusal = WorkspacePaused(self.ws.name)

    def resume(self) -> None:
        """Let a paused workspace go on; its processes are the same processes."""
        backend, session = self._powered("resume")
        if session.refusal is not None:
            backend.resume()
            session.refusal = None

    def crash(self) -> None:
        """Cut the power: the machine ends at once, no shutdown inside (what it had not
        written out is lost, as it would be). The handle is stopped; ``start()`` again
        boots it anew, with the same name, address and host key."""
        backend, session = self._powered("crash")
        session.refusal = None
        backend.power_cut()
        self.ws.stop(discard=True)

    def clock_offset(self, seconds: float) -> None:
        """Set a VM's wall clock ``seconds`` ahead of the host's (behind, if negative; 0
        puts it back); it runs on from there. FaultError for a container."""
        if not self.ws.spec.is_vm:
            raise FaultError("clock_offset", f"for container {self.ws.name}",
                             "a VM: a container shares the host kernel's wall clock")  # fmt: skip
        _, session = self._powered("set the clock of")
        command = f"doas -n date -u -s @{time.time() + seconds:.3f}"
        rc, out, err = session.run(command, OWN_COMMAND_TIMEOUT, None, False)
        if rc != 0:
            raise CommandError(self.ws.name, command, rc, out.decode(), err.decode())

    def _powered(self, verb: str) -> tuple[Backend, SshSession]:
        ws = self.ws
        if ws._backend is None or ws._ssh is None or ws.state is not WorkspaceState.OWNED:
            raise WorkspaceGone(ws.name, f"cannot {verb}: this handle does not run it")
        return ws._backend, ws._ssh
