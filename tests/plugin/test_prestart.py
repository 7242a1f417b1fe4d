"""``--ws-prestart``: the next test's workspace starts while this test runs, each test still
gets a fresh workspace of its own, and one that no test takes is stopped. Containers under
``all`` (a container starts in well under a second); restored VMs, the default, run the
same way in ``tests/reliability/test_churn.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.leaks import leftovers
from tests.support.prereqs import require_root_and_tools
from tests.support.pytester import labs_in

SUITE = """
import json, os, time
from pathlib import Path

import pytest

SEEN = []  # the names of this session's earlier tests' workspaces


@pytest.mark.workspace(packages=[])
@pytest.mark.parametrize("i", range(3))
def test_each(workspace, ws_lab, ws_inventory_of, i):
    # Fresh: nothing a test before wrote is here.
    assert not workspace.host.file("/home/dev/mark").exists
    workspace.succeed("touch /home/dev/mark")
    SEEN.append(workspace.name)
    # A workspace of this lab that no test has had yet: the next test's, started early.
    early, deadline = None, time.monotonic() + 5
    while early is None and time.monotonic() < deadline:
        early = next((n for n in sorted(ws_lab.hosts) if n not in SEEN), None)
        time.sleep(0.05)
    inventory = ws_inventory_of().read_text()
    row = {"i": i, "name": workspace.name, "ip": workspace.ip, "early": early,
           "hostname": workspace.succeed("hostname").strip(),
           "early_in_inventory": early is not None and early in inventory}
    with Path(os.environ["PRESTART_OUT"]).open("a") as out:
        out.write(json.dumps(row) + "\\n")
    print("LAB", ws_lab.name)
"""


@pytest.fixture
def real(pytester: pytest.Pytester) -> pytest.Pytester:
    require_root_and_tools("systemd-nspawn", "mmdebstrap", "dnsmasq")
    return pytester


def run(pytester: pytest.Pytester, tmp_path: Path, prestart: str) -> list[dict[str, object]]:
    out = tmp_path / f"{prestart}.jsonl"
    pytester.makepyfile(test_each=SUITE)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PRESTART_OUT", str(out))
        result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider",
                                               f"--ws-prestart={prestart}")  # fmt: skip
    result.assert_outcomes(passed=3)
    (lab,) = labs_in(result.stdout.str())
    assert leftovers(lab) == {}, "nothing of the session is left, a prestarted one neither"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["i"] for row in rows] == [0, 1, 2]
    assert len({row["name"] for row in rows}) == 3, "a workspace of its own for each test"
    assert len({row["ip"] for row in rows}) == 3
    assert all(row["hostname"] == row["name"] for row in rows)
    return rows


def test_the_next_tests_workspace_starts_while_this_one_runs(
    real: pytest.Pytester, tmp_path: Path
) -> None:
    rows = run(real, tmp_path, "all")
    # Each test saw the next one's workspace up before it began; the last saw none.
    assert [row["early"] for row in rows] == [rows[1]["name"], rows[2]["name"], None]
    assert not any(row["early_in_inventory"] for row in rows), "no test had it yet"


def test_without_prestart_no_workspace_starts_before_its_test(
    real: pytest.Pytester, tmp_path: Path
) -> None:
    """The control: the same suite turned off sees no workspace ahead of its test."""
    rows = run(real, tmp_path, "off")
    assert [row["early"] for row in rows] == [None, None, None]


def test_a_prestarted_workspace_no_test_takes_is_stopped(real: pytest.Pytester) -> None:
    """The test it was started for never runs (-x after a failure): it goes with the
    session, and the failed test's report is the only failure."""
    real.makepyfile(
        """
        import time

        import pytest

        @pytest.mark.workspace(packages=[])
        @pytest.mark.parametrize("i", range(3))
        def test_each(workspace, ws_lab, i):
            print("LAB", ws_lab.name)
            deadline = time.monotonic() + 5
            while len(ws_lab.hosts) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            print("EARLY", sorted(set(ws_lab.hosts) - {workspace.name}))
            assert i != 0, "the first fails, and -x stops the session"
        """
    )
    result = real.runpytest_subprocess("-s", "-x", "-p", "no:cacheprovider", "--ws-prestart=all",
                                       "--log-level=DEBUG")  # fmt: skip
    result.assert_outcomes(failed=1)
    (lab,) = labs_in(result.stdout.str())
    assert re.search(r"EARLY \['ws\d+-1'\]", result.stdout.str()), "the next one had started"
    assert leftovers(lab) == {}
    assert not re.search(r"started before its test, failed", result.stdout.str())
