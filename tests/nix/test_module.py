"""nix/module.nix and nix/validate.nix, evaluated without nixpkgs (no binary cache here):
the option declarations and the assertions, against the Python config, on the same inputs.

What this cannot check, and `make nixos-test` does where Nix and its cache are available:
that the module's realisation (containers, microvm.nix VMs, bridge, NAT) builds and boots.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from wsfixture import ConfigError, config_from_dict
from wsfixture.model import fields
from wsfixture.model.config import NetworkSpec, UserSpec, WorkspaceSpec

ROOT = Path(__file__).parents[2]
STUB = Path(__file__).with_name("stub-lib.nix")
MODULE = ROOT / "nix" / "module.nix"


@pytest.fixture(scope="module", autouse=True)
def _nix() -> None:
    require(shutil.which("nix-instantiate") is not None, "nix-instantiate (Debian package nix-bin)")


def nix_eval(expr: str) -> Any:
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


NETWORK = {
    "subnet": "192.168.83.0/24",
    "gateway": "192.168.83.1",
    "rangeStart": "192.168.83.10",
    "rangeEnd": "192.168.83.254",
}


def module_with(cfg: dict[str, Any]) -> str:
    """The module applied to option values as NixOS would fill them (network defaults)."""
    cfg = {"network": NETWORK, **cfg}
    return (
        f"(import {MODULE} {{ lib = import {STUB}; pkgs = {{ }}; "
        f"config = {{ sandboxed-workspace = builtins.fromJSON ''{json.dumps(cfg)}''; "
        f'system.stateVersion = "24.05"; }}; }})'
    )


def test_workspace_options_match_python() -> None:
    options = nix_eval(
        f"builtins.mapAttrs (n: o: o.default or null) "
        f"(({module_with({'defaults': {'user': {'name': 'dev'}}})}).options"
        f'.sandboxed-workspace.workspaces.type.value.value {{ name = "x"; }}).options'
    )
    declared = dict(fields.declarations(WorkspaceSpec))
    assert set(options) == {fields.camel(f.name) for f in declared}
    for f, decl in declared.items():
        key = fields.camel(f.name)
        if fields.is_required(f):
            assert options[key] is None, f"{key} is required in Nix too"
        elif key != "config":  # a NixOS module there, an opaque path here
            default = fields.default_of(f)
            assert options[key] == (None if default is None else decl.to_data(default)), key


def test_network_and_user_defaults_match_python() -> None:
    module = module_with({"defaults": {"user": {"name": "dev"}}})
    options = nix_eval(
        f"let o = ({module}).options.sandboxed-workspace; "
        "in { network = builtins.mapAttrs (n: v: v.default) o.network; "
        "user = builtins.mapAttrs (n: v: v.default) o.defaults.user; }"
    )
    network = NetworkSpec()
    assert options["network"] == {
        "subnet": str(network.subnet),
        "gateway": str(network.gateway),
        "rangeStart": str(network.range_start),
        "rangeEnd": str(network.range_end),
        "bridge": network.bridge,
        "dns": network.dns,
        "namespace": network.namespace,
        "internet": network.internet,
        "uplinkNamespace": network.uplink_namespace,
    }
    user = UserSpec()
    assert options["user"] == {"name": user.name, "uid": user.uid, "authorizedKeys": []}


CASES: dict[str, dict[str, Any]] = {
    "valid": {
        "a": {"type": "vm", "ip": "192.168.83.10"},
        "b": {"type": "container", "ip": "192.168.83.11"},
    },
    "missing type": {"a": {"ip": "192.168.83.10"}},
    "unknown type": {"a": {"type": "box", "ip": "192.168.83.10"}},
    "outside subnet": {"a": {"type": "vm", "ip": "10.0.0.5"}},
    "gateway": {"a": {"type": "vm", "ip": "192.168.83.1"}},
    "below range": {"a": {"type": "vm", "ip": "192.168.83.5"}},
    "not an address": {"a": {"type": "vm", "ip": "192.168.83.300"}},
    "duplicate": {
        "a": {"type": "vm", "ip": "192.168.83.20"},
        "b": {"type": "vm", "ip": "192.168.83.20"},
    },
    "bad name": {"Bad_Name": {"type": "vm", "ip": "192.168.83.20"}},
}


def python_problems(workspaces: dict[str, Any]) -> set[str]:
    try:
        config_from_dict({"workspaces": workspaces})
    except ConfigError as exc:
        return {issue.where for issue in exc.issues}
    return set()


@pytest.mark.parametrize("workspaces", CASES.values(), ids=CASES.keys())
def test_assertions_agree_with_python(workspaces: dict[str, Any]) -> None:
    module = module_with({"enable": True, "workspaces": workspaces})
    messages = nix_eval(f"map (a: a.message) ({module}).config.assertions")
    nix = {m.removeprefix("sandboxed-workspace: ").split(": ")[0] for m in messages}
    assert nix == python_problems(workspaces)


def test_make_nixos_test_says_clearly_when_nix_is_missing(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "nixos-test.sh")],
        env={"PATH": "/usr/bin:/bin", "WSFIXTURE_NIX": str(tmp_path / "no-nix")},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "nix" in result.stderr
    assert "not found" in result.stderr
