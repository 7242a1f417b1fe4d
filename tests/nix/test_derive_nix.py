"""nix/derive.nix and wsfixture.model.derive: one algorithm, two implementations, same answers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.prereqs import require
from wsfixture.model import derive

ROOT = Path(__file__).parents[2]
DERIVE_NIX = ROOT / "nix" / "derive.nix"


@pytest.fixture(scope="module", autouse=True)
def _nix() -> None:
    require(shutil.which("nix-instantiate") is not None, "nix-instantiate (Debian package nix-bin)")


def nix_identities(names: list[str]) -> list[dict[str, object]]:
    expr = (
        f"let d = import {DERIVE_NIX}; in "
        f"map (n: d.identity n \"192.168.83.10\") (builtins.fromJSON ''{json.dumps(names)}'')"
    )
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: list[dict[str, object]] = json.loads(out.stdout)
    return result


def test_shared_vectors() -> None:
    names = [f"ws{i}" for i in range(300)] + ["myproject", "nixpkgs-contrib", "a", "x" * 53]
    assert nix_identities(names) == [derive.identity(n, "192.168.83.10") for n in names]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?", fullmatch=True),
                min_size=1, max_size=25))  # fmt: skip
def test_generated_names_agree(names: list[str]) -> None:
    assert nix_identities(names) == [derive.identity(n, "192.168.83.10") for n in names]


def test_every_nix_file_parses() -> None:
    files = sorted(ROOT.glob("**/*.nix"))
    assert DERIVE_NIX in files
    for path in files:
        result = subprocess.run(
            ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{path}: {result.stderr}"
