import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.strategies import corruptions, documents, valid_configs
from wsfixture import Config, ConfigError, config_from_dict, config_from_json, config_from_toml
from wsfixture.model.config import load_config, override, workspace_spec
from wsfixture.model.resources import VM_RESOURCES, Resources

EXAMPLE = Path(__file__).parents[2] / "examples" / "workspaces.toml"


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return [str(issue) for issue in info.value.issues]


def test_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert set(config.workspaces) == {"myproject", "agent", "sandbox"}
    agent = config.workspaces["agent"]
    assert agent.internet == ("pypi.org:443", "files.pythonhosted.org:443", "github.com:443")
    assert config.resources_for(agent) == Resources(vcpu=2, memory=2048, disk=4096, pids=1024)
    box = config.workspaces["sandbox"]
    assert box.type == "vm"
    assert box.ip == ipaddress.IPv4Address("192.168.83.11")
    assert box.disk == 8192
    assert config.workspaces["myproject"].auto_start is True
    assert config.resolve(config.workspaces["myproject"]).packages == ("curl", "git", "make")


def test_defaults() -> None:
    config = config_from_dict(
        {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10"},
                        "c": {"type": "container", "ip": "192.168.83.11"}}}
    )  # fmt: skip
    vm, container = config.workspaces["a"], config.workspaces["c"]
    assert config.resources_for(vm) == VM_RESOURCES
    assert config.resources_for(container) == Resources(), "containers: no limit unless set"
    assert vm.auto_start is False
    assert vm.restart_if_changed is True


def test_limits_come_from_the_workspace_else_the_defaults_else_the_kind() -> None:
    config = config_from_dict(
        {"defaults": {"memory": 1024, "pids": 512},
         "workspaces": {"vm": {"type": "vm", "ip": "192.168.83.10", "vcpu": 2},
                        "ct": {"type": "container", "ip": "192.168.83.11", "memory": 256}}}
    )  # fmt: skip
    assert config.resources_for(config.workspaces["vm"]) == Resources(2, 1024, 8192, 512)
    assert config.resources_for(config.workspaces["ct"]) == Resources(None, 256, None, 512)


def test_five_mistakes_reported_together() -> None:
    found = problems(
        {
            "workspaces": {
                "a": {"ip": "192.168.83.10"},  # 1: no type
                "b": {"type": "box", "ip": "192.168.83.11"},  # 2: unknown type
                "c": {"type": "vm", "ip": "10.1.1.1"},  # 3: outside subnet
                "d": {"type": "vm", "ip": "192.168.83.12", "memroy": 512},  # 4: unknown key
                "e": {"type": "vm", "ip": "192.168.83.13", "vcpu": 0},  # 5: absurd vcpu
            }
        }
    )
    assert len(found) == 5
    assert any("workspaces.a.type: is required" in p for p in found)
    assert any("'box'" in p and "'vm' or 'container'" in p for p in found)
    assert any("outside the subnet 192.168.83.0/24" in p and "10.1.1.1" in p for p in found)
    assert any("memroy" in p and "did you mean 'memory'" in p for p in found)
    assert any("workspaces.e.vcpu" in p and "from 1 to 256" in p for p in found)


@pytest.mark.parametrize(
    ("ip", "fragment"),
    [
        ("192.168.83.1", "gateway"),
        ("192.168.83.5", "usable range"),
        ("192.168.83.300", "not an IPv4 address"),
        ("fe80::1", "not an IPv4 address"),
    ],
)
def test_bad_ips(ip: str, fragment: str) -> None:
    found = problems({"workspaces": {"a": {"type": "container", "ip": ip}}})
    assert any(fragment in p and "workspaces.a.ip" in p for p in found)


def test_duplicate_ip() -> None:
    found = problems(
        {
            "workspaces": {
                "a": {"type": "container", "ip": "192.168.83.10"},
                "b": {"type": "vm", "ip": "192.168.83.10"},
            }
        }
    )
    assert any("already used by workspace 'a'" in p for p in found)


@pytest.mark.parametrize("name", ["Upper", "has_underscore", "-lead", "trail-", "x" * 54, ""])
def test_bad_names(name: str) -> None:
    found = problems({"workspaces": {name: {"type": "container", "ip": "192.168.83.10"}}})
    assert any("name" in p and repr(name) in p for p in found)


