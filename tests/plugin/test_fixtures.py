"""The plugin's fixtures and markers, driven as users drive them: pytest in a subprocess."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.leaks import leftovers
from tests.support.pytester import labs_in


def test_fixtures_and_marker_forms(real: pytest.Pytester) -> None:
    real.makepyfile(
        """
        import pytest

        def test_default(workspace):
            assert workspace.spec.type == "container"
            assert workspace.host.service("ssh").is_running
            assert workspace.conn.run("id -un", hide=True).stdout.strip() == "dev"

        @pytest.mark.workspace("alpha")
        def test_by_name(workspace):
            assert workspace.ip == "192.168.83.10"
            assert workspace.succeed("hostname").strip() == "alpha"

        @pytest.mark.workspace(packages=["curl"])
        def test_inline(workspace):
            assert workspace.host.package("curl").is_installed

        @pytest.mark.parametrize("workspace", ["container"], indirect=True)
        def test_indirect(workspace):
            assert workspace.spec.type == "container"

        SEEN = []

        @pytest.mark.workspace(scope="module")
        def test_shared_1(workspace):
            SEEN.append(workspace)

        @pytest.mark.workspace(scope="module")
        def test_shared_2(workspace):
            SEEN.append(workspace)
            assert SEEN[0] is SEEN[1]

        def test_factory(workspace_factory, ws_lab):
            a = workspace_factory()
            b = workspace_factory("alpha", packages=[])
            c = workspace_factory("named")
            assert len({a.ip, b.ip, c.ip}) == 3
            a.succeed("ping -c 1 -W 2 alpha")
            a.succeed("ping -c 1 -W 2 named")
            assert ws_lab.ssh_config.exists()
            print("LAB", ws_lab.name)
        """
    )
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml", "-s")
    result.assert_outcomes(passed=7)
    labs = labs_in(result.stdout.str())
    assert len(labs) == 1, "one lab for the session, and the test saw it"
    for lab in labs:
        assert leftovers(lab) == {}


def test_unknown_marker_argument_is_a_usage_error(real: pytest.Pytester) -> None:
    real.makepyfile(
        """
        import pytest

        @pytest.mark.workspace(tpye="vm")
        def test_x(workspace):
            pass
        """
    )
    result = real.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*test_x: @pytest.mark.workspace(tpye='vm'): unknown argument 'tpye';"
            " did you mean 'type'?"
        ]
    )


def test_a_marker_mistake_names_the_test_and_the_marker(real: pytest.Pytester) -> None:
    """A bad field value, or a name the config does not have, is a usage error at collection
    that names the test and the marker and suggests the fix; no wsfixture traceback."""
    real.makepyfile(
        """
        import pytest

        @pytest.mark.workspace(type="contianer")
        def test_typo(workspace):
            pass
        """
    )
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*test_typo: @pytest.mark.workspace(type='contianer'): type: is not one of the choices"
        " (got 'contianer'); allowed: 'vm' or 'container'; did you mean 'container'?"
    ])  # fmt: skip
    assert "workspaces.toml" not in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    real.makepyfile(
        """
        import pytest

        @pytest.mark.workspace("alpah")
        def test_name(workspace):
            pass
        """
    )
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*test_name: @pytest.mark.workspace('alpah'): no workspace named 'alpah' in"
        " workspaces.toml; did you mean 'alpha'? known: alpha*"
    ])  # fmt: skip


def test_a_factory_mistake_names_the_test_and_the_call(real: pytest.Pytester) -> None:
    real.makepyfile(
        """
        def test_factory(workspace_factory):
            workspace_factory("web", type="contianer", memroy=512)
        """
    )
    result = real.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*invalid wsfixture config in test_a_factory_mistake_names_the_test_and_the_call.py::"
        "test_factory: workspace_factory('web', type='contianer', memroy=512): 2 problems*",
        "*workspace.memroy: unknown key; did you mean 'memory'?*",
        "*did you mean 'container'?*",
    ])  # fmt: skip
    assert "src/wsfixture" not in out, "no wsfixture-internal frames"


def test_a_module_shares_a_pair_of_workspaces(real: pytest.Pytester) -> None:
    real.makepyfile(
        test_pair="""
        import pytest

        SEEN = []

        @pytest.fixture(scope="module")
        def pair(ws_factory_module):
            return ws_factory_module("web"), ws_factory_module("db")

        def test_web_reaches_db(pair):
            web, db = pair
            SEEN.append(pair)
            assert web.succeed("getent hosts db").split()[0] == db.ip
            web.succeed("echo from-first-test > /tmp/mark")

        def test_the_same_pair(pair):
            SEEN.append(pair)
            assert SEEN[0] is SEEN[1]
            assert pair[0].succeed("cat /tmp/mark") == "from-first-test\\n"

        def test_failing(pair):
            pair[1].succeed("echo db-was-here")
            assert False, "on purpose"
        """
    )
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml")
    result.assert_outcomes(passed=2, failed=1)
    # The failed test's report shows the workspaces it used through the module's pair.
    result.stdout.fnmatch_lines(["*wsfixture db: commands*", "*$ echo db-was-here*"])
    for lab in labs_in(result.stdout.str()):
        assert leftovers(lab) == {}


def test_a_long_start_says_what_it_does_in_a_verbose_run(real: pytest.Pytester) -> None:
    real.makepyfile(
        """
        import pytest

        @pytest.mark.workspace(type="vm", vcpu=1, memory=768)
        def test_vm(workspace):
            print("captured-output-of-the-test")
            assert workspace.succeed("true") == ""
        """
    )
    verbose = real.runpytest_subprocess("-v")
    verbose.assert_outcomes(passed=1)
    verbose.stdout.fnmatch_lines(
        [
            "wsfixture: starting ws* (vm): * (*s)",
            "wsfixture: starting ws* (vm): done in *s",
        ]
    )
    # What it was doing when the line was written, not a bare "working": the restore (or a
    # cold boot) or readiness's login, whichever a start of this speed is in after 2 s.
    phase = r"\(vm\): (restoring from a template|cold boot|waiting for sshd on )"
    assert re.search(phase, verbose.stdout.str()), verbose.stdout.str()
    quiet = real.runpytest_subprocess()
    quiet.assert_outcomes(passed=1)
    assert "wsfixture: starting" not in quiet.stdout.str(), "not without -v or a terminal"


def test_state_dir_is_used(real: pytest.Pytester, tmp_path: Path) -> None:
    real.makepyfile("def test_x(workspace):\n    pass\n")
    state = tmp_path / "state"
    result = real.runpytest_subprocess("--ws-state-dir", str(state))
    result.assert_outcomes(passed=1)
    assert list(state.glob("*/ssh-host-keys/ssh_host_ed25519_key"))


def test_options_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--ws-config*", "*--ws-keep*", "*--ws-timeout*", "*--ws-verify*"])
    result = pytester.runpytest_subprocess("--fixtures")
    result.stdout.fnmatch_lines(["*workspace -- *", "*workspace_factory -- *"])


def test_bad_keep_ini_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nwsfixture_keep = sometimes\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_parallel_workers_get_their_own_labs(real: pytest.Pytester) -> None:
    real.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.workspace("alpha")
        def test_same_ip_everywhere(workspace, n, ws_lab):
            assert workspace.ip == "192.168.83.10"
            assert workspace.succeed("hostname").strip() == "alpha"
            with open("labs.txt", "a") as labs:
                labs.write(ws_lab.name + "\\n")
        """
    )
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml", "-n", "2")
    result.assert_outcomes(passed=4)
    labs = (real.path / "labs.txt").read_text().split()
    assert len(labs) == 4
    assert len(set(labs)) == 2, f"two workers, two labs: {labs}"
    assert {lab.rsplit("-", 1)[1] for lab in labs} == {"gw0", "gw1"}
    for lab in set(labs):
        assert leftovers(lab) == {}


