"""The pytest plugin, driven the way users drive it: pytest runs in a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.support.leaks import leftovers
from tests.support.prereqs import require_root_and_tools
from tests.support.registry import local_registry
from wsfixture import checks
from wsfixture.host import system
from wsfixture.image.recipe import ImageRecipe
from wsfixture.image.registry import Reference, Registry

CONFIG = """
[workspaces.alpha]
type = "container"
ip = "192.168.83.10"
packages = []
"""


@pytest.fixture
def real(pytester: pytest.Pytester) -> pytest.Pytester:
    require_root_and_tools("systemd-nspawn", "mmdebstrap", "dnsmasq")
    pytester.makefile(".toml", workspaces=CONFIG)
    return pytester


def labs_in(output: str) -> set[str]:
    return set(re.findall(r"wsf-[0-9a-f]{10}-\w+", output))


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
    result.assert_outcomes(passed=2, failed=2)
    (state,) = set(Path("/tmp").glob("wsstate-*")) - states_before  # kept: keys in use
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*kept workspaces*", "*ssh -F */ssh_config ws*", "*remove them all: wsfixture gc --lab*"]
    )
    kept = re.findall(r"^(\S+) \(container", out, re.M)
    assert len(kept) == 2
    assert kept[0].startswith("ws")
    assert kept[1] == "modbad"
    lab = re.search(r"gc --lab (\S+)", out)
    assert lab is not None
    lab_name = lab.group(1)
    try:
        assert leftovers(lab_name).get("netns") == lab_name, "the kept workspace still runs"
    finally:
        from wsfixture.cli.main import main

        assert main(["gc", "--lab", lab_name]) == 0
    assert leftovers(lab_name) == {}
    assert not state.exists(), "gc --lab removes the kept session's state dir, keys included"


def test_verify_collects_one_item_per_check(real: pytest.Pytester) -> None:
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml", "--ws-verify", "-v")
    result.assert_outcomes(passed=len(checks.CHECKS))
    result.stdout.fnmatch_lines(["*verify?alpha:networking:dns? PASSED*"])
    result.stdout.fnmatch_lines(["*verify?alpha:networking:resolv-conf? PASSED*"])


def test_verify_items_name_the_config_given_by_the_ini(real: pytest.Pytester) -> None:
    real.makeini("[pytest]\nwsfixture_config = workspaces.toml\n")
    real.makeconftest(
        """
        def pytest_collection_finish(session):
            print("LOCATIONS", sorted({item.location[0] for item in session.items}))
        """
    )
    result = real.runpytest_subprocess("--ws-verify", "-k", "networking", "-s")
    result.assert_outcomes(passed=4)
    # reportinfo's path: the config the ini gave, not "." as when only --ws-config was read.
    result.stdout.fnmatch_lines(["LOCATIONS ['workspaces.toml']"])


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


def test_options_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--ws-config*", "*--ws-keep*", "*--ws-timeout*", "*--ws-verify*"])
    result = pytester.runpytest_subprocess("--fixtures")
    result.stdout.fnmatch_lines(["*workspace -- *", "*workspace_factory -- *"])


def test_bad_keep_ini_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nwsfixture_keep = sometimes\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_state_dir_is_used(real: pytest.Pytester, tmp_path: Path) -> None:
    real.makepyfile("def test_x(workspace):\n    pass\n")
    state = tmp_path / "state"
    result = real.runpytest_subprocess("--ws-state-dir", str(state))
    result.assert_outcomes(passed=1)
    assert list(state.glob("*/ssh-host-keys/ssh_host_ed25519_key"))


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


# -- testinfra's `host` ---------------------------------------------------------------------

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


def test_a_session_pushes_what_it_built_and_another_pulls_it(
    real: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ws-image-cache-push: a session on an empty cache builds its images and pushes
    them; --ws-image-cache: a second session on another empty cache pulls them and builds
    nothing."""
    require_root_and_tools("docker-registry")
    real.makepyfile(
        """
        import pytest

        @pytest.mark.workspace(packages=["tree"])
        def test_tree(workspace):
            assert workspace.succeed("tree --version").startswith("tree")
        """
    )
    (tmp_path / "registry").mkdir()
    try:
        push_and_pull(real, tmp_path, monkeypatch)
    finally:  # the images' trees (device nodes): not left to pytest's kept tmp dirs
        for cache in (tmp_path / "first", tmp_path / "second"):
            if cache.exists():  # the second is not made if the first session failed
                system.remove_tree(cache)


