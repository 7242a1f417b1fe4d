"""What a failed test shows and leaves (plugin.report, plugin.artifacts), and what it keeps."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.support.leaks import leftovers
from tests.support.pytester import labs_in


def test_failure_report_short_full_and_off(real: pytest.Pytester) -> None:
    """short (the default): the test's commands with their last lines, wsfixture's own
    marked, no diagnostics; full: console, journal, units, network, then the same list of
    the test's commands; off: nothing. A module's shared workspace: only this test's."""
    real.makepyfile(
        """
        import pytest

        def test_fails(workspace):
            workspace.run("echo marker-output; echo marker-error >&2")
            workspace.wait_for_unit("ssh.service")
            assert workspace.run("false")[0] == 0

        @pytest.mark.workspace(scope="module")
        def test_shared_first(workspace):
            workspace.run("echo earlier-test")

        @pytest.mark.workspace(scope="module")
        def test_shared_second(workspace):
            assert workspace.run("echo this-test; false")[0] == 0
        """
    )
    commands = [
        "*wsfixture ws*: commands (last lines of each)*",
        "$ echo marker-output; echo marker-error >&2  [[]exit 0, * ms[]]",
        "    marker-output",
        "    marker-error",
        "$ systemctl is-active *  [[]exit 0, * ms[]]  (wsfixture's own)",
        "$ false  [[]exit 1, * ms[]]",
    ]
    short = real.runpytest_subprocess()
    short.assert_outcomes(passed=1, failed=2)
    short.stdout.fnmatch_lines(commands)
    text = short.stdout.str()
    assert "journal (tail)" not in text
    assert "$ true " not in text, "the readiness probe is not the test's"
    first = text.split("commands (last lines of each)")[1].split("test_shared_second")[0]
    assert len(first.strip().splitlines()) < 15
    shared = text.split("_ test_shared_second _")[1]
    assert "$ echo this-test; false  [exit 1, " in shared
    assert "earlier-test" not in shared, "the earlier test's commands are not this one's"

    full = real.runpytest_subprocess("--ws-report", "full")
    full.stdout.fnmatch_lines(
        [
            "*wsfixture ws*: console (tail)*",
            "*wsfixture ws*: journal (tail)*",
            "*wsfixture ws*: failed units*",
            "*wsfixture ws*: network*",
            *commands,
        ]
    )
    assert "journalctl -b --no-pager -n 60  [exit" not in full.stdout.str(), (
        "the report's own diagnostics are not listed as the test's commands"
    )
    console = full.stdout.str().split(": console (tail)")[1].split("journal (tail)")[0]
    assert "\n\n\n" not in console, "no blank line between every two"
    off = real.runpytest_subprocess("--ws-report", "off")
    off.assert_outcomes(passed=1, failed=2)
    assert "wsfixture ws" not in off.stdout.str()


BREAK_SSHD = """
from wsfixture.guest import identity

_render = identity.render


def render(given):
    files = _render(given)
    # An sshd that refuses its config never listens: the workspace never becomes ready.
    files["/etc/ssh/sshd_config.d/zz-broken.conf"] = identity.File("NoSuchOption yes\\n")
    return files


identity.render = render
"""


def test_never_ready_is_a_setup_error_with_the_console(real: pytest.Pytester) -> None:
    real.makeconftest(BREAK_SSHD)
    real.makepyfile(
        """
        def test_x(ws_lab, workspace):
            pass
        """
    )
    (real.path / "conftest.py").write_text(
        (real.path / "conftest.py").read_text()
        + "\nimport pytest\n\n@pytest.fixture\ndef ws_lab(ws_lab):\n"
        "    print('LAB', ws_lab.name)\n    return ws_lab\n"
    )
    result = real.runpytest_subprocess("--ws-timeout", "4", "-s")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*ReadyTimeout*timed out after 4.0s waiting for sshd*", "*console of ws*"]
    )
    labs = labs_in(result.stdout.str())
    assert len(labs) == 1, "the lab the session opened"
    for lab in labs:
        assert leftovers(lab) == {}


def test_keep_failed_keeps_only_the_failed_one(real: pytest.Pytester) -> None:
    """Whatever its scope: a module-scoped workspace a failed test used is kept too."""
    real.makepyfile(
        """
        import pytest

        def test_ok(workspace):
            pass

        def test_bad(workspace):
            assert False

        @pytest.mark.workspace(name="modbad", scope="module")
        def test_module_bad(workspace):
            assert False

        @pytest.mark.workspace(name="modok", scope="module")
        def test_module_ok(workspace):
            pass
        """
    )
    states_before = set(Path("/tmp").glob("wsstate-*"))
    result = real.runpytest_subprocess("--ws-keep", "failed")
    out = result.stdout.str()
    lab = re.search(r"gc --lab (\S+)", out)
    assert lab is not None, out
    lab_name = lab.group(1)
    try:  # whatever fails below, the kept lab is removed
        result.assert_outcomes(passed=2, failed=2)
        # Kept, keys in use: the new state dir that holds this session's workspaces (a
        # session of another test may have made one meanwhile).
        new = set(Path("/tmp").glob("wsstate-*")) - states_before
        (state,) = [d for d in new if (d / "modbad").is_dir()]
        result.stdout.fnmatch_lines(
            [
                "*kept workspaces*",
                "*ssh -F */ssh_config ws*",
                "*remove them all: wsfixture gc --lab*",
            ]
        )
        kept = re.findall(r"^(\S+) \(container", out, re.M)
        assert len(kept) == 2
        assert kept[0].startswith("ws")
        assert kept[1] == "modbad"
        assert leftovers(lab_name).get("netns") == lab_name, "the kept workspace still runs"
    finally:
        from wsfixture.cli.main import main

        assert main(["gc", "--lab", lab_name]) == 0
    assert leftovers(lab_name) == {}
    assert not state.exists(), "gc --lab removes the kept session's state dir, keys included"