def test_cleanup_failure_on_a_worker_fails_the_run(real: pytest.Pytester) -> None:
    """A workspace that cannot be released (an immutable file in its runtime directory)
    fails the whole run with the reason, also from an xdist worker, whose own exit status
    the controller ignores; once the file is freed, gc reaps what was left."""
    where = real.path / "pinned-at"
    real.makepyfile(
        f"""
        import subprocess

        def test_pins_a_file(workspace, ws_lab):
            pinned = workspace._runtime_dir / "pinned"
            pinned.write_text("cannot be removed")
            subprocess.run(["chattr", "+i", str(pinned)], check=True)
            open({str(where)!r}, "w").write(ws_lab.name + " " + str(pinned))

        def test_other():
            pass
        """
    )
    result = real.runpytest_subprocess("-n", "2")
    lab_name, pinned = where.read_text().split()
    try:
        result.assert_outcomes(passed=2)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(
            ["*wsfixture: gw?: * cleanup step(s) failed*", f"*Operation not permitted*{pinned}*"]
        )
    finally:
        subprocess.run(["chattr", "-i", pinned], check=True)
    assert leftovers(lab_name), "the unreleased workspace is still on record"
    from wsfixture.cli.main import main

    assert main(["gc"]) == 0
    assert leftovers(lab_name) == {}


