"""The create-workspace skill, as an agent follows it: every shell line it tells the agent
to run, run in order in a directory whose ``workspaces.toml`` the skill's entry is appended
to, each one exiting 0; ``wsfixture skill --install`` puts it where agents look."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.leaks import leftovers
from tests.support.prereqs import require_root_and_tools
from wsfixture.cli.commands.agents import skill_text
from wsfixture.host import system
from wsfixture.model.config import config_from_toml

BASE = """
[network]
namespace = "{ns}"

[defaults]
stateRoot = "{state}"
packages = ["curl"]
"""


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def test_every_command_of_the_skill_runs_as_written(tmp_path: Path) -> None:
    require_root_and_tools("systemd-nspawn", "ssh")
    text = skill_text()
    assert text.startswith("---\nname: create-workspace\ndescription: ")
    [entry] = blocks(text, "toml")
    ns = f"wsfsk-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "workspaces.toml"
    config.write_text(BASE.format(ns=ns, state=tmp_path / "state") + entry)
    config_from_toml(config.read_text())  # the entry is a valid workspace as written
    lines = [line for block in blocks(text, "sh") for line in block.splitlines()
             if line.strip() and not line.startswith("#")]  # fmt: skip
    assert lines[0] == "wsfixture plan"
    assert lines[-1] == "wsfixture down reviewer"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("WSFIXTURE_CONFIG", None)
    said = {}
    try:
        for line in lines:
            done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, text=True,
                                  capture_output=True, timeout=900, check=False)  # fmt: skip
            assert done.returncode == 0, f"{line}: {done.stdout}\n{done.stderr}"
            said[line] = done.stdout
    finally:
        subprocess.run([sys.executable, "-m", "wsfixture.cli", "gc", "--lab", ns], check=False)
        system.remove_tree(tmp_path / "state")
    assert "reviewer" in said["wsfixture plan"]
    assert "FAIL" not in said["wsfixture check reviewer"]
    assert said["wsfixture exec reviewer git --version"].startswith("git version ")
    assert said["wsfixture ssh reviewer uname -a"].startswith("Linux reviewer ")
    assert leftovers(ns) == {}

    installed = tmp_path / "skills"
    subprocess.run([sys.executable, "-m", "wsfixture.cli", "skill", "--install", str(installed)],
                   check=True, capture_output=True)  # fmt: skip
    assert (installed / "create-workspace" / "SKILL.md").read_text() == text
