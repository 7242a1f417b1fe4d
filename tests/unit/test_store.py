"""The cache's one protocol: an entry is staged, listed in the ledger while it is made,
and renamed into place; a failure leaves nothing; only finished entries are listed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsfixture.host import ledger, settings
from wsfixture.image import store


def test_an_entry_is_renamed_into_place_and_a_failed_one_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    with settings.use(settings.Settings(run_dir=tmp_path / "run", cache_dir=tmp_path)):
        entry = root / "key1"
        staging = store.staging_path(entry)
        assert staging.name == f"key1.building-{os.getpid()}"
        assert store.is_staging(staging)
        with store.staged(entry, "build-key1", ledger.BuildInfo("key1", str(staging))) as record:
            staging.mkdir()
            (staging / store.READY).write_text("1\n")
            assert [r.key for r in ledger.records()] == ["build-key1"]
        record.forget()
        assert (entry / store.READY).read_text() == "1\n"
        assert not staging.exists()

        broken = root / "key2"
        half = store.staging_path(broken)

        def fails_half_way() -> None:
            with store.staged(broken, "build-key2", ledger.BuildInfo("key2", str(half))):
                half.mkdir()
                (half / "partial").write_text("half\n")
                raise RuntimeError("apt failed")

        with pytest.raises(RuntimeError, match="apt failed"):
            fails_half_way()
        assert not half.exists()
        assert not broken.exists()
        assert list(ledger.records()) == [], "the failed build's record is released"


def test_only_finished_entries_are_listed_with_their_last_use(tmp_path: Path) -> None:
    for name in ("done", "used", f"half{store.STAGING_MARK}42", "unmarked"):
        (tmp_path / name).mkdir()
    for name in ("done", "used", f"half{store.STAGING_MARK}42"):
        (tmp_path / name / store.READY).write_text("1\n")
    os.utime(tmp_path / "done" / store.READY, (1000, 1000))
    (tmp_path / "used" / store.USED).touch()
    os.utime(tmp_path / "used" / store.USED, (2000, 2000))
    listed = {p.name: used for p, used in store.finished(tmp_path, store.READY)}
    assert listed == {"done": 1000, "used": 2000}
    assert [p.name for p in store.staging_dirs(tmp_path)] == [f"half{store.STAGING_MARK}42"]
    assert store.lock_path(tmp_path / "done") == tmp_path / "done.lock"


WAITER = """
import sys, time
from pathlib import Path
from wsfixture.image import store
print("waiting", flush=True)
with store.locked(Path(sys.argv[1])):
    print("in", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_lock_file_removed_under_a_waiter_never_lets_two_processes_in(
    tmp_path: Path,
) -> None:
    """An entry removed while another process waits for its lock: the waiter wakes up
    holding the unlinked file's lock. It used to go on as if it held the entry's lock,
    while a newcomer made a new lock file and got in too."""
    entry = tmp_path / "images" / "trixie-container-0123456789abcdef"
    entry.mkdir(parents=True)
    (entry / store.READY).write_text("1\n")
    lock = store.lock_path(entry)
    with store.locked(lock) as held:
        assert held
        waiter = subprocess.Popen(
            [sys.executable, "-c", WAITER, str(lock), "5"], stdout=subprocess.PIPE, text=True
        )
        assert waiter.stdout is not None
        try:
            assert waiter.stdout.readline() == "waiting\n"
            time.sleep(0.5)  # it is in flock, on the file we hold
            store.remove_held(entry, store.READY)
        except BaseException:
            waiter.kill()
            raise
    try:
        assert waiter.stdout.readline() == "in\n"  # on the lock file there now
        with store.locked(lock, wait=False) as newcomer:
            assert newcomer is False, "two processes hold the lock of one name"
    finally:
        waiter.kill()
        waiter.wait(10)
    with store.locked(lock, wait=False) as after:  # control: once it is gone, we get in
        assert after is True
