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


def test_settings_and_the_shared_cache_are_a_contexts_not_the_process() -> None:
    """A test's ``settings.use`` block (a cache elsewhere) is its own: a thread another test
    started (a prestart) keeps the environment's, while a thread started in a copy of the
    block's context (what the plugin's threads are) has the block's. The same for the
    session's shared cache."""
    import contextvars
    import threading
    from pathlib import Path

    from wsfixture.host import settings
    from wsfixture.image import shared_cache
    from wsfixture.image.registry import Reference

    outside = settings.current()
    elsewhere = outside.replace(cache_dir=Path("/nonexistent/elsewhere"))
    seen: dict[str, object] = {}

    def look(name: str) -> None:
        seen[name] = (settings.current().cache_dir, shared_cache.active())

    cache = shared_cache.SharedCache(Reference.parse("127.0.0.1:5000/x"), False, lambda: "")
    with settings.use(elsewhere):
        shared_cache.use(cache)
        try:
            plain = threading.Thread(target=look, args=("plain",))
            copied = threading.Thread(target=contextvars.copy_context().run, args=(look, "copied"))
            for thread in (plain, copied):
                thread.start()
                thread.join()
            look("here")
        finally:
            shared_cache.use(None)
    look("after")
    assert seen["here"] == seen["copied"] == (Path("/nonexistent/elsewhere"), cache)
    assert seen["plain"] == seen["after"] == (outside.cache_dir, None)
