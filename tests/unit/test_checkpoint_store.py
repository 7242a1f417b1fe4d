"""The checkpoint store's layout and rules, on a temporary directory: tags, the
make-or-nothing protocol, chains, and what a delete keeps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest

from wsfixture.errors import CheckpointError
from wsfixture.host import ledger
from wsfixture.workspaces.checkpoint_store import Checkpoint, CheckpointStore, check_tag


class Listing:
    """Stands in for a ledger record: what the store lists in it, and when."""

    def __init__(self) -> None:
        self.dirs: list[str] = []
        self.seen: list[str] = []

    def add_dir(self, path: Path) -> None:
        self.dirs.append(str(path))
        self.seen.append(str(path))

    def drop_dir(self, path: Path) -> None:
        self.dirs.remove(str(path))


def record() -> ledger.Record:
    return cast(ledger.Record, Listing())


def make(store: CheckpointStore, tag: str, parent: int | None = None, **extra: Any) -> Checkpoint:
    with store.making(record()) as (staging, final):
        (staging / "payload").write_text(tag)
        made = Checkpoint(tag, int(final.name), time.time(), "container", "img@1", "img@1",
                          parent, 0.1, **extra)  # fmt: skip
        store.write_meta(staging, made)
    return store.find(tag)


@pytest.mark.parametrize("tag", ["", "a/b", "../x", ".hidden", "-dash", "x" * 65, "sp ace", 7])
def test_bad_tags_are_refused_naming_what_is_allowed(tag: object) -> None:
    with pytest.raises(CheckpointError) as caught:
        check_tag("w", tag)
    assert f"checkpoint tag {tag!r} is not allowed" in str(caught.value)
    assert "letters, digits" in str(caught.value)


@pytest.mark.parametrize("tag", ["reset", "before-upgrade", "v1.2_rc", "A" * 64])
def test_good_tags_pass(tag: str) -> None:
    assert check_tag("w", tag) == tag


def test_made_whole_listed_and_found(tmp_path: Path) -> None:
    store = CheckpointStore("w", tmp_path / "checkpoints")
    assert store.listed() == []
    assert store.next_tag() == "checkpoint-1"
    listing = Listing()
    with store.making(cast(ledger.Record, listing)) as (staging, final):
        assert (staging.name, final.name) == (".making-1", "1")
        assert listing.dirs == [str(staging)]  # gc reaps it if we die now
        store.write_meta(staging, Checkpoint("one", 1, 0.0, "vm", "i", "s", None, 1.0))
    assert listing.dirs == []
    assert [c.tag for c in store.listed()] == ["one"]
    assert store.find("one").dir == final
    assert store.next_tag() == "checkpoint-2"
    assert (tmp_path / "checkpoints").stat().st_mode & 0o777 == 0o700


def test_unknown_and_duplicate_tags(tmp_path: Path) -> None:
    store = CheckpointStore("w", tmp_path)
    make(store, "before")
    with pytest.raises(
        CheckpointError,
        match=r"no checkpoint tagged 'befor'; did you mean 'before'\?; known: before",
    ):
        store.find("befor")
    with pytest.raises(CheckpointError, match="a checkpoint tagged 'before' exists already"):
        store.check_new_tag("before")
    empty = CheckpointStore("v", tmp_path / "none")
    with pytest.raises(CheckpointError, match="it has none"):
        empty.find("x")


def test_a_failure_leaves_nothing_unless_something_stands_on_it(tmp_path: Path) -> None:
    store = CheckpointStore("w", tmp_path)

    def half_made(committed: bool) -> None:
        with store.making(record()) as (staging, final):
            (staging / "half").write_text("x")
            if committed:  # a VM's running disk stands on it from here
                made = Checkpoint("vm1", int(final.name), 0, "vm", "i", "s", None, 0)
                store.write_meta(staging, made)
            raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError):
        half_made(committed=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        half_made(committed=True)
    assert store.listed() == []
    assert [(c.seq, c.retired) for c in store.all()] == [(1, True)]


def test_chain_and_delete_retires_what_others_stand_on(tmp_path: Path) -> None:
    store = CheckpointStore("w", tmp_path)
    one = make(store, "one")
    two = make(store, "two", parent=one.seq)
    store.set_base(two)
    assert [c.tag for c in store.chain(two)] == ["two", "one"]
    (one.dir / "state").write_text("memory")
    store.delete(one)  # two stands on it: retired, its state gone, its layer kept
    assert [c.tag for c in store.listed()] == ["two"]
    assert one.dir.is_dir()
    assert not (one.dir / "state").exists()
    assert [c.tag for c in store.chain(store.find("two"))] == ["two", "one"]
    store.delete(two)  # the running root stands on two: both kept, untagged
    assert store.listed() == []
    assert len(store.all()) == 2
    store.set_base(None)  # a fresh boot: nothing needs them
    assert store.all() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]
