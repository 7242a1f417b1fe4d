"""nix/module.nix evaluated by nixpkgs' real module system (``lib.evalModules`` of nixpkgs'
own lib) with microvm.nix's real option declarations, host and guest side, and the NixOS
options it sets declared with nixpkgs' types (tests/nix/nixpkgs-options.nix): a wrong type,
a misspelled option, an mkIf misuse fail here as on a NixOS host. What comes out is held
to what the Python side derives from the same config.

The two inputs are the local copies in ../shared/nix-inputs where they are (this machine
kind has no network for Nix); elsewhere, the revisions flake.lock pins, fetched.

What this cannot check, and `make nixos-test` does where Nix and its binary cache are: that
the module's systems build and boot.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.prereqs import IN_CI, require
from wsfixture import ConfigError, config_from_dict
from wsfixture.cli.persistent import alias_lines
from wsfixture.model import derive, fields
from wsfixture.model.config import Config, Defaults, NetworkSpec, UserSpec, WorkspaceSpec
from wsfixture.model.resources import Resources
from wsfixture.model.shares import STANDARD_SHARE_TABLE

ROOT = Path(__file__).parents[2]
EVAL = Path(__file__).with_name("eval.nix")
NIX_INPUTS = ROOT.parent / "shared" / "nix-inputs"


@pytest.fixture(scope="module", autouse=True)
def _nix() -> None:
    require(shutil.which("nix-instantiate") is not None, "nix-instantiate (Debian package nix-bin)")


def inputs() -> tuple[str, str]:
    """Nix expressions for nixpkgs' lib and microvm.nix."""
    if NIX_INPUTS.is_dir():
        return f"{NIX_INPUTS}/nixpkgs-lib", f"{NIX_INPUTS}/microvm.nix"
    if IN_CI:
        pytest.fail(f"{NIX_INPUTS} is missing: CI evaluates the module with the local inputs")
    nodes = json.loads((ROOT / "flake.lock").read_text())["nodes"]

    def fetched(node: str) -> str:
        locked = nodes[node]["locked"]
        url = (
            f"https://github.com/{locked['owner']}/{locked['repo']}/archive/{locked['rev']}.tar.gz"
        )
        return f'(builtins.fetchTarball "{url}")'

    return fetched("nixpkgs"), fetched("microvm")


def evaluate(config: dict[str, Any], expr: str = "r.checked") -> subprocess.CompletedProcess[str]:
    nixpkgs_lib, microvm = inputs()
    packages = sorted(
        {*config.get("defaults", {}).get("packages", [])}
        | {p for ws in _workspaces(config) for p in ws.get("packages", [])}
    )
    call = (
        f"import {EVAL} {{ nixpkgsLib = {nixpkgs_lib}; microvm = {microvm}; "
        f"configJson = ''{json.dumps(config)}''; packages = {_nix_list(packages)}; }}"
    )
    return subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", f"let r = {call}; in {expr}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def nix_eval(config: dict[str, Any], expr: str) -> Any:
    out = evaluate(config, expr)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _workspaces(config: dict[str, Any]) -> list[dict[str, Any]]:
    entries = config.get("workspaces", {})
    return (
        [ws for ws in entries.values() if isinstance(ws, dict)] if isinstance(entries, dict) else []
    )


def _nix_list(items: list[str]) -> str:
    return "[ " + " ".join(json.dumps(item) for item in items) + " ]"


# -- the options are the Python config's ---------------------------------------------------


def test_workspace_options_match_python() -> None:
    options = nix_eval(
        {},
        "builtins.mapAttrs (n: o: o.default or null) "
        '(r.host.options.sandboxed-workspace.workspaces.type.getSubOptions [ "x" ])',
    )
    options = {k: v for k, v in options.items() if not k.startswith("_")}
    declared = dict(fields.declarations(WorkspaceSpec))
    assert set(options) == {fields.camel(f.name) for f in declared}
    for f, decl in declared.items():
        key = fields.camel(f.name)
        if fields.is_required(f):
            assert options[key] is None, f"{key} is required in Nix too"
        elif key != "config":  # a NixOS module there, an opaque path here
            default = fields.default_of(f)
            assert options[key] == (None if default is None else decl.to_data(default)), key


