"""What installs wsfixture says the same thing everywhere: pyproject.toml and the flake."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_flake_packages_pyprojects_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {
        re.split(r"[<>=!~\s\[]", dep, maxsplit=1)[0] for dep in pyproject["project"]["dependencies"]
    }
    flake = (ROOT / "flake.nix").read_text()
    found = re.search(r"dependencies = with pkgs\.python3Packages; \[([^\]]*)\];", flake)
    assert found, "the flake's package has no dependencies list"
    assert set(found.group(1).split()) == wanted
    assert "argcomplete" in wanted, "cli/main.py imports it on every start"
