"""Every ``--ws-*`` option in one table: its ini key, what it takes, its default and its
help. ``pytest_addoption`` is made from it, ``read`` gives the rest of the plugin one
frozen ``Options`` (the command line over the ini over the default, checked), and the
README's option table is ``markdown()``, held to it by a test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from wsfixture.image.registry import Reference, RegistryError

KEEP_CHOICES = ("never", "failed", "always")
REPORT_CHOICES = ("short", "full", "off")
PRESTART_CHOICES = ("vm", "all", "off")
# A command that never ends must not hold a whole test session: its bound unless a test
# asks for another (``timeout=None`` per call lifts it).
COMMAND_TIMEOUT = 600.0


@dataclass(frozen=True)
class Option:
    flag: str  # "--ws-keep"
    ini: str | None  # "wsfixture_keep"; None: the command line only
    takes: str  # the value's shape, for help and the README: "PATH", "SECONDS", ...
    default: Any
    help: str
    choices: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--ws-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--ws-config", "wsfixture_config", "PATH", "",
           "the workspace config (TOML or `nix eval --json` output)"),
    Option("--ws-hosts", "wsfixture_hosts", "NAME[,NAME]", "",
           "workspaces of the config that testinfra's `host` runs each test on (each booted "
           "once per session), as its --hosts would"),
    Option("--ws-attach", "wsfixture_attach", "NAME[,NAME]", "",
           "running workspaces of the config (`wsfixture up`) that testinfra's `host` runs "
           "each test on, through their pinned login; none is stopped at the end"),
    Option("--ws-keep", "wsfixture_keep", "never|failed|always", "never",
           "keep workspaces running after the session: `failed` keeps every workspace a "
           "failed test used, module- and session-scoped ones too; the summary prints "
           "`ssh -F <ssh_config> <name>` and how to remove each", KEEP_CHOICES),
    Option("--ws-timeout", None, "SECONDS", None,
           "how long a workspace may take to be ready (default: its kind's)"),
    Option("--ws-command-timeout", "wsfixture_command_timeout", "SECONDS", COMMAND_TIMEOUT,
           "how long a command may run unless the call says (`timeout=None` per call); "
           "0: no limit"),
    Option("--ws-report", "wsfixture_report", "short|full|off", "short",
           "what a failed test's report shows of its workspaces: `short` (the test's "
           "commands with their last lines), `full` (console, journal, units, network, every "
           "command), `off`", REPORT_CHOICES),
    Option("--ws-artifacts", "wsfixture_artifacts", "DIR", None,
           "for each failed test that used a workspace, write `DIR/<test id>/<workspace>/`: "
           "console.log, journal.txt, commands.txt (every command the test ran, its status, "
           "time and output), describe.json, network.txt; the JUnit XML gets a "
           "`wsfixture_artifacts` property, and $GITHUB_STEP_SUMMARY a section, per failure"),
    Option("--ws-image-cache", "wsfixture_image_cache", "REF", None,
           "an OCI registry reference (HOST[:PORT]/NAME): images and VM templates the session "
           "needs are pulled from it before they would be built (an unreachable one is said "
           "once, and they are built)"),
    Option("--ws-image-cache-push", None, "", False,
           "push to --ws-image-cache what the session built"),
    Option("--ws-state-dir", None, "DIR", None,
           "the state root for workspaces (default: a temporary directory per session)"),
    Option("--ws-overcommit", None, "", False,
           "start workspaces whose memory is more than the host has available (refused "
           "otherwise, before anything is made; the config's `defaults.overcommit`)"),
    Option("--ws-prestart", "wsfixture_prestart", "vm|all|off", "vm",
           "start the next test's workspace while this test runs, when both ask for the same "
           "inline workspace (no name or ip, function scope): `vm` for VMs, whose restore "
           "costs seconds of a core, `all` for containers too, `off`", PRESTART_CHOICES),
    Option("--ws-verify", None, "", False,
           "collect one test item per workspace of the config and built-in check"),
    Option("--ws-world", None, "", False,
           "the lab's internet is a stand-in world of the session's own (namespaces with "
           "HTTP and DNS servers: `ws_world`), so egress and allowlists are tested without "
           "leaving the machine"),
)  # fmt: skip


@dataclass(frozen=True)
class Options:
    """What the session was asked for, read once."""

    config: str  # "" for none
    hosts: tuple[str, ...]
    attach: tuple[str, ...]  # running ones (`wsfixture up`), for testinfra's host
    keep: str
    timeout: float | None
    command_timeout: float | None  # None: commands may run on
    report: str
    artifacts: str | None  # the failure artifacts' directory
    image_cache: str | None  # an OCI registry reference
    image_cache_push: bool
    state_dir: str | None
    overcommit: bool
    prestart: str  # one of PRESTART_CHOICES
    verify: bool
    world: bool  # the lab's uplink goes to a world of the session's (net.world)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("wsfixture", "wsfixture workspaces")
    for option in OPTIONS:
        if option.takes == "":
            group.addoption(option.flag, action="store_true", help=option.help)
        else:
            metavar = None if option.choices else option.takes
            group.addoption(option.flag, choices=option.choices or None, metavar=metavar,
                            help=option.help)  # fmt: skip
        if option.ini is not None:
            parser.addini(option.ini, f"the same as {option.flag}")


def _given(config: pytest.Config, option: Option) -> Any:
    """The command line's value, else the ini's, else the default."""
    value = config.getoption(option.flag)
    if value in (None, False) and option.ini is not None:
        value = config.getini(option.ini) or None
    return option.default if value in (None, "") else value


def _where(option: Option) -> str:
    return f"{option.flag} (ini {option.ini})" if option.ini else option.flag


def _seconds(option: Option, value: Any) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise pytest.UsageError(f"{_where(option)} = {value!r}; allowed: seconds (0: no limit)")
    return seconds


def read(config: pytest.Config) -> Options:
    """The options, checked: a bad value is a usage error naming the option and its ini
    key, the value and what is allowed, before anything is collected or booted."""
    by_dest = {option.dest: option for option in OPTIONS}
    values = {dest: _given(config, option) for dest, option in by_dest.items()}
    for dest, option in by_dest.items():
        if option.choices and values[dest] not in option.choices:
            raise pytest.UsageError(
                f"{_where(option)} = {values[dest]!r}; allowed: {', '.join(option.choices)}"
            )
    command_timeout = _seconds(by_dest["command_timeout"], values["command_timeout"])
    if values["image_cache"]:
        try:
            Reference.parse(str(values["image_cache"]))
        except RegistryError as exc:
            raise pytest.UsageError(f"{_where(by_dest['image_cache'])}: {exc}") from None
    hosts, attach = (
        tuple(name.strip() for name in str(values[key]).split(",") if name.strip())
        for key in ("hosts", "attach")
    )
    return Options(
        config=str(values["config"]),
        hosts=hosts,
        attach=attach,
        keep=str(values["keep"]),
        timeout=_seconds(by_dest["timeout"], values["timeout"]),
        command_timeout=None if command_timeout == 0 else command_timeout,
        report=str(values["report"]),
        artifacts=str(values["artifacts"]) if values["artifacts"] else None,
        image_cache=str(values["image_cache"]) if values["image_cache"] else None,
        image_cache_push=bool(values["image_cache_push"]),
        state_dir=str(values["state_dir"]) if values["state_dir"] else None,
        overcommit=bool(values["overcommit"]),
        prestart=str(values["prestart"]),
        verify=bool(values["verify"]),
        world=bool(values["world"]),
    )


def markdown() -> str:
    """The README's option table (a "|" in a cell is escaped, even in code)."""
    rows = ["| Option | ini key | Default | What it does |", "|---|---|---|---|"]
    for option in OPTIONS:
        takes = option.takes.replace("|", "\\|")
        flag = f"`{option.flag} {takes}`" if takes else f"`{option.flag}`"
        ini = f"`{option.ini}`" if option.ini else "-"
        default = "-" if option.default in (None, "", False) else f"`{option.default:g}`" if (
            isinstance(option.default, float)) else f"`{option.default}`"  # fmt: skip
        rows.append(f"| {flag} | {ini} | {default} | {option.help} |")
    return "\n".join(rows)
