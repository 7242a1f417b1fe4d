"""The Python API outside pytest, as a newcomer uses it: ``examples/python/first_workspaces.py``
run by a plain ``python3`` (a container and a VM in one line each, a lab of two, a
workspace whose starting thread ended, and ``connect`` with a checkpoint and a rollback
through the supervisor of a ``wsfixture up`` workspace); the Python blocks of the README,
the tutorial, the Python and the agents guides run as written (scripts by ``python3``, tests by
``pytest``); bad input refused before anything is made; and nothing left behind."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import wsfixture
from tests.support.held_writes import POWER_DOWN, WRITTEN, stopped
from tests.support.leaks import footprint, leftovers
from tests.support.prereqs import require_root_and_tools
from wsfixture.api import LAB_PREFIX
from wsfixture.host import system

ROOT = Path(__file__).parents[2]


def api_footprint() -> set[str]:
    """What the API's own labs have on the machine (`wsfixture serve`'s are named apart:
    a server beside these tests is not counted)."""
    return {entry for entry in footprint() if LAB_PREFIX in entry}


CONFIG = """
[network]
namespace = "{ns}"
internet = false

[defaults]
stateRoot = "{state}"

[workspaces.dev]
type = "container"
ip = "192.168.83.10"
"""


def wsf(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "wsfixture.cli", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Path]:
    """A config whose ``dev`` runs under ``wsfixture up``; gone afterwards."""
    require_root_and_tools("systemd-nspawn")
    ns = f"wsfapi-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "workspaces.toml"
    config.write_text(CONFIG.format(ns=ns, state=tmp_path / "state"))
    wsf(config, "up", "dev")
    yield config
    subprocess.run([sys.executable, "-m", "wsfixture.cli", "gc", "--lab", ns], check=False)
    assert leftovers(ns) == {}
    # Its state outlives `down` by design; here it goes too: its checkpoints' copies of
    # the container's root (setgid directories of the containers' ids) are not pytest's
    # to keep.
    system.remove_tree(tmp_path / "state")


def test_a_newcomer_s_script_runs_as_written(up: Path) -> None:
    before = api_footprint()
    script = ROOT / "examples" / "python" / "first_workspaces.py"
    done = subprocess.run([sys.executable, str(script), str(up), "dev"], capture_output=True,
                          text=True, timeout=1200, check=False, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("container: Linux "), lines
    assert lines[0].endswith(" as dev"), lines
    assert lines[1] == "vm: qemu ws1"
    assert "app reaches db by name: True" in lines
    assert "after its thread ended: alive" in lines
    assert "connected, rolled back: mark" in lines
    assert api_footprint() == before, "the one-liners and the lab left nothing behind"
    assert wsf(up, "exec", "dev", "cat", "/var/tmp/mark") == "mark\n", "connect left it running"
    assert "marked" not in wsf(up, "checkpoints", "dev")


def test_bad_input_is_refused_before_anything_is_made(up: Path) -> None:
    before = api_footprint()
    with pytest.raises(wsfixture.ConfigError, match="tyep"):
        wsfixture.workspace(tyep="vm")
    with pytest.raises(wsfixture.ConfigError, match="memory"):
        wsfixture.workspace(type="vm", memory="lots")
    assert api_footprint() == before
    with pytest.raises(wsfixture.ConfigError, match=r"no workspace named 'nobody' in .*known: dev"):
        wsfixture.connect("nobody", up)
    wsf(up, "down", "dev")
    with pytest.raises(wsfixture.WorkspaceGone, match="start it with `wsfixture up dev`"):
        wsfixture.connect("dev", up)


@pytest.mark.vm
def test_a_vm_whose_state_goes_with_its_lab_is_ended_without_its_shutdown(
    tmp_path: Path,
) -> None:
    """A lab given no state root removes the state it made with it: its VMs are stopped
    as the pytest plugin stops a test's, the guest's writes to its shares (here a host
    directory of the user's, which outlives the lab) written out, no shutdown inside.
    The control: the same VM with a state root of the user's is shut down."""
    host = tmp_path / "shared"
    host.mkdir()
    host.chmod(0o777)  # the workspace user writes there
    share = {"source": str(host), "target": "/srv/rw"}
    before = api_footprint()
    ws = wsfixture.workspace(type="vm", vcpu=1, memory=768, shares=[share])
    data, said = stopped(ws, ("/srv/rw", host), ws.stop)
    assert data == WRITTEN, "the VM's write to its share was lost"
    assert POWER_DOWN not in said, said[-2000:]
    assert api_footprint() == before, "the lab and its state went with it"

    kept = tmp_path / "state"
    ws = wsfixture.workspace(type="vm", vcpu=1, memory=768, shares=[share], state_root=kept)
    data, said = stopped(ws, ("/srv/rw", host), ws.stop)
    assert data == WRITTEN
    assert POWER_DOWN in said, said[-2000:]
    assert api_footprint() == before


def python_blocks(page: str) -> list[str]:
    text = (ROOT / page).read_text()
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def run_block(block: str, where: Path, name: str) -> str:
    """A block as a user runs it: a test file by pytest, anything else by python3."""
    path = where / name
    path.write_text(block)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(path)] \
        if "def test_" in block else [sys.executable, str(path)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False,
                          cwd=where)  # fmt: skip
    assert done.returncode == 0, f"{name}:\n{block}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_python_blocks_of_the_readme_and_guides_run_as_written(
    up: Path, tmp_path: Path
) -> None:
    before = api_footprint()
    pages = ("README.md", "docs/tutorial.md", "docs/guides/python.md", "docs/guides/agents.md")
    readme, tutorial, guide, agents = (python_blocks(page) for page in pages)
    # The agents guide's second block is an E2B client: test_serve.py runs it on a server.
    assert (len(readme), len(tutorial), len(guide), len(agents)) == (3, 2, 3, 2)
    for index, block in enumerate(readme + tutorial + guide[:2] + agents[:1]):
        run_block(block, tmp_path, f"test_block_{index}.py" if "def test_" in block
                  else f"block_{index}.py")  # fmt: skip
    # The guide's connect example, beside the `wsfixture up` config it names.
    (tmp_path / "workspaces.toml").write_text(up.read_text())
    run_block(guide[2], tmp_path, "connect.py")
    assert "green" in wsf(up, "checkpoints", "dev"), "its checkpoint, made through connect"
    assert api_footprint() == before


def test_ws_attach_runs_a_testinfra_suite_on_an_up_workspace_and_leaves_it_running(
    up: Path, pytester: pytest.Pytester
) -> None:
    """A Molecule-style flow: the workspace is up (and converged) before, the suite runs
    through its pinned login with --ws-attach, and it is still running afterwards."""
    pytester.makepyfile(
        test_converged="""
        def test_it_is_the_up_workspace(host):
            assert host.check_output("hostname") == "dev"
            assert host.file("/tmp/converged").exists
        """
    )
    wsf(up, "exec", "dev", "touch", "/tmp/converged")  # what a playbook would have done
    result = pytester.runpytest_subprocess(
        "--ws-config", str(up), "--ws-attach", "dev", "-p", "no:cacheprovider", "-v"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_it_is_the_up_workspace[[]wsfixture://dev[]] PASSED*"])
    assert "dev" in wsf(up, "list")  # not stopped
    assert wsf(up, "exec", "dev", "hostname") == "dev\n"
    refused = pytester.runpytest_subprocess("--ws-config", str(up), "--ws-attach", "nosuch")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--ws-attach: no workspace named 'nosuch'*"])
