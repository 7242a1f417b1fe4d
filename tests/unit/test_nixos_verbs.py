"""The NixOS test driver's semantics of ``ws.nixos``, over a host that runs each command
with this machine's bash: the same line the workspace gets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from wsfixture.copying import Copied
from wsfixture.errors import CommandError, WaitTimeout
from wsfixture.workspaces.commands import Timeout
from wsfixture.workspaces.nixos import NixosMachine, driver_line, unit_properties


class LocalHost:
    """Runs what the verbs send with bash here (as the workspace would as root)."""

    name = "local"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Timeout, str | None]] = []

    def run(
        self, command: str, timeout: Timeout = None, max_output: int | None = None,
        probe: bool = False, *, user: str | None = None,
    ) -> tuple[int, str, str]:  # fmt: skip
        self.sent.append((command, timeout, user))
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
        return done.returncode, done.stdout, done.stderr

    def put(self, local: str | Path, remote: str, recursive: bool = False) -> Copied:
        raise AssertionError("not used here")

    def get(self, remote: str, local: str | Path, recursive: bool = False) -> Copied:
        raise AssertionError("not used here")


@pytest.fixture
def machine() -> tuple[NixosMachine, LocalHost]:
    host = LocalHost()
    return NixosMachine(host), host


def test_execute_is_bash_under_set_euo_pipefail_as_root(
    machine: tuple[NixosMachine, LocalHost],
) -> None:
    nixos, host = machine
    assert nixos.execute("echo out; false; echo never") == (1, "out\n")  # -e
    assert nixos.execute("false | true")[0] == 1  # pipefail
    assert nixos.execute("echo ${UNSET_HERE}")[0] != 0  # -u
    assert nixos.execute("echo $0")[1].strip() == "bash"
    assert nixos.execute("exit 3", check_return=False) == (-1, "")
    assert nixos.execute("echo x", check_output=False) == (-2, "")
    assert host.sent[0] == (driver_line("echo out; false; echo never"), 900, "root")


def test_succeed_and_fail_take_several_commands_and_stop_at_the_first_wrong(
    machine: tuple[NixosMachine, LocalHost],
) -> None:
    nixos, host = machine
    assert nixos.succeed("echo a", "echo b") == "a\nb\n"
    with pytest.raises(CommandError, match="exit status 1: false") as raised:
        nixos.succeed("echo a", "false", "echo never")
    assert raised.value.rc == 1
    assert all("never" not in command for command, _, _ in host.sent)
    assert nixos.fail("false", "exit 2") == ""
    with pytest.raises(CommandError, match="expected to fail"):
        nixos.fail("false", "true")
    assert host.sent[0][1] is None, "succeed has no timeout unless given, as the driver's"


def test_a_wait_retries_until_and_says_what_it_last_saw(
    machine: tuple[NixosMachine, LocalHost], tmp_path: Path
) -> None:
    nixos, _ = machine
    flag = tmp_path / "flag"
    nixos.execute(f"(sleep 1.5; touch {flag}) >/dev/null 2>&1 &")
    nixos.wait_for_file(str(flag), timeout=10)
    assert nixos.wait_until_succeeds(f"cat {flag}; echo found", timeout=5) == "found\n"
    nixos.wait_until_fails(f"test ! -e {flag}", timeout=5)
    with pytest.raises(WaitTimeout, match="exit status 1"):
        nixos.wait_until_succeeds("echo nearly >&2; false", timeout=2)


def test_systemctl_show_reads_as_a_mapping() -> None:
    text = "Id=web.service\nActiveState=active\nnot a property\nDescription=a = b\n"
    assert unit_properties(text) == {
        "Id": "web.service", "ActiveState": "active", "Description": "a = b",
    }  # fmt: skip
