"""Checkpoints and rollback of a running workspace: ``checkpoint``, ``rollback``,
``checkpoints`` and ``delete_checkpoint`` on the handle.

A checkpoint saves the root filesystem, and for a VM its memory and devices, at one
instant; a rollback returns them there. The shares (``workspace/``, ``claude-config/``,
the spec's own) are never saved nor rolled back: they are the user's data. The workspace
keeps its name, address, MAC and pinned host key; the handle's SSH session is opened anew
after a rollback (``host`` and ``conn`` too). How each kind does it: ``backends.nspawn``
(a frozen copy of the upper layer; a rollback restarts from it) and
``backends.qemu.checkpoint`` (a live save without shares; a rollback is a restore).

The checkpoints live in the workspace's runtime directory, removed with it; a CLI
workspace's live in its state directory, kept across ``down``/``up`` while the image and
shape they were made for still match (``keep_matching``).
"""

from __future__ import annotations

import enum
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from wsfixture.errors import CheckpointError
from wsfixture.host import ledger
from wsfixture.model.config import WorkspaceSpec
from wsfixture.workspaces.checkpoint_store import Checkpoint, CheckpointStore

if TYPE_CHECKING:
    from wsfixture.backends.base import Backend

logger = logging.getLogger("wsfixture.checkpoints")


class Checkpoints:
    """Mixed into ``Workspace``: what it uses of the handle is declared here."""

    spec: WorkspaceSpec
    state_dir: Path
    runtime_dir: Path
    supervisor: ledger.SupervisorInfo | None
    backend: Backend | None
    _record: ledger.Record | None
    state: enum.Enum
    started_at: float | None

    def drop_session(self) -> None: ...

    def wait_ready(self) -> None: ...

    @property
    def _name(self) -> str:
        return self.spec.name

    @property
    def checkpoint_store(self) -> CheckpointStore:
        root = self.state_dir if self.supervisor is not None else self.runtime_dir
        return CheckpointStore(self._name, root / "checkpoints")

    def checkpoints(self) -> list[Checkpoint]:
        """This workspace's checkpoints, oldest first."""
        return self.checkpoint_store.listed()

    def checkpoint(self, tag: str | None = None) -> Checkpoint:
        """Save the workspace's root (a VM's memory and devices too) as ``tag``
        (``checkpoint-<n>`` if not given). CheckpointError, with nothing changed, for a
        bad or taken tag or a machine that cannot be saved."""
        backend, record = self._checkpointable("checkpoint")
        store = self.checkpoint_store
        tag = store.next_tag() if tag is None else tag
        store.check_new_tag(tag)
        if (why := backend.checkpoint_blocker()) is not None:
            raise CheckpointError(self._name, f"cannot be checkpointed: {why}")
        base = store.base
        started = time.monotonic()
        seq = 0
        try:
            with store.making(record) as (staging, final):
                seq = int(final.name)

                def commit() -> None:
                    made = Checkpoint(
                        tag, seq, time.time(), self.spec.type, self.image_key(backend),
                        backend.checkpoint_shape(), base.seq if base else None,
                        time.monotonic() - started,
                    )  # fmt: skip
                    store.write_meta(staging, made)

                steps = backend.checkpoint(staging, final, seq, commit)
                commit()  # again: with the whole time it took
        except BaseException:
            if (kept := store.by_seq(seq)) is not None:  # a VM's running disk stands on it
                store.set_base(kept)
            raise
        made = store.find(tag)
        if self.spec.type == "vm":
            store.set_base(made)  # the running disk stands on it from now on
        logger.debug("%s: checkpoint %s in %.2fs: %s", self._name, tag, made.seconds, steps)
        return made

    def rollback(self, to: str | Checkpoint) -> None:
        """Return the workspace's root (a VM's memory and devices too) to checkpoint
        ``to`` (its tag, or what ``checkpoint`` returned) and wait until it is ready."""
        backend, _ = self._checkpointable("rollback")
        store = self.checkpoint_store
        checkpoint = store.find(to.tag if isinstance(to, Checkpoint) else to)
        if (why := self.checkpoint_mismatch(checkpoint, backend)) is not None:
            raise CheckpointError(self._name, f"cannot roll back to {checkpoint.tag!r}: {why}",
                                  "make a new checkpoint")  # fmt: skip
        chain = [c.dir for c in store.chain(checkpoint)]
        started = time.monotonic()
        self.drop_session()
        self.started_at = started
        steps = backend.rollback(chain, checkpoint.shape)
        self.wait_ready()
        store.set_base(checkpoint)
        logger.debug("%s: rolled back to %s in %.2fs: %s", self._name, checkpoint.tag,
                     time.monotonic() - started, steps)  # fmt: skip

    def delete_checkpoint(self, to: str | Checkpoint) -> None:
        """Remove a checkpoint (its disk layer stays while a later one stands on it)."""
        store = self.checkpoint_store
        store.delete(store.find(to.tag if isinstance(to, Checkpoint) else to))

    def checkpoint_mismatch(self, checkpoint: Checkpoint, backend: Backend) -> str | None:
        """Why ``checkpoint`` cannot be restored into this workspace as it runs now."""
        if checkpoint.kind != self.spec.type:
            return f"it was made of a {checkpoint.kind}, this workspace is a {self.spec.type}"
        if checkpoint.image != self.image_key(backend):
            return (f"it was made over image {checkpoint.image}, and the workspace now boots "
                    f"{self.image_key(backend)}")  # fmt: skip
        restorable = self.spec.type == "vm" and backend.checkpoint_blocker() is None
        if restorable and checkpoint.shape != backend.checkpoint_shape():
            return (f"it was made of a VM of template {checkpoint.shape}, this one is of "
                    f"{backend.checkpoint_shape()}")  # fmt: skip
        return None

    def keep_matching(self) -> list[tuple[str, str]]:
        """At start: the checkpoints that can no longer be restored into this workspace
        removed, with why (a CLI workspace's outlive it); the root stands on none."""
        assert self.backend is not None
        store = self.checkpoint_store
        dropped = []
        for checkpoint in store.listed():
            if (why := self.checkpoint_mismatch(checkpoint, self.backend)) is not None:
                store.discard(checkpoint)
                dropped.append((checkpoint.tag, why))
        store.set_base(None)
        return dropped

    @staticmethod
    def image_key(backend: Backend) -> str:
        return backend.image_build()

    def _checkpointable(self, verb: str) -> tuple[Backend, ledger.Record]:
        """The running backend this handle owns, or CheckpointError saying why not."""
        if self.backend is None or self._record is None:
            held = "another process runs it (the CLI's: use `wsfixture " + verb + "`)"
            why = held if self.state.value == "attached" else f"this handle is {self.state.value}"
            raise CheckpointError(self._name, f"cannot {verb}: {why}")
        if not self.backend.is_up():
            reason = self.backend.failure() or "its machine is gone"
            raise CheckpointError(self._name, f"cannot {verb}: it is not running ({reason})")
        return self.backend, self._record