def test_snake_and_camel_are_one_field() -> None:
    a = workspace_spec(name="a", type="vm", ip="192.168.83.10", autoStart=True)
    b = workspace_spec(name="a", type="vm", ip="192.168.83.10", auto_start=True)
    assert a == b
    found = problems(
        {"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "autoStart": 1 == 1,
                              "auto_start": True}}}
    )  # fmt: skip
    assert any("given twice" in p for p in found)


def test_bool_is_not_a_number() -> None:
    found = problems({"workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "vcpu": True}}})
    assert any("wrong type" in p for p in found)


def test_disk_sizes() -> None:
    assert workspace_spec(name="a", type="vm", ip="192.168.83.10", disk="2G").disk == 2048
    assert workspace_spec(name="a", type="vm", ip="192.168.83.10", disk="512MiB").disk == 512
    with pytest.raises(ConfigError, match="disk"):
        workspace_spec(name="a", type="vm", ip="192.168.83.10", disk="lots")


def test_memory_takes_a_size_as_disk_does() -> None:
    """``memory = "1G"`` as ``disk = "8G"``; the range in MiB either way."""
    ws = {"type": "vm", "ip": "192.168.83.10"}
    assert workspace_spec(name="a", **ws, memory="1G").memory == 1024
    assert workspace_spec(name="a", **ws, memory="768MiB").memory == 768
    assert workspace_spec(name="a", **ws, memory=512).memory == 512
    config = config_from_dict({"defaults": {"memory": "2G"}, "workspaces": {"a": ws}})
    assert config.resources_for(config.workspaces["a"]).memory == 2048
    with pytest.raises(ConfigError, match=r"memory.*'lots'.*from 128 MiB to 1 TiB"):
        workspace_spec(name="a", **ws, memory="lots")
    with pytest.raises(ConfigError, match=r"memory.*'64M'.*from 128 MiB to 1 TiB"):
        workspace_spec(name="a", **ws, memory="64M")


def test_shares() -> None:
    spec = workspace_spec(
        name="a", type="vm", ip="192.168.83.10",
        shares=[{"source": "/srv/data", "target": "/mnt/data", "readOnly": True}],
    )  # fmt: skip
    assert spec.shares[0].target == "/mnt/data"
    assert spec.shares[0].read_only
    with pytest.raises(ConfigError, match="shares"):
        workspace_spec(name="a", type="vm", ip="192.168.83.10",
                       shares=[{"source": "rel", "target": "/x"}])  # fmt: skip


def test_network_checks() -> None:
    found = problems({"network": {"subnet": "10.0.0.0/33"}})
    assert any("network.subnet" in p for p in found)
    found = problems({"network": {"subnet": "10.20.0.0/24", "gateway": "10.30.0.1"}})
    assert any("network.gateway" in p and "outside the subnet" in p for p in found)
    found = problems({"network": {"bridge": "a-very-long-bridge-name"}})
    assert any("network.bridge" in p for p in found)
    config = config_from_dict({"network": {"subnet": "10.20.0.0/24"}})
    assert str(config.network.gateway) == "10.20.0.1"
    assert str(config.network.range_start) == "10.20.0.10"


def test_user_checks() -> None:
    found = problems({"defaults": {"user": {"name": "root", "uid": 0, "authorizedKeys": ["nope"]}}})
    assert len(found) == 3


def test_toml_syntax_error_has_position() -> None:
    with pytest.raises(ConfigError, match=r"line 2, column"):
        config_from_toml('[workspaces.a]\ntype = "vm\n')


def test_json_syntax_error_has_position() -> None:
    with pytest.raises(ConfigError, match=r"line 1, column 16"):
        config_from_json('{"workspaces": }')


def test_nix_eval_json_shape() -> None:
    # What `nix eval --json .#nixosConfigurations.host.config.sandboxed-workspace` prints:
    # every option with its value, null for unset ones, `config` as a store path.
    text = json.dumps(
        {
            "enable": True,
            "workspaces": {
                "nixpkgs-contrib": {
                    "type": "vm",
                    "ip": "192.168.83.42",
                    "autoStart": False,
                    "restartIfChanged": True,
                    "config": "/nix/store/abc-nixpkgs-contrib.nix",
                    "packages": [],
                    "vcpu": None,
                }
            },
        }
    )
    config = config_from_json(text)
    spec = config.workspaces["nixpkgs-contrib"]
    assert spec.config == "/nix/store/abc-nixpkgs-contrib.nix"
    assert spec.vcpu is None, "null: unset"
    assert config.resources_for(spec).vcpu == VM_RESOURCES.vcpu


def test_override_keeps_identity() -> None:
    config = load_config(EXAMPLE)
    spec = override(config, config.workspaces["sandbox"], memory=2048, auto_start=True)
    assert spec.memory == 2048
    assert spec.auto_start
    assert spec.ip == config.workspaces["sandbox"].ip


# -- properties ---------------------------------------------------------------------------


@given(valid_configs())
def test_valid_configs_load_and_round_trip(data: dict[str, object]) -> None:
    config = config_from_dict(data)
    again = config_from_dict(
        {"workspaces": {name: spec.to_dict() for name, spec in config.workspaces.items()}}
    )
    assert again.workspaces == config.workspaces


@settings(max_examples=150)
@given(valid_configs().filter(lambda d: bool(d["workspaces"])), corruptions, st.data())
def test_corruptions_always_raise_config_error(
    data: dict[str, dict[str, dict[str, object]]],
    corruption: tuple[str, object],
    draw: st.DataObject,
) -> None:
    name = draw.draw(st.sampled_from(sorted(data["workspaces"])))
    key, value = corruption
    if value is None:
        data["workspaces"][name].pop(key, None)
    else:
        data["workspaces"][name][key] = value
    with pytest.raises(ConfigError):
        config_from_dict(data)


@given(documents)
def test_arbitrary_documents_raise_only_config_error(data: object) -> None:
    try:
        config = config_from_dict(data)
    except ConfigError as exc:
        assert exc.issues  # noqa: PT017 - either outcome is valid, never another error
    else:
        assert isinstance(config, Config)


def test_a_workspace_with_a_bad_field_still_takes_part_in_the_uniqueness_checks() -> None:
    found = problems(
        {
            "workspaces": {
                "a": {"type": "vm", "ip": "192.168.83.10", "vcpu": 0},
                "b": {"type": "container", "ip": "192.168.83.10"},
                "c": {"type": "boat", "ip": "192.168.83.10"},
            }
        }
    )
    assert any("workspaces.a.vcpu" in p for p in found)
    assert any("workspaces.c.type" in p for p in found)
    duplicates = [p for p in found if "is already used by workspace 'a'" in p]
    assert {p.split(":")[0] for p in duplicates} == {"workspaces.b.ip", "workspaces.c.ip"}


def test_network_and_forward_options() -> None:
    found = problems({"network": {"internet": "maybe"}})
    assert any("network.internet: has the wrong type" in p for p in found)
    found = problems(
        {"workspaces": {"a": {"type": "container", "ip": "192.168.83.10",
                              "forwards": {"8080": 70000}}}}
    )  # fmt: skip
    assert any("workspaces.a.forwards.8080: is not a port forward (got 70000)" in p for p in found)
    spec = workspace_spec(name="a", type="container", ip="192.168.83.10",
                          forwards={"8080": 80, "2222": 22}, internet=False)  # fmt: skip
    assert spec.forwards == ((2222, 22), (8080, 80))
    assert spec.to_dict()["forwards"] == {"2222": 22, "8080": 80}
    assert spec.internet is False


def test_network_addresses_are_checked_against_the_default_subnet_too() -> None:
    # The subnet left out is the default one: a gateway or range outside it is refused.
    for key in ("gateway", "rangeStart", "rangeEnd"):
        with pytest.raises(ConfigError, match=f"network.{key}: is outside the subnet"):
            config_from_dict({"network": {key: "10.0.0.1"}})


# Every field a workspace inherits from the defaults: its own value, the defaults', and
# what it gets (None: not set; a file is made in tmp_path for "files").
INHERITED = [
    ("release", "bookworm", "trixie", "bookworm"),
    ("release", None, "bookworm", "bookworm"),
    ("release", None, None, "trixie"),  # Debian's stable, the defaults' own default
    ("snapshot", "off", "auto", "off"),
    ("snapshot", None, "off", "off"),
    ("snapshot", None, None, "auto"),
    ("packages", ["git", "jq"], ["curl", "git"], ("curl", "git", "jq")),
    ("setup", ["echo b"], ["echo a"], ("echo a", "echo b")),
    ("files", {"/x": "own", "/y": "own"}, {"/y": "theirs", "/z": "theirs"},
     {"/x": "own", "/y": "own", "/z": "theirs"}),
    ("vcpu", 2, 4, 2),
    ("vcpu", None, 4, 4),
    ("memory", "1G", 2048, 1024),
    ("memory", None, "2G", 2048),
    ("pids", None, 256, 256),
    ("docs", None, True, True),
    ("docs", False, True, False),
]  # fmt: skip


@pytest.mark.parametrize(("name", "own", "theirs", "got"), INHERITED)
def test_what_a_workspace_inherits_from_the_defaults(
    name: str, own: Any, theirs: Any, got: Any, tmp_path: Path
) -> None:
    """One declaration each (``inherits`` on the workspace's field), one resolved view
    (``Config.resolve``): its own value, the defaults', combined as the field says."""

    def host_files(value: Any) -> Any:
        if name != "files" or value is None:
            return value
        for side in set(value.values()):
            (tmp_path / side).write_text(side)
        return {target: str(tmp_path / side) for target, side in value.items()}

    ws: dict[str, Any] = {"type": "vm", "ip": "192.168.83.10"}
    if own is not None:
        ws[name] = host_files(own)
    defaults = {} if theirs is None else {name: host_files(theirs)}
    config = config_from_dict({"defaults": defaults, "workspaces": {"a": ws}})
    resolved = config.resolve(config.workspaces["a"])
    value = getattr(resolved, name, None)
    if value is None:
        value = getattr(resolved.resources, name)
    if name == "files":
        got = {target: tmp_path / side for target, side in got.items()}
    assert value == got


def test_every_inherited_field_is_in_that_table() -> None:
    from wsfixture.model import fields
    from wsfixture.model.spec import Defaults, WorkspaceSpec

    inheriting = {f.name for f, decl in fields.declarations(WorkspaceSpec) if decl.inherits}
    assert inheriting == {name for name, *_ in INHERITED}
    assert inheriting <= {f.name for f, _ in fields.declarations(Defaults)}


def test_an_unknown_release_is_refused_naming_the_field_and_the_choices() -> None:
    found = problems(
        {
            "defaults": {"release": "buster"},
            "workspaces": {"a": {"type": "vm", "ip": "192.168.83.10", "release": "sid"}},
        }
    )
    assert len(found) == 2
    for where, value in (("defaults.release", "buster"), ("workspaces.a.release", "sid")):
        [said] = [p for p in found if where in p]
        assert value in said
        assert "trixie" in said
        assert "bookworm" in said


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("/mnt/../etc", "has a '..' component"),
        ("/proc/x", "is a system path (/proc)"),
        ("/sys", "is a system path (/sys)"),
        ("/dev/shm", "is a system path (/dev)"),
        ("/run/x", "is a system path (/run)"),
        ("/etc/ssh/host-keys", "is a system path (/etc/ssh/host-keys)"),
        ("/home/dev/workspace", "covers the standard share workspace"),
        ("/home/dev/.claude/sub", "covers the standard share claude-config"),
        ("/home/dev", "covers the standard share workspace"),
    ],
)
def test_a_share_target_may_not_cover_system_paths_or_standard_shares(
    target: str, fragment: str, tmp_path: Path
) -> None:
    share = {"source": str(tmp_path), "target": target}
    data = {"workspaces": {"a": {"type": "container", "ip": "192.168.83.10", "shares": [share]}}}
    found = problems(data)
    assert len(found) == 1, found
    assert found[0].startswith("workspaces.a.shares")
    assert fragment in found[0]
    assert target in found[0]


