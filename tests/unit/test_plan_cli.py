import argparse
import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from wsfixture.cli import main as cli
from wsfixture.cli.parser import EXAMPLES, parse
from wsfixture.model.config import load_config
from wsfixture.model.plan import plan

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "workspaces.toml")


def test_plan_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", EXAMPLE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [w["name"] for w in data["workspaces"]]
    assert names == ["myproject", "agent", "sandbox"]
    box = data["workspaces"][2]
    assert box["mac"].startswith("02:")
    assert box["interfaces"]["tap"].startswith("wst-")
    assert box["aliases"][0] == "workspace_sandbox"
    assert box["stateDirs"]["workspace"].endswith("sandboxed/sandbox/workspace")
    assert box["release"] == "trixie"  # the defaults' (Debian's stable): the example says none


def test_plan_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "myproject  (container)" in out
    assert "192.168.83.11 sandbox workspace-sandbox" in out
    assert "  release     trixie" in out


def test_validate_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", EXAMPLE]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[workspaces.a]\nip = "1.2.3.4"\n[workspaces.b]\ntype = "vm"\nip = "x"\n')
    assert cli.main(["validate", str(bad)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "3 problems" in err
    assert "Traceback" not in err


def test_plan_matches_derivations() -> None:
    data = plan(load_config(EXAMPLE))
    for entry in data["workspaces"]:
        assert entry["hostsLine"] == f"{entry['ip']} {entry['name']} workspace-{entry['name']}"


def test_global_options_on_both_sides_and_a_positional_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["validate", "-c", EXAMPLE]) == 0
    assert cli.main(["-c", EXAMPLE, "validate"]) == 0
    assert cli.main(["validate", EXAMPLE]) == 0
    assert cli.main(["plan", "--config", EXAMPLE]) == 0
    assert capsys.readouterr().out.count("valid, 3 workspaces") == 3


def test_version_completion_and_restart_needs_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as version:
        cli.main(["--version"])
    assert version.value.code == 0
    assert capsys.readouterr().out.startswith("wsfixture ")
    for shell, marker in (("bash", "complete "), ("zsh", "compdef"), ("fish", "complete ")):
        assert cli.main(["completion", shell]) == 0
        assert marker in capsys.readouterr().out
    with pytest.raises(SystemExit) as restart:
        cli.main(["restart"])
    assert restart.value.code == 2
    assert "the following arguments are required: names" in capsys.readouterr().err


def test_aliases_call_this_very_wsfixture(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    assert cli.main(["-c", EXAMPLE, "aliases"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ssh = next(line for line in lines if line.startswith("alias workspace_myproject="))
    assert ssh.startswith(f"alias workspace_myproject='{sys.executable} -m wsfixture.cli -c /")
    status = next(line for line in lines if line.startswith("alias workspace_myproject_status="))
    assert status.endswith(" status myproject'")


def test_doctor_names_what_is_missing_and_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsfixture.host import setup

    real = setup.find_tool
    monkeypatch.setattr(setup, "find_tool", lambda tool: None if tool == "nft" else real(tool))
    code = cli.main(["doctor", "--json"])
    rows = {row["check"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tool nft"]["result"] == "MISSING"
    assert rows["tool nft"]["fix"].startswith("apt-get install nftables")
    assert code == cli.EXIT_PREREQ


def test_doctor_reports_what_only_the_checkout_needs_as_optional(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsfixture.host import setup

    real = setup.find_tool
    extras = {"nix-instantiate", "make"}
    monkeypatch.setattr(setup, "find_tool", lambda tool: None if tool in extras else real(tool))
    code = cli.main(["doctor", "--json"])
    rows = {row["check"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tool nix-instantiate"]["result"] == "no"
    assert rows["tool make"]["result"] == "no"
    assert rows["tool make"]["fix"].startswith("apt-get install make")
    # Exit 3 only for what is required (this host may lack something else, e.g. root).
    required_missing = any(r["result"] == "MISSING" for r in rows.values())
    assert code == (cli.EXIT_PREREQ if required_missing else 0)


def test_plan_shows_files_and_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "app.conf").write_text("x")
    config = tmp_path / "ws.toml"
    config.write_text(
        '[defaults]\nsetup = ["echo first"]\n'
        '[workspaces.a]\ntype = "container"\nip = "192.168.83.10"\n'
        'files = { "/etc/app.conf" = "app.conf" }\nsetup = ["echo second", "echo third"]\n'
    )
    assert cli.main(["plan", str(config), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["workspaces"]
    assert entry["files"] == {"/etc/app.conf": str(tmp_path / "app.conf")}
    assert entry["setup"] == ["echo first", "echo second", "echo third"]
    assert cli.main(["plan", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"  files       /etc/app.conf <- {tmp_path / 'app.conf'}" in out
    assert "  setup       echo first\n              echo second\n              echo third" in out


def test_the_cli_guide_lists_every_command() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    readme = (Path(__file__).parents[2] / "docs" / "guides" / "cli.md").read_text()
    first_cells = [line.split("|")[1] for line in readme.splitlines() if line.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`([a-z-]+)", cell)}
    assert set(commands.choices) - listed == set(), "commands the CLI guide's table lacks"


def test_a_running_workspace_says_which_fields_changed() -> None:
    from wsfixture.cli.persistent import changed_fields, config_hash, config_snapshot
    from wsfixture.host.ledger import SupervisorInfo

    config = load_config(EXAMPLE)
    spec = config.workspaces["myproject"]
    before = config_snapshot(config, spec)
    running = SupervisorInfo("/x.toml", config_hash(before), 0.0, before)
    assert changed_fields(running, before) == []
    edited = config_snapshot(config, dataclasses.replace(spec, packages=("jq",)))
    assert changed_fields(running, edited) == ["packages"]
    # An older record has only the fingerprint: it can tell same from changed, not what.
    older = SupervisorInfo("/x.toml", config_hash(before), 0.0)
    assert changed_fields(older, before) == []
    assert changed_fields(older, edited) is None


def test_status_says_when_a_supervisor_stops_its_workspace() -> None:
    from wsfixture.cli.persistent import stops_in
    from wsfixture.host.ledger import SupervisorInfo

    base = SupervisorInfo("/x.toml", "h", 1000.0)
    assert stops_in(base, 1000.0) is None
    assert stops_in(dataclasses.replace(base, stop_at=1300.0), 1000.0) == "in 5m0s (ttl)"
    idle = dataclasses.replace(base, idle_timeout=60, idle_since=1000.0)
    assert stops_in(idle, 1015.0) == "in 45s (idle)"
    assert stops_in(dataclasses.replace(idle, idle_since=None), 1015.0) == (
        "idle timer: a session is open"
    )
    both = dataclasses.replace(idle, stop_at=1020.0)
    assert stops_in(both, 1015.0) == "in 5s (ttl)", "the sooner of the two"


def test_list_with_nothing_running_says_so(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "WSFIXTURE_RUN_DIR": str(tmp_path)}  # a ledger of its own: empty
    said = subprocess.run([sys.executable, "-m", "wsfixture.cli", "list"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert said.stdout == "no workspace runs (wsfixture up NAME starts one)\n"
    listed = subprocess.run([sys.executable, "-m", "wsfixture.cli", "list", "--json"], env=env,
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert listed.stdout.strip() == "[]"


def test_plan_text_shows_egress_forwards_and_the_idle_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ws.toml"
    config.write_text(
        "[network]\ninternet = true\n"
        '[workspaces.a]\ntype = "container"\nip = "192.168.83.10"\n'
        'internet = ["pypi.org:443"]\nforwards = { 8080 = 80 }\nidleTimeout = "30m"\n'
        '[workspaces.b]\ntype = "container"\nip = "192.168.83.11"\ninternet = false\n'
        '[workspaces.c]\ntype = "container"\nip = "192.168.83.12"\n'
    )
    assert cli.main(["plan", str(config)]) == 0
    out = capsys.readouterr().out
    a, b, c = out.split("\n\n")[1:]
    assert "  internet    only pypi.org:443" in a
    assert "  forwards    127.0.0.1:8080 -> 80" in a
    assert "  idle stop   after 1800 s without an SSH session" in a
    assert "  internet    off" in b
    assert "  internet    open" in c
    assert "forwards" not in b


def test_a_shell_completes_workspace_names(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    def completions(line: str) -> list[str]:
        out = tmp_path / "completions"
        env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line)),
               "_ARGCOMPLETE": "1", "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}  # fmt: skip
        subprocess.run([sys.executable, "-m", "wsfixture.cli"], env=env, timeout=60, check=True,
                       stderr=subprocess.DEVNULL)  # fmt: skip
        return [word.strip() for word in out.read_text().split("\x0b")]

    assert {"myproject", "agent", "sandbox"} <= set(completions(f"wsfixture -c {EXAMPLE} ssh "))
    assert completions(f"wsfixture -c {EXAMPLE} exec -u root ag") == ["agent"]
    assert "myproject" not in completions(f"wsfixture -c {tmp_path}/none.toml ssh "), "no error"


def example_argv(line: str) -> list[str]:
    """The wsfixture words of a help example: inside ``$(...)``, before a redirection."""
    if "$(" in line:
        line = line[line.index("$(") + 2 : line.rindex(")")]
    words = shlex.split(line)
    if ">" in words:
        words = words[: words.index(">")]
    assert words[0] == "wsfixture", line
    return words[1:]


def test_every_command_has_examples_that_parse_and_every_positional_says_what_it_is() -> None:
    """`wsfixture COMMAND --help` ends with examples (each parsed here, as the command it
    shows) and describes every positional argument."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(EXAMPLES)
    for name, sub in commands.items():
        assert sub.epilog is not None
        assert sub.epilog.startswith("examples:\n  wsfixture") or "$(wsfixture" in sub.epilog
        for line in EXAMPLES[name]:
            args = parse(parser, example_argv(line))
            assert args.func is sub.get_default("func"), line
        undescribed = [a.dest for a in sub._actions if not a.option_strings and not a.help]
        assert undescribed == [], name
    # argparse alone stops filling positionals at the first option: not here
    args = parse(parser, ["images", "export", "--build", "cache.tar", "KEY"])
    assert (args.action, args.operands, args.build) == ("export", ["cache.tar", "KEY"], True)
    with pytest.raises(SystemExit):
        parse(parser, ["images", "export", "--build", "cache.tar", "--nonsense"])
    shown = commands["exec"].format_help()
    assert "  wsfixture exec web sh -c 'cd repo && make test'\n" in shown
    assert "name                  a workspace of the config" in shown