def test_a_failed_test_leaves_its_artifacts(
    real: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ws-artifacts: console, journal, every command whole, describe and the network of
    each workspace a failed test used; a JUnit property and a GitHub job summary point at
    them; a passing test leaves nothing."""
    real.makepyfile(
        """
        def test_passes(workspace):
            workspace.succeed("true")

        def test_fails(workspace_factory):
            a = workspace_factory("alpha")
            b = workspace_factory()
            a.succeed("seq 1 5000")  # more than a report's last lines
            b.run("echo to-stderr >&2; exit 3")
            assert False, "it failed"
        """
    )
    out, summary = tmp_path / "artifacts", tmp_path / "summary.md"
    junit = tmp_path / "junit.xml"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = real.runpytest_subprocess(
        "--ws-config", "workspaces.toml", "--ws-artifacts", str(out), f"--junitxml={junit}",
        "-p", "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=1)
    (test_dir,) = out.iterdir()
    assert test_dir.name == "test_a_failed_test_leaves_its_artifacts.py_test_fails"
    alpha, other = sorted(test_dir.iterdir(), key=lambda d: d.name != "alpha")
    assert alpha.name == "alpha"
    for ws_dir in (alpha, other):
        names = {p.name for p in ws_dir.iterdir()}
        assert names == {"console.log", "journal.txt", "commands.txt", "describe.json",
                         "network.txt"}  # fmt: skip
        assert json.loads((ws_dir / "describe.json").read_text())["name"] == ws_dir.name
        assert "(could not gather" not in "".join(p.read_text() for p in ws_dir.iterdir())
        assert (
            "-- Boot" in (ws_dir / "journal.txt").read_text()
            or "systemd" in (ws_dir / "journal.txt").read_text()
        )
        assert "192.168.83." in (ws_dir / "network.txt").read_text()
    commands = (alpha / "commands.txt").read_text()
    assert commands.startswith("$ seq 1 5000\n# exit 0, ")
    assert "\n1\n2\n3\n" in commands
    assert "\n5000\n" in commands, "whole, not the last lines"
    assert "$ echo to-stderr >&2; exit 3\n# exit 3, " in (other / "commands.txt").read_text()
    assert "--- stderr ---\nto-stderr" in (other / "commands.txt").read_text()
    # The test's commands only: not the ones gathering these artifacts (the journal's is
    # journal.txt already), neither here nor in the short report.
    for ws_dir in (alpha, other):
        assert "journalctl" not in (ws_dir / "commands.txt").read_text()
        assert "ss -tunap" not in (ws_dir / "commands.txt").read_text()
    report = result.stdout.str()
    assert "seq 1 5000" in report  # control: the test's own command is in the report
    assert "journalctl" not in report
    assert "ss -tunap" not in report
    properties = {
        (p.get("name"), p.get("value")) for p in ElementTree.parse(junit).iter("property")
    }
    assert ("wsfixture_artifacts", str(test_dir)) in properties
    assert "### wsfixture: `test_a_failed_test_leaves_its_artifacts.py::test_fails` failed" in (
        summary.read_text()
    )


def test_a_setup_line_that_fails_is_said_once_per_test_without_wsfixture_s_frames(
    real: pytest.Pytester,
) -> None:
    """Two tests ask for an image whose setup line fails: each fails with the line, its
    status and output, no traceback of wsfixture's; the second without a build of its own."""
    mark = uuid.uuid4().hex  # an image no cache holds: its setup line is new
    real.makepyfile(
        f"""
        import pytest

        BAD = pytest.mark.workspace(setup=["echo {mark}; exit 3"])

        @BAD
        def test_one(workspace):
            pass

        @BAD
        def test_two(workspace):
            pass
        """
    )
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    # The reports, not pytest's summary (whole lines under CI=true, cut to the width else).
    text = result.stdout.str().split("short test summary info")[0]
    assert text.count(f"setup line 1 exited 3: echo {mark}; exit 3") == 2, text
    assert text.count("this run built it once already; not again") == 1
    assert "wsfixture/image/build.py" not in text, "no frames of wsfixture's own"
    assert "wsfixture/plugin/" not in text