def test_a_share_beside_the_standard_ones_is_fine(tmp_path: Path) -> None:
    share = {"source": str(tmp_path), "target": "/home/dev"}
    data = {
        "defaults": {"user": {"name": "alice"}},
        "workspaces": {"a": {"type": "container", "ip": "192.168.83.10", "shares": [share]}},
    }
    assert config_from_dict(data).workspaces["a"].shares[0].target == "/home/dev"


def test_a_missing_share_source_is_named_before_anything_is_made(tmp_path: Path) -> None:
    from wsfixture.model.validation import check_share_sources

    (tmp_path / "file").write_text("")
    config = config_from_dict({"workspaces": {"a": {
        "type": "vm", "ip": "192.168.83.10",
        "shares": [{"source": str(tmp_path / "gone"), "target": "/mnt/a"},
                   {"source": str(tmp_path / "file"), "target": "/mnt/b"},
                   {"source": str(tmp_path), "target": "/mnt/c"}],
    }}})  # fmt: skip
    with pytest.raises(ConfigError) as info:
        check_share_sources(config, config.workspaces["a"])
    said = [str(issue) for issue in info.value.issues]
    assert len(said) == 2
    assert said[0].startswith("workspaces.a.shares[0].source: does not exist")
    assert said[1].startswith("workspaces.a.shares[1].source: is not a directory")