def test_ws_inventory_lists_the_tests_workspaces_for_ansible(real: pytest.Pytester) -> None:
    real.makepyfile(
        """
        import configparser

        def test_inventory(workspace_factory, ws_inventory_of):
            a = workspace_factory("alpha")
            b = workspace_factory("beta", type="container")
            text = ws_inventory_of().read_text()
            lines = {line.split()[0]: line for line in text.splitlines()[1:]}
            assert text.splitlines()[0] == "[workspaces]"
            assert set(lines) == {"alpha", "beta"}
            assert f"ansible_user={a.user}" in lines["alpha"]
            assert f"wsfixture_ip={b.ip}" in lines["beta"]
            assert "ansible_ssh_common_args='-F " in lines["alpha"]

        def test_inventory_of_the_workspace(workspace, ws_inventory):
            assert ws_inventory.read_text().splitlines()[1].split()[0] == workspace.name
        """
    )
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml")
    result.assert_outcomes(passed=2)


WORLD_CONFIG = """
[network]
internet = ["world.test"]  # every workspace: the world's name, nothing else
"""


@pytest.mark.alone  # the worlds on the machine are counted before and after
def test_ws_world_is_the_lab_s_internet_and_goes_with_the_session(real: pytest.Pytester) -> None:
    """With --ws-world, a workspace reaches the world's name over HTTP through the lab's
    uplink, and its allowlist still refuses the other name; without it, asking for
    ws_world is a usage error that names the option. Nothing of the world stays."""
    real.makefile(".toml", world=WORLD_CONFIG)
    real.makepyfile(
        """
        import shlex

        GET = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read()"
        GET += ".decode(), end=str())"

        def fetch(url):
            return f"python3 -c {shlex.quote(GET)} {url}"

        def test_the_world_answers(workspace, ws_world):
            assert workspace.succeed(fetch(f"http://{ws_world.name}/")) == ws_world.page
            assert workspace.run(fetch(f"http://{ws_world.other_name}/"))[0] != 0
        """
    )

    def worlds() -> set[str]:  # the worlds' namespaces
        return {p.name for p in Path("/run/netns").iterdir() if p.name.startswith("wsft-")}

    before = worlds()
    result = real.runpytest_subprocess("--ws-config", "world.toml", "--ws-world",
                                       "-p", "no:cacheprovider")  # fmt: skip
    result.assert_outcomes(passed=1)
    assert worlds() <= before, "the world went"
    without = real.runpytest_subprocess("--ws-config", "world.toml", "-p", "no:cacheprovider")
    without.assert_outcomes(errors=1)
    without.stdout.fnmatch_lines(["*ws_world: run pytest with --ws-world*"])


def test_a_conftest_converges_each_workspace_once_before_its_tests(
    real: pytest.Pytester,
) -> None:
    """``pytest_ws_converge``: Molecule's converge step, once per workspace the session
    starts, with an inventory of that workspace alone; its failure is the start's."""
    real.makeconftest(
        """
        def pytest_ws_converge(workspace, inventory):
            text = inventory.read_text()
            assert workspace.name in text and "ansible_ssh_common_args" in text, text
            if workspace.name != "alpha":
                raise RuntimeError("this playbook fails")
            workspace.succeed("echo converged >> /tmp/converged")
        """
    )
    real.makepyfile(
        """
        import pytest

        @pytest.mark.workspace("alpha", scope="session")
        def test_one(workspace):
            assert workspace.succeed("cat /tmp/converged") == "converged\\n"

        @pytest.mark.workspace("alpha", scope="session")
        def test_two(workspace):
            assert workspace.succeed("cat /tmp/converged") == "converged\\n"  # once

        def test_other(workspace):
            pass
        """
    )
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: this playbook fails*"])
