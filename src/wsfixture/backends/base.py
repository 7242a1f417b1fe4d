"""What every backend implements: a small surface; everything else lives in ``Workspace``."""

from __future__ import annotations

import abc
import contextlib
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wsfixture.host import cgroups, freezer, ledger, limits, settings, system
from wsfixture.host import setid_filter as filters
from wsfixture.image import store
from wsfixture.image.recipe import Image
from wsfixture.model import derive
from wsfixture.model.config import Config, WorkspaceSpec
from wsfixture.model.resources import Resources
from wsfixture.model.share_ids import ShareOwners
from wsfixture.model.shares import STANDARD_SHARE_TABLE
from wsfixture.net.lab import Lab


@dataclass
class BackendContext:
    """What a backend gets from the workspace that drives it."""

    config: Config
    spec: WorkspaceSpec
    lab: Lab
    runtime_dir: Path  # ephemeral: removed at stop
    state_dir: Path  # persistent: <state root>/<name>
    record: ledger.Record
    # Writes the shared base into a root directory (a container layer, a VM seed tree),
    # owners shifted by the given offset (a container's user namespace).
    provision: Callable[[Path, int], None]
    # False for workspaces that may outlive this process (kept by pytest, started by the CLI).
    die_with_owner: bool = True
    progress: Callable[[str], None] | None = None  # what takes long (a template's first boot)