def test_files_may_not_climb_out_of_the_image(tmp_path: Path) -> None:
    source = tmp_path / "x"
    source.write_text("x")
    for target in ("/../../../../tmp/x", "/etc/../../x"):
        found = problems({"workspaces": {"a": {"type": "container", "ip": "192.168.83.10",
                                               "files": {target: str(source)}}}})  # fmt: skip
        assert found == [
            f"workspaces.a.files.{target}: has a '..' component (got {target!r}); "
            "allowed: a path like /etc/app.conf"
        ]


def test_host_paths_in_a_config_file_are_relative_to_its_directory(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "debs").mkdir(parents=True)
    (project / "debs" / "x.deb").write_text("deb")
    (project / "data").mkdir()
    config_file = project / "workspaces.toml"
    config_file.write_text(
        '[defaults]\nstateRoot = "state"\nfiles = { "/root/x.deb" = "debs/x.deb" }\n'
        '[workspaces.a]\ntype = "container"\nip = "192.168.83.10"\n'
        'shares = [{ source = "data", target = "/mnt/data" }, '
        '{ source = "../elsewhere", target = "/mnt/up" }]\n'
    )
    elsewhere = tmp_path / "run-from-here"
    elsewhere.mkdir()
    import os

    before = Path.cwd()
    os.chdir(elsewhere)  # the reader's working directory does not matter
    try:
        config = load_config("../project/workspaces.toml")
    finally:
        os.chdir(before)
    assert config.defaults.state_root == project / "state"
    assert dict(config.defaults.files) == {"/root/x.deb": project / "debs" / "x.deb"}
    shares = config.workspaces["a"].shares
    assert shares[0].source == project / "data"
    assert shares[1].source == tmp_path / "elsewhere"
    # Without a file, a relative path would mean the reader's working directory: refused.
    found = problems({"workspaces": {"a": {"type": "container", "ip": "192.168.83.10",
                                           "files": {"/x": "debs/x.deb"}}}})  # fmt: skip
    assert found == [
        "workspaces.a.files./x: is not an absolute host path (got 'debs/x.deb'); allowed: a "
        "path starting with / or ~, or relative to the config file's directory"
    ]


