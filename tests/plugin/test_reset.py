"""reset='checkpoint': each test of a shared workspace from a clean root (plugin.reset)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.leaks import leftovers


def test_reset_checkpoint_gives_each_test_of_a_shared_vm_a_clean_root(
    real: pytest.Pytester,
) -> None:
    """A module-scoped VM with reset="checkpoint": one boot, and each of three tests sees
    the root as it was when the VM was first ready; the share is the user's, never rolled
    back."""
    real.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.workspace(
            type="vm", vcpu=1, memory=768, scope="module", reset="checkpoint"
        )
        SEEN = []

        def dirty_then_count(ws):
            assert ws.run("test -e /etc/left-behind")[0] == 1, "the root is not clean"
            ws.succeed("echo x | doas tee /etc/left-behind; echo x >> ~/workspace/count")
            SEEN.append(ws)
            return int(ws.succeed("wc -l < ~/workspace/count"))

        def test_one(workspace):
            assert [c.tag for c in workspace.checkpoints()] == ["reset"]
            assert dirty_then_count(workspace) == 1

        def test_two(workspace):
            assert dirty_then_count(workspace) == 2

        def test_three(workspace):
            assert dirty_then_count(workspace) == 3
            assert SEEN[0] is SEEN[1] is SEEN[2], "one VM, booted once"
        """
    )
    result = real.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_reset_checkpoint_keeps_what_the_failed_test_saw(real: pytest.Pytester) -> None:
    """Under --ws-keep=failed a shared workspace with reset="checkpoint" is kept as the
    failed test left it, though a later test rolled it back and changed it."""
    real.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.workspace(name="keeper", scope="module", reset="checkpoint")

        def test_a(workspace):
            workspace.succeed("echo a | doas tee /etc/state")

        def test_b(workspace):
            assert workspace.run("test -e /etc/state")[0] == 1
            workspace.succeed("echo b | doas tee /etc/state")
            assert False, "b fails"

        def test_c(workspace):
            assert workspace.run("test -e /etc/state")[0] == 1
            workspace.succeed("echo c | doas tee /etc/state")
        """
    )
    result = real.runpytest_subprocess("--ws-keep", "failed", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    lab = re.search(r"gc --lab (\S+)", result.stdout.str())
    assert lab is not None
    from wsfixture.cli.main import main

    try:
        seen = subprocess.run(
            [sys.executable, "-m", "wsfixture.cli", "ssh", "--lab", lab.group(1), "keeper",
             "cat /etc/state"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert seen.stdout.splitlines()[0] == "b", seen
    finally:
        assert main(["gc", "--lab", lab.group(1)]) == 0
    assert leftovers(lab.group(1)) == {}


def test_reset_needs_a_shared_workspace(real: pytest.Pytester) -> None:
    real.makepyfile(
        """
        import pytest

        @pytest.mark.workspace(reset="checkpoint")
        def test_x(workspace):
            pass
        """
    )
    result = real.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*test_x: @pytest.mark.workspace(reset='checkpoint'): reset='checkpoint' is for a "
         "shared workspace: scope='module' or 'session'*"]
    )  # fmt: skip
