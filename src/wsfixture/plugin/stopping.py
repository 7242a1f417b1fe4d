"""A workspace a test is done with, stopped in a thread of its own while the next test
runs (``--ws-keep`` aside): its stop overlaps the next boot instead of preceding it."""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsfixture.workspaces import Workspace


@dataclass
class BackgroundStop:
    """A workspace stopping in a thread of its own while the next test runs."""

    ws: Workspace
    done: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    @classmethod
    def start(cls, ws: Workspace) -> BackgroundStop:
        stop = cls(ws)
        # (in a copy of this context: the settings and the shared cache of the session)
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(stop._run,), name=f"wsfixture-stop-{ws.name}"
        ).start()
        return stop

    def _run(self) -> None:
        try:
            self.ws.stop(discard=True)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.done.set()

    def wait(self) -> bool:
        """Wait for the stop to end (it is bounded by the stop timeouts); return whether an
        interrupt came meanwhile. It is noted, not obeyed: leaving now would leak the
        workspace. (An Event, not Thread.join: an interrupted join can mark a running
        thread as finished, and the interpreter then exits under it.)"""
        interrupted = False
        while not self.done.is_set():
            try:
                self.done.wait()
            except KeyboardInterrupt:
                interrupted = True
        return interrupted