def test_allowlist_entries_and_their_network_are_checked_before_anything_starts() -> None:
    found = problems(
        {"network": {"internet": False},
         "workspaces": {"a": {"type": "container", "ip": "192.168.83.10",
                              "internet": ["pypi.org:443", "no such thing", "x.org:0"]}}}
    )  # fmt: skip
    assert any("internet[1]: is neither a domain nor an IPv4 network" in p for p in found)
    assert any("internet[2]: has a port out of range" in p for p in found)
    assert any("a.internet: is an allowlist, but network.internet is false" in p for p in found)
    config = config_from_dict(
        {"network": {"internet": ["github.com"]},
         "workspaces": {"a": {"type": "container", "ip": "192.168.83.10"}}}
    )  # fmt: skip
    assert config.network.internet == ("github.com",)


@pytest.mark.parametrize(
    "root", ["/etc", "/", "/usr/local/state", "/var/lib/dpkg/x", "/etc/../etc"]
)
def test_a_state_root_in_a_system_directory_is_refused(root: str) -> None:
    """stateRoot = "/etc" with a workspace named "ssh" was /etc/ssh, written as root."""
    with pytest.raises(ConfigError, match="is a system directory of the host") as info:
        config_from_dict({"defaults": {"stateRoot": root}, "workspaces": {"ssh": {}}})
    assert "defaults.stateRoot" in str(info.value)


@pytest.mark.parametrize(
    "root", ["/srv/state", "/var/lib/wsfixture-state", "~/sandboxed", "/etcetera"]
)
def test_a_state_root_elsewhere_is_taken(root: str) -> None:
    assert config_from_dict({"defaults": {"stateRoot": root}}).state_root().name


def test_every_workspace_type_has_its_backend_and_no_other_kind_gets_one() -> None:
    """The registry (``backends.REGISTRY``) maps each kind the model allows to its class,
    with its own timeouts; another kind is an error naming the kinds, never QEMU by
    default (as it was)."""
    from wsfixture.backends import REGISTRY, backend_class
    from wsfixture.model.spec import WORKSPACE_TYPES

    assert set(REGISTRY) == set(WORKSPACE_TYPES)
    assert backend_class("container").__name__ == "NspawnBackend"
    assert backend_class("vm").__name__ == "QemuBackend"
    assert backend_class("vm").ready_timeout > backend_class("container").ready_timeout
    with pytest.raises(ConfigError, match=r"type: is not a workspace type \(got 'box'\); "
                       "allowed: container, vm"):  # fmt: skip
        backend_class("box")
