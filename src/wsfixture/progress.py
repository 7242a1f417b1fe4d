"""What a long step is doing while it does it: image and layer builds, template making,
boots and restores, `apply`, `check`.

A step has a name ("starting web (vm)") and, as it goes, a detail (the last line its work
said: "building layer ...", "restoring from template ..."). On a terminal it is one line,
redrawn four times a second with the time so far; elsewhere (a CI log, a pipe) plain lines:
none for a step done within ``quiet_for`` seconds, then its detail as it changes (at most
once per ``quiet_for`` seconds, and every ``every`` seconds), and its end with its time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Say = Callable[[str], None]


@dataclass
class _State:
    last: float  # when a plain line was last written
    detail: str = ""
    said: str = ""  # the detail of that line
    spoke: bool = False


class Ticker:
    """Steps, reported through ``write`` (text as it is: the caller's newlines only)."""

    def __init__(
        self, write: Callable[[str], None], tty: bool, quiet_for: float = 2.0, every: float = 10.0
    ) -> None:
        self.write = write
        self.tty = tty
        self.quiet_for = quiet_for
        self.every = every

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[Say]:
        """Run the ``with`` block as a step; it gets a function that sets the detail."""
        began = time.monotonic()
        state = _State(last=began)
        done = threading.Event()
        lock = threading.Lock()

        def elapsed() -> float:
            return time.monotonic() - began

        def show(final: bool = False) -> None:
            with lock:
                seconds, detail = elapsed(), state.detail
                if self.tty:
                    tail = f": {detail}" if detail else ""
                    self.write(f"\r\x1b[K{what} [{seconds:5.1f}s]{tail}"[: 200 + len(what)])
                    return
                if seconds < self.quiet_for and not final:
                    return
                # A new detail at most every ``quiet_for`` seconds (apt says dozens a
                # second), and the same one again every ``every`` seconds.
                since = time.monotonic() - state.last
                fresh = detail != state.said and since >= self.quiet_for
                if fresh or since >= self.every or not state.spoke:
                    self.write(f"{what}: {detail or 'working'} ({seconds:.0f}s)\n")
                    state.said, state.spoke, state.last = detail, True, time.monotonic()

        def tick() -> None:
            while not done.wait(0.25):
                show()

        ticker = threading.Thread(target=tick, name="wsfixture-progress", daemon=True)
        ticker.start()

        def say(detail: str) -> None:
            state.detail = " ".join(detail.split())
            show()

        outcome = "failed"
        try:
            yield say
            outcome = "done"
        finally:
            done.set()
            ticker.join()
            seconds = elapsed()
            if self.tty:
                self.write("\r\x1b[K")
            if seconds >= self.quiet_for:
                self.write(f"{what}: {outcome} in {seconds:.1f}s\n")
