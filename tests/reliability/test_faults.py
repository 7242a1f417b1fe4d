"""Faults: killed machines, a killed test process, broken workspaces. Each ends in a clear
error or a reap by the next `gc`, and nothing leaks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.configs import make_config
from tests.support.leaks import leftovers, processes_with_cmdline
from tests.support.prereqs import require_root_and_tools
from wsfixture import ConfigError, ReadyTimeout
from wsfixture.errors import ImageBuildError, WorkspaceGone
from wsfixture.guest import identity
from wsfixture.host import ledger, settings
from wsfixture.image.recipe import ImageRecipe
from wsfixture.model.config import Config, config_from_toml
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace


@pytest.fixture
def config(tmp_path: Path) -> Config:
    require_root_and_tools("systemd-nspawn", "qemu-system-x86_64", "dnsmasq")
    return make_config(
        tmp_path,
        box={"type": "container", "ip": "192.168.83.50"},  # its address is in the errors
        vm={"type": "vm", "vcpu": 1, "memory": 768},
    )


@pytest.mark.parametrize("kind", ["box", "vm"])
def test_killed_machine_is_a_clear_error(config: Config, kind: str) -> None:
    with Lab(config.network) as lab:
        ws = Workspace(config.workspaces[kind], config, lab).start()
        try:
            assert ws._backend is not None
            assert ws._backend.process is not None
            os.kill(ws._backend.process.pid, signal.SIGKILL)  # our own child, by PID
            ws._backend.process.wait(10)
            assert not ws.is_running
            with pytest.raises(WorkspaceGone, match=r"is not running: .*exited with status -9"):
                ws.succeed("true")
        finally:
            ws.stop()
        name = lab.name
    assert leftovers(name) == {}
    assert processes_with_cmdline(f"labs/{name}/") == []


TEST_PROCESS = textwrap.dedent(
    """
    import pathlib, time

    def test_hangs(workspace, ws_lab):
        pathlib.Path("lab-name").write_text(ws_lab.name)
        time.sleep(600)
    """
)


def test_killed_pytest_is_reaped_by_the_next_gc(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn")
    (tmp_path / "test_hang.py").write_text(TEST_PROCESS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_hang.py"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    marker = tmp_path / "lab-name"
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the test never got its workspace"
        lab_name = marker.read_text()
        assert leftovers(lab_name).get("netns") == lab_name
    finally:
        proc.send_signal(signal.SIGKILL)  # our own child, by PID
        proc.wait()
    deadline = time.monotonic() + 30
    while leftovers(lab_name) and time.monotonic() < deadline:
        _, failures = ledger.reap()
        assert failures == []
        time.sleep(0.2)
    assert leftovers(lab_name) == {}


def test_sshd_that_never_starts_times_out_with_the_cause(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = identity.render

    def broken(given: identity.Identity) -> dict[str, identity.File]:
        files = original(given)
        files["/etc/ssh/sshd_config.d/zz-broken.conf"] = identity.File("NoSuchOption yes\n")
        return files

    monkeypatch.setattr(identity, "render", broken)
    with Lab(config.network) as lab:
        began = time.monotonic()
        with pytest.raises(ReadyTimeout) as info:
            Workspace(config.workspaces["box"], config, lab, timeout=8).start()
        assert time.monotonic() - began < 20
        message = str(info.value)
        assert "waiting for sshd on 192.168.83.50:22" in message
        assert "ssh.service" in message or "OpenBSD Secure Shell" in message, "console names it"
        name = lab.name
    assert leftovers(name) == {}


def test_misconfigured_network_times_out_naming_the_address(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        identity, "network_unit", lambda given: "[Match]\nName=nothing\n[Network]\n"
    )
    with Lab(config.network) as lab:
        with pytest.raises(ReadyTimeout) as info:
            Workspace(config.workspaces["box"], config, lab, timeout=5).start()
        assert "192.168.83.50:22 not accepting connections" in str(info.value)
        name = lab.name
    assert leftovers(name) == {}


def test_corrupt_image_fails_with_the_cause(config: Config, tmp_path: Path) -> None:
    recipe = ImageRecipe.for_packages(())
    broken = tmp_path / "cache" / "images" / recipe.key
    (broken / "root" / "etc").mkdir(parents=True)
    (broken / "ready").write_text("an image whose tree lost its files\n")
    with (
        settings.use(settings.current().replace(cache_dir=tmp_path / "cache")),
        Lab(config.network) as lab,
    ):
        with pytest.raises(ImageBuildError, match=r"corrupt: missing etc/passwd, .*usr/sbin/sshd"):
            Workspace(config.workspaces["box"], config, lab, timeout=10).start()
        name = lab.name
    assert leftovers(name) == {}


BROKEN_CONFIGS = {
    "missing type": '[workspaces.a]\nip = "192.168.83.10"\n',
    "syntax": "[workspaces.a\n",
    "duplicate ip": (
        '[workspaces.a]\ntype="vm"\nip="192.168.83.10"\n'
        '[workspaces.b]\ntype="vm"\nip="192.168.83.10"\n'
    ),
    "gateway ip": '[workspaces.a]\ntype="container"\nip="192.168.83.1"\n',
    "bad share": '[workspaces.a]\ntype="vm"\nip="192.168.83.10"\nshares=[{source="r"}]\n',
    "huge memory": '[workspaces.a]\ntype="vm"\nip="192.168.83.10"\nmemory=99999999\n',
    "unknown top key": "netwrok = {}\n",
}


def footprint() -> tuple[set[str], set[str]]:
    return {r.key for r in ledger.records()}, set(os.listdir("/run/netns"))


@pytest.mark.parametrize("text", BROKEN_CONFIGS.values(), ids=BROKEN_CONFIGS.keys())
def test_broken_configs_are_rejected_before_anything_exists(text: str, tmp_path: Path) -> None:
    """`up` and the plugin refuse the config with exit 2 / a usage error, and nothing was
    made: no ledger record, no namespace, no state directory."""
    require_root_and_tools("systemd-nspawn", "dnsmasq")
    state = tmp_path / "state"
    bad = tmp_path / "bad.toml"
    bad.write_text(f'{text}\n[defaults]\nstateRoot = "{state}"\n')
    with pytest.raises(ConfigError):
        config_from_toml(bad.read_text())
    before = footprint()
    up = subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", "-c", str(bad), "up", "--all"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert up.returncode == 2, up.stdout + up.stderr
    assert "invalid wsfixture config" in up.stderr
    (tmp_path / "test_x.py").write_text("def test_x(workspace):\n    pass\n")
    plugin = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--ws-config", str(bad),
         "--ws-state-dir", str(state), "test_x.py"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert plugin.returncode != 0
    assert "invalid wsfixture config" in plugin.stdout + plugin.stderr
    assert footprint() == before
    assert not state.exists()


def test_a_bad_factory_field_makes_nothing(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn", "dnsmasq")
    (tmp_path / "test_x.py").write_text(
        "def test_x(workspace_factory, ws_lab):\n"
        "    import pathlib\n"
        "    from wsfixture.host import ledger\n"
        "    before = {r.key for r in ledger.records()}\n"
        "    try:\n"
        "        workspace_factory('bad', type='vm', vcpu=0)\n"
        "    except Exception as exc:\n"
        "        assert 'vcpu' in str(exc)\n"
        "    else:\n"
        "        raise AssertionError('vcpu=0 was accepted')\n"
        "    assert {r.key for r in ledger.records()} == before\n"
        "    assert not (ws_lab.dir / 'bad').exists()\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_x.py"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
