"""Checkpoints and rollback of a running workspace: the handle's ``checkpoint``,
``rollback``, ``checkpoints`` and ``delete_checkpoint`` are ``Checkpointing``'s, a part of
the handle (``ws._checkpointing``) that reads it through its public face.

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

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from wsfixture.errors import CheckpointError
from wsfixture.host import ledger
from wsfixture.model.config import WorkspaceSpec
from wsfixture.workspaces.checkpoint_store import Checkpoint, CheckpointStore
from wsfixture.workspaces.states import WorkspaceState

if TYPE_CHECKING:
    from wsfixture.backends.base import Backend

logger = logging.getLogger("wsfixture.checkpoints")


class CheckpointOwner(Protocol):
    """What ``Checkpointing`` reads of the handle it is a part of."""

    spec: WorkspaceSpec
    state: WorkspaceState
    state_dir: Path
    _supervisor: ledger.SupervisorInfo | None
    _runtime_dir: Path
    _backend: Backend | None
    _record: ledger.Record | None
    _started_at: float | None

    @property
    def name(self) -> str: ...

    def _drop_session(self) -> None: ...

    def _wait_ready(self) -> None: ...


class Checkpointing:
    """The checkpoints of ``ws``: where they are kept, making them, rolling back."""

    def __init__(self, ws: CheckpointOwner) -> None:
        self.ws = ws

    @property
    def _name(self) -> str:
        return self.ws.name

    @property
    def store(self) -> CheckpointStore:
        """A CLI workspace's live in its state directory (they outlive ``down``), a test's
        in its runtime directory (they go with it)."""
        ws = self.ws
        root = ws.state_dir if ws._supervisor is not None else ws._runtime_dir
        return CheckpointStore(self._name, root / "checkpoints")

    def listed(self) -> list[Checkpoint]:
        """This workspace's checkpoints, oldest first."""
        return self.store.listed()

    def make(self, tag: str | None = None) -> Checkpoint:
        """Save the workspace's root (a VM's memory and devices too) as ``tag``
        (``checkpoint-<n>`` if not given). CheckpointError, with nothing changed, for a
        bad or taken tag or a machine that cannot be saved."""
        backend, record = self._checkpointable("checkpoint")
        store = self.store
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
                        tag, seq, time.time(), self.ws.spec.type, backend.image_build(),
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
        if self.ws.spec.is_vm:
            store.set_base(made)  # the running disk stands on it from now on
        logger.debug("%s: checkpoint %s in %.2fs: %s", self._name, tag, made.seconds, steps)
        return made

    def rollback(self, to: str | Checkpoint) -> None:
        """Return the workspace's root (a VM's memory and devices too) to checkpoint
        ``to`` (its tag, or what ``checkpoint`` returned) and wait until it is ready."""
        backend, _ = self._checkpointable("rollback")
        store = self.store
        checkpoint = store.find(to.tag if isinstance(to, Checkpoint) else to)
        if (why := self.mismatch(checkpoint, backend)) is not None:
            raise CheckpointError(self._name, f"cannot roll back to {checkpoint.tag!r}: {why}",
                                  "make a new checkpoint")  # fmt: skip
        chain = [c.dir for c in store.chain(checkpoint)]
        started = time.monotonic()
        self.ws._drop_session()
        self.ws._started_at = started
        steps = backend.rollback(chain, checkpoint.shape)
        self.ws._wait_ready()
        store.set_base(checkpoint)
        logger.debug("%s: rolled back to %s in %.2fs: %s", self._name, checkpoint.tag,
                     time.monotonic() - started, steps)  # fmt: skip

    def delete(self, to: str | Checkpoint) -> None:
        """Remove a checkpoint (its disk layer stays while a later one stands on it)."""
        store = self.store
        store.delete(store.find(to.tag if isinstance(to, Checkpoint) else to))

    def mismatch(self, checkpoint: Checkpoint, backend: Backend) -> str | None:
        """Why ``checkpoint`` cannot be restored into this workspace as it runs now."""
        kind = self.ws.spec.type
        if checkpoint.kind != kind:
            return f"it was made of a {checkpoint.kind}, this workspace is a {kind}"
        if checkpoint.image != backend.image_build():
            return (f"it was made over image {checkpoint.image}, and the workspace now boots "
                    f"{backend.image_build()}")  # fmt: skip
        restorable = self.ws.spec.is_vm and backend.checkpoint_blocker() is None
        if restorable and checkpoint.shape != backend.checkpoint_shape():
            return (f"it was made of a VM of template {checkpoint.shape}, this one is of "
                    f"{backend.checkpoint_shape()}")  # fmt: skip
        return None

    def keep_matching(self) -> list[tuple[str, str]]:
        """At start: the checkpoints that can no longer be restored into this workspace
        removed, with why (a CLI workspace's outlive it); the root stands on none."""
        backend = self.ws._backend
        assert backend is not None
        store = self.store
        dropped = []
        for checkpoint in store.listed():
            if (why := self.mismatch(checkpoint, backend)) is not None:
                store.discard(checkpoint)
                dropped.append((checkpoint.tag, why))
        store.set_base(None)
        return dropped

    def _checkpointable(self, verb: str) -> tuple[Backend, ledger.Record]:
        """The running backend this handle owns, or CheckpointError saying why not."""
        backend, record, state = self.ws._backend, self.ws._record, self.ws.state.value
        if backend is None or record is None:
            held = "another process runs it (the CLI's: use `wsfixture " + verb + "`)"
            why = held if state == "attached" else f"this handle is {state}"
            raise CheckpointError(self._name, f"cannot {verb}: {why}")
        if not backend.is_up():
            reason = backend.failure() or "its machine is gone"
            raise CheckpointError(self._name, f"cannot {verb}: it is not running ({reason})")
        return backend, record