def test_defaults_options_match_python() -> None:
    options = nix_eval(
        {},
        "builtins.mapAttrs (n: o: o.default or null) "
        '(removeAttrs r.host.options.sandboxed-workspace.defaults [ "user" "_module" ])',
    )
    declared = dict(fields.declarations(Defaults))
    assert set(options) == {fields.camel(f.name) for f in declared} - {"user"}
    for f, decl in declared.items():
        if f.name not in ("user", "state_root"):  # stateRoot: the user's home, spelled out
            assert options[fields.camel(f.name)] == decl.to_data(fields.default_of(f)), f.name


# Python-side only: how a test VM boots, the Debian release of wsfixture's images, and when
# the CLI stops an idle workspace. The module accepts them (typed, so a wrong value is
# refused as in Python) and a NixOS host's workspaces are the same with or without them.
PYTHON_ONLY = {"snapshot": "off", "release": "bookworm", "idleTimeout": "30m"}


@pytest.mark.parametrize("key", PYTHON_ONLY)
def test_python_only_options_leave_the_nixos_workspaces_alone(key: str) -> None:
    def made(ws: dict[str, Any], defaults: dict[str, Any]) -> Any:
        container = {"type": "container", "ip": "192.168.83.11"}
        config = {"enable": True, "defaults": defaults, "workspaces": {"v": ws, "c": container}}
        return nix_eval(config, "{ inherit (r) containers vms checked; }")

    plain = made(WS, {})
    assert plain["vms"]
    assert plain["containers"]
    assert plain["checked"] == []
    assert made({**WS, key: PYTHON_ONLY[key]}, {}) == plain
    if key in {fields.camel(f.name) for f, _ in fields.declarations(Defaults)}:
        assert made(WS, {key: PYTHON_ONLY[key]}) == plain


