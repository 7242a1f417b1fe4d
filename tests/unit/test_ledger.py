"""The ledger's records round-trip through their files, typed, and one query finds them."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from wsfixture.errors import ConfigError
from wsfixture.host import cgroups, ledger, settings, system


def test_settings_come_from_the_environment_once() -> None:
    env = {"WSFIXTURE_CACHE_DIR": "/tmp/c", "WSFIXTURE_RUN_DIR": "/tmp/r"}
    resolved = settings.Settings.from_env(env)
    assert resolved.images_dir == Path("/tmp/c/images")
    assert resolved.ledger_dir == Path("/tmp/r/ledger")
    assert resolved.labs_dir == Path("/var/lib/wsfixture/labs")
    assert settings.current() is settings.current()


@pytest.mark.parametrize(("given", "expected"), [("", 10 * 2**30), ("2.5", 5 * 2**29), ("0", 0)])
def test_the_cache_s_free_space_floor_is_in_gib(given: str, expected: int) -> None:
    resolved = settings.Settings.from_env({"WSFIXTURE_CACHE_MIN_FREE": given})
    assert resolved.cache_min_free == expected


@pytest.mark.parametrize("given", ["ten", "-1", "nan", "inf", "5G"])
def test_a_floor_that_is_not_a_size_names_the_variable_and_what_it_takes(given: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings.Settings.from_env({"WSFIXTURE_CACHE_MIN_FREE": given})
    said = str(info.value)
    assert f"WSFIXTURE_CACHE_MIN_FREE: not a size in GiB (got {given!r})" in said
    assert "allowed: a number of GiB, 0 or more" in said


def test_records_round_trip_typed(tmp_path: Path) -> None:
    with settings.use(settings.Settings(run_dir=tmp_path)):
        lab = ledger.Record.create("lab-l1", ledger.LabInfo("l1"))
        lab.add_netns("l1")
        supervisor = ledger.SupervisorInfo("/c.toml", "abc", 12.5)
        ws = ledger.Record.create(
            "ws-l1-a", ledger.WorkspaceInfo("a", "l1", "vm", supervisor=supervisor)
        )
        ws.add_cgroup(Path("/sys/fs/cgroup/x"))
        ws.add_cgroup(Path("/sys/fs/cgroup/x"))  # recorded once
        ws.update(ledger.WorkspaceInfo("a", "l1", "vm", "192.168.83.10", "dev", "ssh-ed25519 K"))
        other = ledger.Record.create("ws-l2-b", ledger.WorkspaceInfo("b", "l2", "container"))

        loaded = {r.key: r for r in ledger.records()}
        assert loaded["lab-l1"].info == ledger.LabInfo("l1")
        assert loaded["lab-l1"].netns == ["l1"]
        assert loaded["ws-l1-a"].cgroups == ["/sys/fs/cgroup/x"]
        assert ledger.workspace_info(loaded["ws-l1-a"]).host_key == "ssh-ed25519 K"
        assert ledger.lab_record("l1") is not None
        assert ledger.lab_record("l2") is None
        assert list(ledger.workspaces("l1")) == ["a"]
        assert set(ledger.workspaces()) == {"ws-l1-a", "ws-l2-b"}
        assert ledger.workspaces("l2", live=True)  # owned by this live process
        other.owner = system.ProcessRef(other.owner.pid, other.owner.start + 1)  # a dead owner
        other.save()
        assert not ledger.workspaces("l2", live=True)
        assert ledger.workspaces("l2")


def test_a_record_of_another_format_is_not_loaded(tmp_path: Path) -> None:
    with settings.use(settings.Settings(run_dir=tmp_path)):
        (tmp_path / "ledger").mkdir()
        (tmp_path / "ledger" / "old.json").write_text('{"key": "old", "kind": "lab"}')
        assert list(ledger.records()) == []


def test_an_untyped_record_of_wsfixture_0_1_is_still_reapable(tmp_path: Path) -> None:
    old = {
        "key": "ws-l-a", "kind": "workspace", "owner": [1, 1], "processes": [], "cgroups": [],
        "mounts": [], "netns": [], "dirs": [],
        "info": {"name": "a", "lab": "l", "type": "container", "config_hash": "x",
                 "lab_host": {"name": "a", "ip": "192.168.83.10", "user": "dev", "host_key": "k"}},
    }  # fmt: skip
    with settings.use(settings.Settings(run_dir=tmp_path)):
        (tmp_path / "ledger").mkdir()
        (tmp_path / "ledger" / "ws-l-a.json").write_text(json.dumps(old))
        (record,) = ledger.records()
        assert ledger.workspace_info(record).ip == "192.168.83.10"
        assert record.lab == "l"


def test_gc_removes_what_a_killed_writer_half_wrote(tmp_path: Path) -> None:
    with settings.use(settings.Settings(run_dir=tmp_path)):
        ledger.Record.create("lab-l", ledger.LabInfo("l"))
        dead = 2**22 + 12345  # above pid_max: no such process
        stale = tmp_path / "ledger" / f".ws-l-a.json.{dead}.tmp"
        live = tmp_path / "ledger" / f".ws-l-b.json.{os.getpid()}.tmp"
        stale.write_text("{")
        live.write_text("{")
        ledger.sweep_half_written()
        assert not stale.exists()
        assert live.exists(), "a writer that still runs keeps its file"


def test_a_cgroup_child_made_after_the_listing_is_removed_on_the_next_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # systemd-nspawn, killed while starting, can make a child cgroup after the subtree was
    # listed: the root is then busy until the next try lists and removes the child.
    root = tmp_path / "image-build-1"
    (root / "payload").mkdir(parents=True)
    real_rmdir = Path.rmdir
    late = {"made": False}

    def rmdir(path: Path) -> None:
        if path == root and not late["made"]:
            late["made"] = True
            (root / "supervisor").mkdir()
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        real_rmdir(path)

    monkeypatch.setattr(Path, "rmdir", rmdir)
    cgroups.remove_tree(root, time.monotonic() + 5)
    assert late["made"]
    assert not root.exists()
