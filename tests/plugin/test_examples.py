"""The guides' pytest examples run as written, and the shared image cache across sessions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.support.prereqs import require_root_and_tools
from tests.support.pytester import CONFIG, ledger_files
from tests.support.registry import local_registry
from wsfixture.host import system
from wsfixture.image.recipe import ImageRecipe
from wsfixture.image.registry import Reference, Registry


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


@pytest.mark.alone  # "all healed" is read from the whole ledger
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
