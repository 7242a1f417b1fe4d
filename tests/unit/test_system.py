"""Helpers of wsfixture.host.system: pure ones, and the spawner's promise (with real
``sleep`` processes, no root needed)."""

from __future__ import annotations

import signal
import subprocess
import threading
from typing import Any

import pytest

from wsfixture.host import system
from wsfixture.host.system import _unescape


def test_mountinfo_escapes_are_decoded() -> None:
    # /proc/self/mountinfo writes space, tab, newline and backslash as \ooo.
    assert _unescape(r"/var/lib/my\040dir") == "/var/lib/my dir"
    assert _unescape(r"/a\011b\012c\134d") == "/a\tb\nc\\d"
    assert _unescape("/plain/path") == "/plain/path"


def test_what_a_short_lived_thread_starts_lives_until_the_process_ends() -> None:
    """The parent-death signal follows the thread that forked: started plainly from a
    thread that then ends, a child is killed (the control); started through the spawner,
    it lives on until it is ended."""

    def started(popen: Any) -> subprocess.Popen[bytes]:
        made: list[subprocess.Popen[bytes]] = []
        thread = threading.Thread(target=lambda: made.append(popen(
            ["sleep", "60"], preexec_fn=system.set_parent_death_signal)))  # fmt: skip
        thread.start()
        thread.join()
        return made[0]

    plain = started(subprocess.Popen)
    assert plain.wait(5) == -signal.SIGTERM, "the control: killed with its thread"
    lasting = started(system.popen_lasting)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            lasting.wait(0.5)
    finally:
        lasting.kill()
        lasting.wait()