class Backend(abc.ABC):
    """Starts, watches and stops one workspace's machine."""

    kind: str = ""
    ready_timeout: float = 60.0  # start to ready, unless the workspace is given one
    stop_timeout: float = 10.0  # an orderly shutdown, before the machine is killed

    def __init__(self, ctx: BackendContext, image: Image) -> None:
        self.ctx = ctx
        self.image = image
        self.console_log = ctx.runtime_dir / settings.CONSOLE_LOG
        self.process: subprocess.Popen[bytes] | None = None
        # Every process ``spawn`` started (the machine, its share daemons, its owner
        # watch), by the cgroup it runs in: reaped by ``reap_spawned`` once that is killed.
        self.spawned: list[tuple[Path, subprocess.Popen[bytes]]] = []
        # The machine and its helpers, so cgroup.kill can end them all.
        self.cgroup = settings.current().cgroup_root / f"{ctx.lab.name}-{ctx.spec.name}"
        self.resources = ctx.config.resources_for(ctx.spec)
        # Where ``cgroup``'s limits are on a hybrid host (``host.limits``): its processes
        # join these v1 cgroups too.
        self.limit_dirs: list[Path] = []

    def shares(self) -> list[tuple[str, Path, str, bool]]:
        """(tag, host dir, guest path, read-only): the seed's three standard directories
        under ``<state root>/<name>``, then the spec's extra shares."""
        user = self.ctx.config.defaults.user.name
        standard = [
            (s.tag, self.ctx.state_dir / s.tag, s.target(user), s.read_only)
            for s in STANDARD_SHARE_TABLE
        ]
        extra = [
            (f"share{i}", s.source.expanduser(), s.target, s.read_only)
            for i, s in enumerate(self.ctx.spec.shares)
        ]
        return standard + extra

    def share_owners(self, source: Path) -> ShareOwners:
        """Whose a rw share's files are on each side: its source's owner and the workspace
        user (whose uid is also its gid)."""
        owner = source.stat()
        uid = self.ctx.config.defaults.user.uid
        return ShareOwners.of(owner.st_uid, owner.st_gid, uid, uid)

    @abc.abstractmethod
    def start(self) -> None:
        """Launch the machine; return without waiting for it to boot."""

    @abc.abstractmethod
    def stop(self, timeout: float, discard: bool = False) -> None:
        """Orderly shutdown within ``timeout``, then force; release what start made.
        ``discard``: nothing inside is wanted any more but what it wrote to its shares (a
        test's workspace): the machine may be ended without its shutdown once that is out."""

    # -- checkpoints (``workspace.checkpoints``) -------------------------------------------

    def checkpoint_blocker(self) -> str | None:
        """Why this machine cannot be checkpointed; None if it can."""
        return None

    def image_build(self) -> str:
        """Which build of its image it runs: the key and when that build was finished (an
        image removed and built again under the same key is another build)."""
        return f"{self.image.recipe.key}@{store.ready_stamp(self.image.dir).strip()}"

    def checkpoint_shape(self) -> str:
        """What a checkpoint of it can be restored into: the same again, or no rollback."""
        return self.image_build()

    @abc.abstractmethod
    def checkpoint(self, into: Path, final: Path, seq: int, commit: Callable[[], None]) -> str:
        """Save the running machine's root (a VM's memory and devices too) into ``into``,
        a directory the caller renames to ``final``; call ``commit`` once what runs
        stands on it. Returns how long its steps took, for the debug log."""

    @abc.abstractmethod
    def rollback(self, chain: list[Path], shape: str) -> str:
        """Return the machine to the checkpoint ``chain[0]`` (``chain``: it and those it
        stands on, newest first), made for ``shape``; it is booting or running when this
        returns. Returns how long its steps took."""

    def say(self, line: str) -> None:
        """Tell whoever watches the start (``progress``) what it is doing now."""
        if self.ctx.progress is not None:
            self.ctx.progress(line)

    def guard_port(self, ifname: str) -> None:
        """The machine's bridge port admits only its own MAC and address (``net.guard``)."""
        self.ctx.lab.guard_port(ifname, derive.mac(self.ctx.spec.name), str(self.ctx.spec.ip))

    def pause(self) -> None:
        """Stop every process of the machine where it stands (a container's cgroup
        frozen; a VM's vCPUs stopped, ``Qemu`` says how)."""
        freezer.freeze(self.ctx.spec.name, self.cgroup)

    def resume(self) -> None:
        freezer.thaw(self.cgroup)

    def power_cut(self) -> None:
        """End the machine at once, as a cut power cord would: every process of its cgroup
        killed, nothing inside told. ``stop`` then releases the rest."""
        cgroups.kill(str(self.cgroup))
        if self.process is not None:
            self.process.wait(10)

    def is_up(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def failure(self) -> str | None:
        """Why the machine is gone, if it is gone; None while it runs."""
        if self.process is None:
            return "not started"
        rc = self.process.poll()
        return None if rc is None else f"{self.kind} process exited with status {rc}"

    def describe(self) -> dict[str, object]:
        """Facts for status and reports."""
        return {
            "kind": self.kind,
            "pid": self.process.pid if self.process else None,
            "limits": self.limit_facts(),
        }

    def spawn(
        self,
        argv: list[str],
        cgroup: Path,
        log: Path,
        env: dict[str, str] | None = None,
        record: ledger.Record | None = None,
        pass_fds: tuple[int, ...] = (),
        setid_filter: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a process as our child, in ``cgroup``, listed in ``record`` (the
        workspace's by default); it gets SIGTERM when we die, unless the workspace is meant
        to outlive us. ``setid_filter``: a strength of ``host.setid_filter`` to run it under."""
        record = record or self.ctx.record
        record.add_cgroup(cgroup)
        cgroup.mkdir(parents=True, exist_ok=True)
        # setpriv sets the parent-death signal and execs the machine: one process
        # throughout, so the PID we record is the machine's.
        if self.ctx.die_with_owner:
            argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
        also = self.limit_dirs if cgroup == self.cgroup else []
        with open(log, "ab") as output:
            process = system.popen_lasting(
                system.in_cgroup(cgroup, argv, also),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # a Ctrl-C meant for pytest is not meant for them
                pass_fds=pass_fds,
                preexec_fn=filters.installer(setid_filter) if setid_filter else None,
            )
        self.spawned.append((cgroup, process))
        ref = system.ProcessRef.of(process.pid)
        if ref is not None:
            record.add_process(ref)
        return process

    def enforce(self, resources: Resources) -> None:
        """Put ``resources``' limits on the machine's cgroup before anything runs in it;
        the v1 cgroups they need are in the ledger record first, for ``gc``."""
        for directory in limits.v1_dirs(self.cgroup, resources):
            self.ctx.record.add_cgroup(directory)
        self.limit_dirs = limits.apply(self.cgroup, resources)

    def limit_facts(self) -> dict[str, object]:
        """What the machine may use, for ``describe``: its limits, and how many of its
        processes the OOM killer ended."""
        return {**limits.describe(self.resources), "oom_kills": limits.oom_kills(self.cgroup)}

    def reap_spawned(self, cgroup: Path) -> None:
        """Collect the exit status of what ``spawn`` started in ``cgroup``, once that was
        killed: no zombie of ours stays behind, and no Popen is dropped while its process
        runs. Only that cgroup's: a template's build ends while the VM's share daemons
        run on, and waiting for those cost each template 5 s apiece."""
        for where, process in self.spawned:
            if where == cgroup:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)
        self.spawned = [(w, p) for w, p in self.spawned if p.returncode is None]

    def finish(self, cgroup: Path, timeout: float) -> None:
        """Wait for the machine process to exit, kill it if it will not, then empty its cgroup."""
        if self.process is not None:
            system.end_process(self.process, timeout, terminate=False)
        cgroups.kill(str(cgroup))
        self.reap_spawned(cgroup)
        self.ctx.record.drop_cgroup(cgroup)
        if cgroup == self.cgroup:
            for directory in self.limit_dirs:  # emptied with it: their processes are its
                cgroups.kill(str(directory))
                self.ctx.record.drop_cgroup(directory)
            self.limit_dirs = []