def push_and_pull(real: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with local_registry(tmp_path / "registry") as (host, _):
        ref = f"--ws-image-cache={host}/team/wsfixture-images"
        monkeypatch.setenv("WSFIXTURE_CACHE_DIR", str(tmp_path / "first"))
        first = real.runpytest_subprocess(
            ref, "--ws-image-cache-push", "-v", "-p", "no:cacheprovider"
        )
        first.assert_outcomes(passed=1)
        layer = ImageRecipe.for_packages(["tree"], "container")
        assert layer.base is not None
        keys = [layer.base.key, layer.key]
        images = Registry(Reference.parse(f"{host}/team/wsfixture-images"))
        for key in keys:  # built on the empty cache, then pushed
            assert images.get_manifest(key) is not None, key
        monkeypatch.setenv("WSFIXTURE_CACHE_DIR", str(tmp_path / "second"))
        second = real.runpytest_subprocess(ref, "-p", "no:cacheprovider")
        second.assert_outcomes(passed=1)
        for key in keys:  # pulled, not built: the very build the first session made
            ready = (tmp_path / "second" / "images" / key / "ready").read_text()
            assert ready == (tmp_path / "first" / "images" / key / "ready").read_text(), key


def readme_example(heading: str, page: str = "faults.md") -> str:
    """The first Python block under ``heading`` in a guide, as written there."""
    guide = Path(__file__).parents[2] / "docs" / "guides" / page
    section = guide.read_text().split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_pytest_and_checkpoint_guides_examples_run_as_written(real: pytest.Pytester) -> None:
    """The pytest guide's showcase and the checkpoints guide's example, as written there,
    against a config that has their ``myproject``."""
    real.makefile(".toml", workspaces=CONFIG + MYPROJECT)
    real.makepyfile(
        test_showcase=readme_example("# Writing tests with pytest", "pytest.md"),
        test_checkpoint=readme_example("# Checkpoints and rollback", "checkpoints.md"),
    )
    result = real.runpytest_subprocess("--ws-config", "workspaces.toml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)


MYPROJECT = """
[workspaces.myproject]
type = "container"
ip = "192.168.83.20"
"""


def test_the_readme_faults_example_runs_and_a_failure_shows_the_timeline(
    real: pytest.Pytester, tmp_path: Path
) -> None:
    """The README's example as it is written; then a failing test under a partition: its
    report, artifacts and JUnit property say what was broken and when; nothing is left."""
    real.makepyfile(
        readme_example("# Faults between workspaces")
        + """

def test_fails_under_a_partition(workspace_factory, ws_faults):
    a, b = workspace_factory(), workspace_factory()
    ws_faults.partition([a], [b])
    a.succeed(f"ping -c 1 -W 1 {b.ip}")
"""
    )
    out, junit = tmp_path / "artifacts", tmp_path / "junit.xml"
    result = real.runpytest_subprocess(
        "--ws-config", "workspaces.toml", "--ws-artifacts", str(out), f"--junitxml={junit}",
        "-p", "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    assert "wsfixture faults" in text
    # Still on when the test failed: the report says so.
    assert re.search(r"\d\d:\d\d:\d\d-active partition ws\S* \| ws", text), text
    (test_dir,) = out.iterdir()
    assert "partition" in (test_dir / "faults.txt").read_text()
    properties = {p.get("name"): p.get("value") for p in ElementTree.parse(junit).iter("property")}
    timeline = json.loads(properties["wsfixture_faults"])
    assert timeline[0]["fault"].startswith("partition ")
    assert timeline[0]["ended"] >= timeline[0]["started"]
    assert not any(path.name.startswith("faults-") for path in ledger_files()), "all healed"


def ledger_files() -> list[Path]:
    from wsfixture.host import settings

    directory = settings.current().ledger_dir
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


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


WORLD_CONFIG = """
[network]
internet = ["world.test"]  # every workspace: the world's name, nothing else
"""


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

    def worlds() -> set[str]:  # the world's namespaces (others may come and go meanwhile)
        return {p.name for p in Path("/run/netns").iterdir() if p.name.startswith("wsft-")}

    before = worlds()
    result = real.runpytest_subprocess("--ws-config", "world.toml", "--ws-world",
                                       "-p", "no:cacheprovider")  # fmt: skip
    result.assert_outcomes(passed=1)
    assert worlds() <= before, "the world went"
    without = real.runpytest_subprocess("--ws-config", "world.toml", "-p", "no:cacheprovider")
    without.assert_outcomes(errors=1)
    without.stdout.fnmatch_lines(["*ws_world: run pytest with --ws-world*"])
