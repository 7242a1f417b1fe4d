"""--ws-hosts: a plain testinfra suite on the config's workspaces (plugin.hosts)."""

from __future__ import annotations

from pathlib import Path

import pytest

PLAIN_SUITE = Path(__file__).parents[2] / "examples" / "testinfra" / "test_base.py"


HOSTS_CONFIG = """
[workspaces.alpha]
type = "container"
ip = "192.168.83.10"

[workspaces.vmone]
type = "vm"
ip = "192.168.83.20"
vcpu = 1
memory = 768
"""


def test_ws_hosts_runs_a_plain_testinfra_file_on_each_workspace(real: pytest.Pytester) -> None:
    real.makefile(".toml", workspaces=HOSTS_CONFIG)
    real.makepyfile(test_base=PLAIN_SUITE.read_text())
    real.makepyfile(
        test_with_workspace="""
        import pytest

        @pytest.mark.workspace("alpha", scope="session")
        def test_the_marked_workspace_is_host(workspace, host):
            assert host is workspace.host  # the one --ws-hosts booted for the session
            assert host.check_output("hostname") == "alpha"

        def test_the_own_workspace_is_host(workspace, host):
            assert host.check_output("hostname") == workspace.name != "alpha"
        """
    )
    result = real.runpytest_subprocess(
        "--ws-config", "workspaces.toml", "--ws-hosts", "alpha,vmone", "-v"
    )
    result.assert_outcomes(passed=2 * 4 + 2)
    for name in ("alpha", "vmone"):
        result.stdout.fnmatch_lines(
            [f"*test_base.py::test_sudo_is_root_and_reads_what_only_root_may"
             f"[[]wsfixture://{name}[]] PASSED*"]
        )  # fmt: skip
    result.stdout.fnmatch_lines(["*test_the_own_workspace_is_host[[]workspace[]] PASSED*"])
    assert "LocalHostWarning" not in result.stdout.str()
    assert "is still running" not in result.stdout.str()  # every helper process reaped


def test_ws_hosts_names_must_be_workspaces_of_the_config(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", workspaces=HOSTS_CONFIG)
    pytester.makepyfile("def test_x(host):\n    pass\n")
    result = pytester.runpytest_subprocess("--ws-config", "workspaces.toml", "--ws-hosts", "alfa")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--ws-hosts: no workspace named 'alfa' in *workspaces.toml; did you mean 'alpha'?*"]
    )
    result = pytester.runpytest_subprocess(
        "--ws-config", "workspaces.toml", "--ws-hosts", "alpha", "--hosts", "local://"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ws-hosts and testinfra's --hosts: give one or the other*"])


def test_ws_hosts_ini_gives_testinfras_node_ids(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", workspaces=HOSTS_CONFIG)
    pytester.makeini(
        "[pytest]\nwsfixture_config = workspaces.toml\nwsfixture_hosts = vmone, alpha\n"
    )
    pytester.makepyfile("def test_x(host):\n    pass\n")
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        ["test_ws_hosts_ini_gives_testinfras_node_ids.py::test_x[[]wsfixture://vmone[]]",
         "test_ws_hosts_ini_gives_testinfras_node_ids.py::test_x[[]wsfixture://alpha[]]"]
    )  # fmt: skip


def test_a_local_host_among_workspaces_is_warned_about(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", workspaces=HOSTS_CONFIG)
    pytester.makepyfile(
        test_implicit="def test_local(host):\n    assert host.backend.NAME == 'local'\n",
        test_explicit=(
            "testinfra_hosts = ['local://']\n\n"
            "def test_meant(host):\n    assert host.backend.NAME == 'local'\n"
        ),
    )
    with_config = pytester.runpytest_subprocess("--ws-config", "workspaces.toml")
    with_config.assert_outcomes(passed=2, warnings=1)
    with_config.stdout.fnmatch_lines(
        ["*LocalHostWarning: test_implicit.py::test_local[[]local[]]: testinfra's `host` here "
         "is this machine (local://), not a workspace.*--ws-hosts=NAME*"]
    )  # fmt: skip
    assert "test_meant" not in with_config.stdout.str().split("warnings summary")[-1]
    # Without workspaces in the session, testinfra's `host` is as testinfra has it.
    plain = pytester.runpytest_subprocess("-v")
    plain.assert_outcomes(passed=2)
    plain.stdout.fnmatch_lines(["*test_implicit.py::test_local[[]local[]] PASSED*"])
    assert "LocalHostWarning" not in plain.stdout.str()


def test_a_conftest_host_still_wins(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import pytest\n\n@pytest.fixture\ndef host():\n    return 'mine'\n")
    pytester.makefile(".toml", workspaces=HOSTS_CONFIG)
    pytester.makepyfile("def test_x(host):\n    assert host == 'mine'\n")
    result = pytester.runpytest_subprocess(
        "--ws-config", "workspaces.toml", "--ws-hosts", "alpha", "-v"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*::test_x PASSED*"])


def test_testinfra_s_sudo_options_mean_with_ws_hosts_what_they_mean_anywhere(
    real: pytest.Pytester,
) -> None:
    """``--sudo`` runs every command of a suite written for a root login as root, through
    the workspace's privilege tool (a root login itself stays refused); ``--sudo-user``
    as that user. Control: the same suite without them runs as the workspace user."""
    real.makepyfile(
        test_who="""
        import os

        def test_who(host):
            assert host.check_output("id -un") == os.environ["WANTED"]
        """
    )
    for flags, wanted in (((), "dev"), (("--sudo",), "root"),
                          (("--sudo", "--sudo-user", "nobody"), "nobody")):  # fmt: skip
        with pytest.MonkeyPatch.context() as env:
            env.setenv("WANTED", wanted)
            result = real.runpytest_subprocess(
                "--ws-config", "workspaces.toml", "--ws-hosts", "alpha", *flags,
                "-p", "no:cacheprovider",
            )  # fmt: skip
        result.assert_outcomes(passed=1)


ROOT_SUITE = PLAIN_SUITE.parent / "root_login" / "test_as_root.py"


def test_a_suite_written_for_a_root_login_runs_unchanged_with_sudo(real: pytest.Pytester) -> None:
    """A Docker-style testinfra file (root login, ``host.sudo("nobody")``) on a container
    and a VM through ``--ws-hosts`` and testinfra's ``--sudo``: no shim, no conftest."""
    real.makefile(".toml", workspaces=HOSTS_CONFIG)
    real.makepyfile(test_as_root=ROOT_SUITE.read_text())
    result = real.runpytest_subprocess(
        "--ws-config", "workspaces.toml", "--ws-hosts", "alpha,vmone", "--sudo",
        "-p", "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(passed=2 * 4)