def test_network_and_user_defaults_match_python() -> None:
    options = nix_eval(
        {"defaults": {"user": {"name": "dev"}}},
        "let o = r.host.options.sandboxed-workspace; "
        'in { network = builtins.mapAttrs (n: v: v.default) (removeAttrs o.network ["_module"]); '
        "user = builtins.mapAttrs (n: v: v.default) o.defaults.user; }",
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


# -- what the module makes is what Python derives ------------------------------------------

EXAMPLE = {
    "enable": True,
    "defaults": {
        "packages": ["git"],
        "stateRoot": "/srv/sandboxed",
        "user": {"authorizedKeys": ["ssh-ed25519 AAAA user@host"]},
    },
    "workspaces": {
        "web": {"type": "container", "ip": "192.168.83.10", "autoStart": True, "packages": ["curl"],
                "shares": [{"source": "/srv/data", "target": "/data", "readOnly": True}],
                "memory": 512, "vcpu": 1},
        "open": {"type": "container", "ip": "192.168.83.11"},
        "builder": {"type": "vm", "ip": "192.168.83.20", "vcpu": 2, "memory": "2G", "disk": "16G",
                    "restartIfChanged": False, "shares": [{"source": "~/src", "target": "/src"}]},
        "idle": {"type": "vm", "ip": "192.168.83.21"},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def made() -> dict[str, Any]:
    return nix_eval(  # type: ignore[no-any-return]
        EXAMPLE,
        "{ inherit (r) failedAssertions containers vms autostart shellAliases extraHosts bridge "
        "keyServices limits; }",
    )


@pytest.fixture(scope="module")
def config() -> Config:
    return config_from_dict(EXAMPLE)


def test_the_example_evaluates_without_a_failed_assertion(made: dict[str, Any]) -> None:
    assert made["failedAssertions"] == []
    assert set(made["containers"]) == {"web", "open"}
    assert set(made["vms"]) == {"builder", "idle"}


def shares_of(config: Config, spec: WorkspaceSpec) -> list[dict[str, Any]]:
    """The Python side's shares: the seed's three standard ones, then the spec's own."""
    state, user = config.state_dir(spec.name), config.defaults.user.name
    standard = [
        (s.tag, f"{state}/{s.tag}", s.target(user), s.read_only) for s in STANDARD_SHARE_TABLE
    ]
    extra = [(f"share{i}", str(s.source), s.target, s.read_only) for i, s in enumerate(spec.shares)]
    return [{"tag": t, "source": s, "mountPoint": m, "ro": ro} for t, s, m, ro in standard + extra]


def test_containers_carry_what_python_derives(made: dict[str, Any], config: Config) -> None:
    spec = config.workspaces["web"]
    container = made["containers"]["web"]
    assert container["autoStart"] is True
    assert container["restartIfChanged"] is True
    assert container["privateNetwork"] is True
    assert container["hostBridge"] == config.network.bridge
    wanted = {
        s["mountPoint"]: {
            "hostPath": s["source"],
            "isReadOnly": s["ro"],
            "mountPoint": s["mountPoint"],
        }
        for s in shares_of(config, spec)
    }
    # The seed: a container sees the host's store, read-only.
    wanted["/nix/store"] = {
        "hostPath": "/nix/store",
        "isReadOnly": True,
        "mountPoint": "/nix/store",
    }
    assert container["bindMounts"] == wanted
    base = container["base"]
    assert base["network"]["matchConfig"] == {"Name": "eth0"}
    assert base["network"]["address"] == [f"{spec.ip}/{config.network.subnet.prefixlen}"]
    assert base["packages"] == ["git", "curl"]


def test_vms_carry_what_python_derives(made: dict[str, Any], config: Config) -> None:
    for name, vm in made["vms"].items():
        spec = config.workspaces[name]
        assert vm["autostart"] is spec.auto_start
        assert vm["restartIfChanged"] is spec.restart_if_changed
        micro = vm["microvm"]
        assert micro["interfaces"] == [
            {"type": "tap", "id": derive.tap_name(name), "mac": derive.mac(name)}
        ]
        assert micro["vsockCid"] == derive.vsock_cid(name)
        wanted = config.resources_for(spec)
        assert (micro["vcpu"], micro["mem"]) == (wanted.vcpu, wanted.memory)
        assert made["limits"][f"microvm@{name}"] == {"TasksMax": str(wanted.pids)}
        assert micro["hypervisor"] == "qemu"
        shares = [
            {"proto": "virtiofs", "tag": s["tag"], "mountPoint": s["mountPoint"],
             "source": s["source"]}
            for s in shares_of(config, spec)
        ]  # fmt: skip
        ro_store = {"proto": "virtiofs", "tag": "ro-store", "source": "/nix/store",
                    "mountPoint": "/nix/.ro-store"}  # fmt: skip
        assert micro["shares"] == [*shares, ro_store]
        assert micro["writableStoreOverlay"] == "/nix/.rw-store"
        assert micro["volumes"] == [
            {"image": "nix-store-overlay.img", "mountPoint": "/nix/.rw-store", "size": wanted.disk}
        ]
        network = vm["base"]["network"]
        assert network["matchConfig"] == {"MACAddress": derive.mac(name)}
        assert network["address"] == [f"{spec.ip}/{config.network.subnet.prefixlen}"]
        assert network["gateway"] == [str(config.network.gateway)]
        assert vm["base"]["hostName"] == name
    assert made["autostart"] == []


def test_the_seed_vm_defaults_are_8_vcpus_4_gb_and_an_8_gb_overlay(made: dict[str, Any]) -> None:
    idle = made["vms"]["idle"]["microvm"]
    assert (idle["vcpu"], idle["mem"], idle["volumes"][0]["size"]) == (8, 4096, 8192)


def test_container_limits_are_their_units_properties(made: dict[str, Any], config: Config) -> None:
    # Set ones are enforced by systemd (memory with no swap beyond it); unset, no limit.
    wanted = config.resources_for(config.workspaces["web"])
    assert (wanted.memory, wanted.vcpu, wanted.pids) == (512, 1, None)
    assert made["limits"]["container@web"] == {
        "MemoryMax": "512M",
        "MemorySwapMax": "0",
        "CPUQuota": "100%",
    }
    assert "container@open" not in made["limits"]
    assert config.resources_for(config.workspaces["open"]) == Resources()


def test_the_defaults_limits_reach_every_workspace() -> None:
    data = {**EXAMPLE, "defaults": {**EXAMPLE["defaults"], "memory": "1G", "pids": 256}}
    limits = nix_eval(data, "r.limits")
    config = config_from_dict(data)
    for name, spec in config.workspaces.items():
        wanted = config.resources_for(spec)
        unit = f"{'microvm' if spec.is_vm else 'container'}@{name}"
        assert limits[unit]["TasksMax"] == str(wanted.pids) == "256"
        if not spec.is_vm:
            assert limits[unit]["MemoryMax"] == f"{wanted.memory}M"
    assert config.resources_for(config.workspaces["idle"]).memory == 1024
    assert config.resources_for(config.workspaces["builder"]).memory == 2048


def test_every_workspace_gets_the_shared_base(made: dict[str, Any]) -> None:
    for base in [c["base"] for c in made["containers"].values()] + [
        v["base"] for v in made["vms"].values()
    ]:
        assert base["users"] == {
            "dev": {"isNormalUser": True, "uid": 1000, "keys": ["ssh-ed25519 AAAA user@host"]}
        }
        assert base["doas"] == [  # as root or anyone; root too (a nested host.sudo())
            {"users": ["dev"], "noPass": True},
            {"users": ["root"], "noPass": True},
        ]
        assert base["sudo"] is None  # privilege = "doas", the default
        assert base["sshd"]["enable"] is True
        assert base["sshd"]["PasswordAuthentication"] is False
        assert base["sshd"]["PermitRootLogin"] == "no"


# The CLI's alias runs `wsfixture <verb> <name>`; the module's, the same action by hand.
CLI_VERBS = {"ssh": "ssh", "up": "start", "down": "stop", "restart": "restart", "status": "status"}


def cli_action(quoted: str) -> tuple[str, str]:
    (command,) = shlex.split(quoted)  # the alias's value, quoted for the shell
    verb, name = shlex.split(command)[-2:]
    return CLI_VERBS[verb], name


def module_action(command: str) -> tuple[str, str]:
    words = command.split()
    if words[0] == "ssh":  # ssh dev@workspace-<name>
        return "ssh", words[1].split("@workspace-", 1)[1]
    unit = words[-1]  # container@<name>.service or microvm@<name>.service
    return words[-2], unit.split("@", 1)[1].removesuffix(".service")


def test_aliases_and_hosts_are_the_cli_s(made: dict[str, Any], config: Config) -> None:
    cli = dict(line.removeprefix("alias ").split("=", 1) for line in alias_lines(config, "bash"))
    assert {alias: cli_action(cmd) for alias, cmd in cli.items()} == {
        alias: module_action(cmd) for alias, cmd in made["shellAliases"].items()
    }
    hosts = [derive.hosts_line(s.name, str(s.ip)) for s in config.workspaces.values()]
    assert sorted(made["extraHosts"].splitlines()) == sorted(hosts)


# -- every check of the validator, on both sides -------------------------------------------

WS = {"type": "vm", "ip": "192.168.83.10"}


def ws(**changes: Any) -> dict[str, Any]:
    data = {**WS, **changes}
    return {"workspaces": {"a": {k: v for k, v in data.items() if v is not None}}}


INVALID: dict[str, dict[str, Any]] = {
    "type missing": ws(type=None),
    "type unknown": ws(type="box"),
    "ip missing": ws(ip=None),
    "ip not an address": ws(ip="192.168.83.300"),
    "ip outside the subnet": ws(ip="10.0.0.5"),
    "ip the gateway": ws(ip="192.168.83.1"),
    "ip below the range": ws(ip="192.168.83.5"),
    "ip taken twice": {"workspaces": {"a": WS, "b": WS}},
    "name not a label": {"workspaces": {"Bad_Name": WS}},
    "name too long": {"workspaces": {"a" * 54: WS}},
    "autoStart not a bool": ws(autoStart="yes"),
    "restartIfChanged not a bool": ws(restartIfChanged=1),
    "packages not a list": ws(packages="curl"),
    "package name": ws(packages=["Bad Pkg"]),
    "vcpu zero": ws(vcpu=0),
    "vcpu not a number": ws(vcpu="many"),
    "memory too small": ws(memory=64),
    "container memory too small": ws(type="container", memory=64),
    "pids too few to boot": ws(pids=10),
    "pids not a number": ws(type="container", pids="many"),
    "defaults memory too small": {"defaults": {"memory": 1}, **ws()},
    "memory not a size": ws(memory="lots"),
    "memory too large": ws(memory="2T"),
    "defaults memory too small as a size": {"defaults": {"memory": "64M"}, **ws()},
    "disk not a size": ws(disk="lots"),
    "disk too small": ws(disk=100),
    "disk too large": ws(disk="20T"),
    "shares not a list": ws(shares="x"),
    "share without source": ws(shares=[{"target": "/m"}]),
    "share source relative": ws(shares=[{"source": "rel", "target": "/m"}]),
    "share target relative": ws(shares=[{"source": "/s", "target": "m"}]),
    "share readOnly not a bool": ws(shares=[{"source": "/s", "target": "/m", "readOnly": "no"}]),
    "share unknown key": ws(shares=[{"source": "/s", "target": "/m", "mode": "rw"}]),
    "two shares at one target": ws(
        shares=[{"source": "/s", "target": "/m"}, {"source": "/t", "target": "/m"}]
    ),
    "share target with '..'": ws(shares=[{"source": "/s", "target": "/mnt/../etc"}]),
    "share target a system path": ws(shares=[{"source": "/s", "target": "/proc/x"}]),
    "share target the host keys": ws(shares=[{"source": "/s", "target": "/etc/ssh/host-keys"}]),
    "share target over workspace/": ws(shares=[{"source": "/s", "target": "/home/dev/workspace"}]),
    "share target above .claude": ws(shares=[{"source": "/s", "target": "/home/dev"}]),
    "share target, another user": {
        "defaults": {"user": {"name": "alice"}},
        **ws(shares=[{"source": "/s", "target": "/home/alice/.claude/x"}]),
    },
    "idleTimeout not a duration": ws(idleTimeout="soon"),
    "idleTimeout zero": ws(idleTimeout=0),
    "accel unknown": ws(accel="fast"),
    "machine unknown": ws(machine="pc"),
    "vsock unknown": ws(vsock="yes"),
    "snapshot unknown": ws(snapshot="on"),
    "release unknown": ws(release="sid"),
    "internet not a bool": ws(internet="no"),
    "forwards not a table": ws(forwards="x"),
    "forward not a port": ws(forwards={"8080": "x"}),
    "forward to port 0": ws(forwards={"8080": 0}),
    "forward from no port": ws(forwards={"http": 80}),
    "config not a module": ws(config=5),
    "workspace unknown key": ws(bogus=1),
    "subnet not a network": {"network": {"subnet": "x"}},
    "subnet prefix": {"network": {"subnet": "192.168.83.0/30"}},
    "gateway outside": {"network": {"gateway": "10.0.0.1"}},
    "rangeStart outside": {"network": {"rangeStart": "10.0.0.10"}},
    "rangeEnd not an address": {"network": {"rangeEnd": "x"}},
    "range reversed": {"network": {"rangeStart": "192.168.83.200", "rangeEnd": "192.168.83.100"}},
    "bridge name": {"network": {"bridge": "bad bridge name"}},
    "dns not a bool": {"network": {"dns": "yes"}},
    "internet (network) not a bool": {"network": {"internet": "x"}},
    "uplinkNamespace name": {"network": {"uplinkNamespace": "Bad"}},
    "namespace name": {"network": {"namespace": "Bad_NS"}},
    "network unknown key": {"network": {"bogus": 1}},
    "user root": {"defaults": {"user": {"name": "root"}}},
    "user name": {"defaults": {"user": {"name": "Bad User"}}},
    "uid too small": {"defaults": {"user": {"uid": 5}}},
    "authorized key": {"defaults": {"user": {"authorizedKeys": ["nope"]}}},
    "defaults package name": {"defaults": {"packages": ["Bad Pkg"]}},
    "defaults snapshot unknown": {"defaults": {"snapshot": "x"}},
    "defaults release unknown": {"defaults": {"release": "buster"}},
    "defaults unknown key": {"defaults": {"bogus": 1}},
    "enable not a bool": {"enable": "yes"},
    "workspaces not a table": {"workspaces": "x"},
}  # fmt: skip


def python_problems(config: dict[str, Any]) -> set[str]:
    try:
        config_from_dict(config)
    except ConfigError as exc:
        return {issue.where for issue in exc.issues}
    return set()


OPTION = re.compile(r"option `sandboxed-workspace\.([^']+)'")
LIST_ITEM = re.compile(r'\."\[definition \d+-entry (\d+)\]"')


def nix_problems(config: dict[str, Any]) -> set[str]:
    """The fields Nix names: the option of a type error, or the assertions' fields."""
    out = evaluate({"enable": True, **config})
    if out.returncode != 0:
        found = OPTION.search(out.stderr)
        assert found, out.stderr
        path = re.sub(
            r'\."\[definition \d+-entry (\d+)\]"', lambda m: f"[{int(m[1]) - 1}]", found[1]
        )
        return {path.replace('"', "")}
    messages = json.loads(out.stdout)
    return {m.removeprefix("sandboxed-workspace: ").split(": ")[0] for m in messages}


@pytest.mark.parametrize("config", INVALID.values(), ids=INVALID.keys())
def test_nix_refuses_what_python_refuses_naming_the_same_field(config: dict[str, Any]) -> None:
    python = python_problems(config)
    assert python, "the case must be invalid for the Python validator"
    assert nix_problems(config) == python


def test_a_valid_config_passes_both() -> None:
    assert python_problems(EXAMPLE) == set()
    assert nix_problems(EXAMPLE) == set()


# -- the flake's NixOS tests, as far as lib and microvm.nix reach --------------------------


def nixos_test(name: str, expr: str) -> Any:
    nixpkgs_lib, microvm = inputs()
    call = (
        f"import {EVAL.with_name('nixos-tests.nix')} {{ nixpkgsLib = {nixpkgs_lib}; "
        f"microvm = {microvm}; test = {ROOT / 'nixos-tests' / name}; }}"
    )
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", f"let t = {call}; in {expr}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", ["workspaces.nix", "pytest-suite.nix"])
def test_the_nixos_tests_evaluate_and_their_scripts_compile(name: str) -> None:
    test = nixos_test(name, "{ inherit (t) name testScript failedAssertions; }")
    compile(test["testScript"], f"nixos-tests/{name}:testScript", "exec")
    assert test["failedAssertions"] == []


def test_the_workspaces_nixos_test_host_has_its_container_and_vm() -> None:
    made = nixos_test("workspaces.nix", "{ inherit (t.host) containers vms; }")
    assert made["containers"]["alpha"]["autoStart"] is True
    assert made["vms"]["beta"]["microvm"]["interfaces"][0]["mac"] == derive.mac("beta")


def test_make_nixos_test_says_clearly_when_nix_is_missing(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "nixos-test.sh")],
        env={"PATH": "/usr/bin:/bin", "WSFIXTURE_NIX": str(tmp_path / "no-nix")},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "nix" in result.stderr
    assert "not found" in result.stderr


# `setup` and `files` build wsfixture's Debian image layers. The module declares them, so one
# config serves both sides, and refuses them: a NixOS workspace says it in its `config`.
NIX_REFUSES = {"setup": ["touch /etc/ready"], "files": {"/etc/app.conf": "/etc/hostname"}}


@pytest.mark.parametrize("key", NIX_REFUSES)
def test_image_setup_is_refused_by_the_module_saying_what_to_use(key: str) -> None:
    for config, where in (
        (ws(**{key: NIX_REFUSES[key]}), f"workspaces.a.{key}"),
        ({**ws(), "defaults": {key: NIX_REFUSES[key]}}, f"defaults.{key}"),
    ):
        assert python_problems(config) == set()
        messages = nix_eval({"enable": True, **config}, "r.checked")
        assert messages == [
            f"sandboxed-workspace: {where}: is wsfixture's image setup, not NixOS's; put it "
            "in the workspace's `config` module (environment.etc, systemd services)"
        ]


def test_an_allowlist_is_refused_by_the_module_until_it_enforces_one() -> None:
    data = {"enable": True, "workspaces": {"a": {**WS, "internet": ["pypi.org:443"]}}}
    failed = nix_eval(data, "r.failedAssertions")
    assert any("workspaces.a.internet: is an allowlist" in message for message in failed)
    assert config_from_dict(data).workspaces["a"].internet == ("pypi.org:443",)


def test_privilege_sudo_gives_the_user_a_nopasswd_rule_beside_doas() -> None:
    """``defaults.privilege = "sudo"``: sudo enabled with the user's NOPASSWD rule, doas
    kept (wsfixture's own commands use it); Python installs sudo in the image the same."""
    data = {**EXAMPLE, "defaults": {**EXAMPLE["defaults"], "privilege": "sudo"}}
    vms = nix_eval(data, "r.vms")
    for vm in vms.values():
        assert vm["base"]["sudo"] == [
            {"users": ["dev"], "commands": [{"command": "ALL", "options": ["NOPASSWD"]}]}
        ]
        assert vm["base"]["doas"][0] == {"users": ["dev"], "noPass": True}
    config = config_from_dict(data)
    assert "sudo" in config.resolve(config.workspaces["idle"]).packages
    assert "sudo" not in config_from_dict(EXAMPLE).resolve(config.workspaces["idle"]).packages
