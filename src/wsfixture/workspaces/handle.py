"""The workspace handle: the same for containers and VMs, its life (``start``, ``stop``)
``workspaces.machine``'s, and here what a test or a script says to it: ``run`` (and
``succeed``, ``fail``, the ``wait_*`` family over it, ``workspaces.commands``), ``put``,
``get``, ``spawn``, ``forward``, checkpoints, power, ``logs``, ``host`` (a testinfra Host)
and ``conn`` (a fabric Connection).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import fabric
import testinfra.host

from wsfixture.copying import Copied
from wsfixture.host import system
from wsfixture.image import osinfo
from wsfixture.net import egress as egress_rules
from wsfixture.net.forward import PortForward
from wsfixture.process import JOBS_COMMAND, Process, read_jobs
from wsfixture.remote import PinnedConnection, host_over
from wsfixture.workspaces import guardrails
from wsfixture.workspaces.checkpoint_store import Checkpoint
from wsfixture.workspaces.commands import (
    COMMAND_TIMEOUT_DEFAULT,
    OWN_COMMAND_TIMEOUT,
    Commands,
    Timeout,
    shell_line,
)
from wsfixture.workspaces.machine import Machine
from wsfixture.workspaces.nixos import NixosMachine


class Workspace(Machine, Commands):
    """One workspace: booted by ``start()``, released by ``stop()``, and what a test or a
    script says to it (``run``, ``succeed``, ``put``, ``checkpoint``, ``host``, ...)."""

    def run(
        self,
        command: str,
        timeout: Timeout = COMMAND_TIMEOUT_DEFAULT,
        max_output: int | None = None,
        probe: bool = False,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
    ) -> tuple[int, str, str]:
        """Run a shell command as the workspace user; return (rc, stdout, stderr).

        ``env``: variables exported for it; ``cwd``: the directory it runs in; ``user``:
        another user it runs as (``"root"`` too), through doas. ``timeout``: seconds, None
        for none, or (left out) the handle's ``command_timeout``. Past it, or past
        ``max_output`` bytes on a stream (64 MiB unless given), the command's process
        group is killed in the workspace and CommandTimeout or CommandError says so.
        """
        seconds = self.command_timeout if timeout is COMMAND_TIMEOUT_DEFAULT else timeout
        line = shell_line(command, env, cwd, user)
        rc, out, err = self._session().run(line, seconds, max_output, probe)
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def port_open(self, port: int) -> bool:
        return self.lab.port_open(self.ip, port)

    def forward(self, port: int, local: int = 0) -> tuple[str, int]:
        """Relay ``127.0.0.1:<local>`` on the host (a free port unless given) to ``port`` of
        the workspace, until the workspace stops; return the host side's (address, port).
        ``requests.get(f"http://{host}:{port}/")`` then reaches a server inside."""
        self._session()  # a running workspace only
        forward = PortForward(self.lab, self.ip, port, local)
        self._forwards.append(forward)
        return forward.address

    def put(self, local: str | Path, remote: str, recursive: bool = False) -> Copied:
        """Copy a host file (a directory with ``recursive``) to ``remote`` in the workspace
        (SFTP over the pinned session); it is the workspace user's there."""
        return self._session().put(Path(local), remote, recursive)

    def get(
        self, remote: str, local: str | Path, recursive: bool = False, max_bytes: int | None = None
    ) -> Copied:
        """Copy a file of the workspace (a directory with ``recursive``) to ``local`` on the
        host. The guest's side is hostile: a link at ``local`` is replaced, not written
        through; a file is read up to its size (or ``max_bytes``); CopyError otherwise."""
        return self._session().get(remote, Path(local), recursive, max_bytes)

    def spawn(
        self, command: str, *, env: Mapping[str, str] | None = None, cwd: str | None = None,
        user: str | None = None,
    ) -> Process:  # fmt: skip
        """Start ``command`` detached (its own session, output to a file; ``env``, ``cwd``,
        ``user`` as ``run``'s) and return at once: ``.wait()``, ``.kill()``, ``.output()``,
        ``.running``."""
        return Process.start(self._session(), shell_line(command, env, cwd, user), command)

    # -- checkpoints and faults (``checkpointing``, ``power``) ----------------------------

    def checkpoint(self, tag: str | None = None) -> Checkpoint:
        """Save the workspace's root (a VM's memory and devices too) as ``tag``
        (``checkpoint-<n>`` if not given). CheckpointError, with nothing changed, for a
        bad or taken tag or a machine that cannot be saved."""
        return self._checkpointing.make(tag)

    def rollback(self, to: str | Checkpoint) -> None:
        """Return the workspace's root (a VM's memory and devices too) to checkpoint
        ``to`` (its tag, or what ``checkpoint`` returned) and wait until it is ready."""
        self._checkpointing.rollback(to)

    def checkpoints(self) -> list[Checkpoint]:
        """This workspace's checkpoints, oldest first."""
        return self._checkpointing.listed()

    def delete_checkpoint(self, to: str | Checkpoint) -> None:
        """Remove a checkpoint (its disk layer stays while a later one stands on it)."""
        self._checkpointing.delete(to)

    @property
    def paused(self) -> bool:
        return self._power.paused

    def pause(self) -> None:
        """Stop every process of the workspace where it stands, until ``resume``."""
        self._power.pause()

    def resume(self) -> None:
        """Let a paused workspace go on; its processes are the same processes."""
        self._power.resume()

    def crash(self) -> None:
        """Cut the power: the machine ends at once, no shutdown inside. The handle is
        stopped; ``start()`` again boots it anew, with the same name, address and key."""
        self._power.crash()

    def clock_offset(self, seconds: float) -> None:
        """Set a VM's wall clock ``seconds`` ahead of the host's (behind, if negative; 0
        puts it back). FaultError for a container: it shares the host kernel's clock."""
        self._power.clock_offset(seconds)

    def jobs(self) -> list[Process]:
        """The commands started detached in it (``spawn``, ``wsfixture exec --detach``),
        oldest first, each with its state then (``.listed``: running, exit N, killed;
        ``.poll()`` asks anew); a rollback or a restart takes
        them, and their output, with the machine's /tmp."""
        session = self._session()
        _, out, _ = session.run(JOBS_COMMAND, OWN_COMMAND_TIMEOUT, None, True)
        return [Process(session, job.command, job.pid, job.directory, job.state)
                for job in read_jobs(out.decode(errors="replace"))]  # fmt: skip

    def egress(self) -> egress_rules.Record | None:
        """What its allowlist let through and refused: the names that resolved (and their
        addresses), and every refused connection and name, oldest first (``net.egress``).
        None: it has no allowlist."""
        if (allowed := self._allowlist) is None:
            return None
        return guardrails.egress_record(self.lab, self.spec, allowed, self._runtime_dir)

    def out_of_memory(self) -> str | None:
        """What a report says once the OOM killer ended one of its processes: "killed: out
        of memory (memory = 512 MiB)"; None until then."""
        return guardrails.oom_note(self._backend) if self._backend is not None else None

    def logs(self, lines: int = 200) -> str:
        """The tail of the console log."""
        return system.tail(self.console_log, lines)

    @functools.cached_property
    def host(self) -> testinfra.host.Host:
        """A testinfra Host over the pinned SSH session (``host.sudo()`` uses the config's
        ``privilege``, doas by default). It knows the system (``host.system_info``) from
        the image, without asking the guest."""
        return self._testinfra_host(None)

    def host_as(self, user: str = "root") -> testinfra.host.Host:
        """A testinfra Host whose every command runs as ``user`` through the config's
        ``privilege`` tool: a suite written for a root login, as one (a root login itself
        stays refused)."""
        return self._testinfra_host(user)

    def _testinfra_host(self, as_user: str | None) -> testinfra.host.Host:
        session = self._session()
        image = self._backend.image if self._backend is not None else None
        info = osinfo.system_info(image) if image else None
        return host_over(session, info, self.config.defaults.privilege, as_user)

    @functools.cached_property
    def nixos(self) -> NixosMachine:
        """The NixOS test driver's ``Machine`` verbs over this workspace, with its semantics
        (root, bash, ``set -euo pipefail``, 900 s): ``machine = ws.nixos`` and a
        ``testScript`` runs as written."""
        return NixosMachine(self)

    @functools.cached_property
    def conn(self) -> fabric.Connection:
        """A fabric Connection over the pinned SSH session."""
        return PinnedConnection(self._session())

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.spec.type,
            "release": self.config.resolve(self.spec).release,
            "ip": self.ip,
            "lab": self.lab.name,
            "running": self.is_running,
            "ready_seconds": self.ready_seconds,
            **(self._backend.describe() if self._backend else {}),
        }
