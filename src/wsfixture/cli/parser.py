"""The command line's words: every command, its arguments and the function that runs it."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from collections.abc import Callable, Sequence

from wsfixture import serve
from wsfixture.cli.commands import (
    access,
    agents,
    checkpoints,
    config,
    faults,
    host,
    images,
    lifecycle,
    power,
    world,
)
from wsfixture.model import fields
from wsfixture.net import inventory

DEFAULT_CONFIG = "workspaces.toml"
DESCRIPTION = "plan, start, inspect, verify and reap workspaces from the command line"
NAME_HELP = "a workspace of the config"

# What `wsfixture COMMAND --help` shows under "examples"; each one is parsed in the suite
# (tests/unit/test_plan_cli.py), so none goes stale.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "plan": ("wsfixture plan", "wsfixture plan other.toml --json"),
    "validate": ("wsfixture validate", "wsfixture -c ci.toml validate"),
    "doctor": ("wsfixture doctor", "wsfixture doctor --json"),
    "setup-host": ("wsfixture setup-host",),
    "schema": ("wsfixture schema > workspaces.schema.json", "wsfixture schema --markdown"),
    "up": ("wsfixture up", "wsfixture up web db --ttl 2h", "wsfixture up --all --json"),
    "down": ("wsfixture down", "wsfixture down web"),
    "restart": ("wsfixture restart web",),
    "status": ("wsfixture status", "wsfixture status web --json"),
    "list": ("wsfixture list", "wsfixture list --json"),
    "ssh": (
        "wsfixture ssh web",
        "wsfixture ssh web uname -a",
        "wsfixture ssh --lab wst-1a2b3c web",
    ),
    "logs": (
        "wsfixture logs web",
        "wsfixture logs web -f",
        "wsfixture logs web --console -n 50",
        "wsfixture logs web --job 3",
    ),
    "check": ("wsfixture check", "wsfixture check web --json"),
    "forward": ("wsfixture forward web 80", "wsfixture forward web 5432 --local 15432"),
    "egress": ("wsfixture egress agent", "wsfixture egress agent --json"),
    "checkpoint": ("wsfixture checkpoint web", "wsfixture checkpoint web before-upgrade"),
    "rollback": ("wsfixture rollback web before-upgrade",),
    "checkpoints": ("wsfixture checkpoints web", "wsfixture checkpoints web --delete old"),
    "fault": (
        "wsfixture fault partition web db",
        "wsfixture fault block web db",
        "wsfixture fault shape web --delay 100ms --jitter 20ms",
        "wsfixture fault shape web db --loss 10%",
        "wsfixture fault dns api.example.com nxdomain",
        "wsfixture fault list",
        "wsfixture fault heal",
    ),
    "world": ("wsfixture world",),
    "mcp": ("wsfixture -c workspaces.toml mcp",),
    "skill": ("wsfixture skill", "wsfixture skill --install ~/.claude/skills"),
    "serve": (
        "wsfixture serve",
        "wsfixture serve --listen 127.0.0.1:8000 --api-key-file ./e2b.key",
    ),
    "pause": ("wsfixture pause web",),
    "resume": ("wsfixture resume web",),
    "cp": (
        "wsfixture cp ./app.tar web:/tmp/app.tar",
        "wsfixture cp web:/var/log/syslog .",
        "wsfixture cp -r web:/etc/nginx ./nginx --max 10M",
    ),
    "exec": (
        "wsfixture exec web uname -a",
        "wsfixture exec web sh -c 'cd repo && make test'",
        "wsfixture exec -e CI=1 -w /home/dev/repo web make",
        "wsfixture exec -u root web apt-get update",
        "wsfixture exec -d web ./server",
    ),
    "jobs": ("wsfixture jobs web", "wsfixture jobs web --json"),
    "kill": ("wsfixture kill web 3", "wsfixture kill web 3 -s KILL"),
    "aliases": ('eval "$(wsfixture aliases)"', "wsfixture aliases --shell fish"),
    "hosts": ("wsfixture hosts", "wsfixture hosts --apply --file ./hosts"),
    "apply": ("wsfixture apply --dry-run", "wsfixture apply"),
    "completion": ('eval "$(wsfixture completion)"', "wsfixture completion zsh"),
    "destroy": ("wsfixture destroy web", "wsfixture destroy web --yes"),
    "gc": ("wsfixture gc", "wsfixture gc --lab wst-1a2b3c"),
    "inventory": ("wsfixture inventory > hosts.ini", "wsfixture inventory --format yaml"),
    "images": (
        "wsfixture images",
        "wsfixture images --prune --days 7",
        "wsfixture images key",
        "wsfixture images export --build cache.tar",
        "wsfixture images import cache.tar",
        "wsfixture images push registry.example:5000/wsfixture/cache",
        "wsfixture images pull registry.example:5000/wsfixture/cache",
    ),
}


def ttl_seconds(text: str) -> int:
    seconds = fields.parse_duration(text)
    if not seconds:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a duration; allowed: seconds, or like "90s", "30m", "2h", "1d"'
        )
    return seconds


def global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """-c and --debug, before the command (with their defaults) and after it (without, so
    they override only when given there)."""
    config_default = os.environ.get("WSFIXTURE_CONFIG", DEFAULT_CONFIG)
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks",
        default=False if defaults else argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument(
        "-c", "--config",
        help=f"workspace config (default: $WSFIXTURE_CONFIG or ./{DEFAULT_CONFIG})",
        default=config_default if defaults else argparse.SUPPRESS,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsfixture", description=DESCRIPTION)
    global_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"wsfixture {version()}")
    after = argparse.ArgumentParser(add_help=False)
    global_options(after, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], text: str,
                json_out: bool = False) -> argparse.ArgumentParser:  # fmt: skip
        examples = "\n".join(f"  {line}" for line in EXAMPLES[name])
        p = sub.add_parser(
            name, help=text, description=text, parents=[after], epilog=f"examples:\n{examples}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        p.set_defaults(func=func)
        if json_out:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = command(
        "plan", config.cmd_plan, "print every workspace's derived identity; boots nothing", True
    )
    p.add_argument("config_file", nargs="?", help="config (default: -c)")
    p = command("validate", config.cmd_validate, "check a config; print every problem")
    p.add_argument("config_file", nargs="?", help="config (default: -c)")
    command("doctor", host.cmd_doctor, "is this host ready? what to install if not (exit 3)", True)
    command("setup-host", host.cmd_setup_host, "install what wsfixture needs (Debian/Ubuntu, root)")
    p = command(
        "schema", config.cmd_schema, "the config's JSON Schema, for editors that check TOML"
    )
    p.add_argument("--markdown", action="store_true", help="the options as a Markdown table")
    p = command("up", lifecycle.cmd_up, "start workspaces (default: those with autoStart)", True)
    p.add_argument("names", nargs="*", help="workspaces of the config (default: those with "
                   "autoStart)")  # fmt: skip
    p.add_argument("--ttl", type=ttl_seconds, metavar="DURATION",
                   help='stop them after this long, like "90s", "30m", "2h"')  # fmt: skip
    p.add_argument("--all", action="store_true", help="every workspace of the config")
    p = command("down", lifecycle.cmd_down, "stop workspaces (default: all running); state is kept")
    p.add_argument("names", nargs="*", help="running workspaces (default: all of the config's)")
    p = command("restart", lifecycle.cmd_restart, "stop and start workspaces")
    p.add_argument("names", nargs="+", help="workspaces of the config")
    p = command(
        "status",
        lifecycle.cmd_status,
        "state, IP, uptime, type, and whether it matches the config",
        True,
    )
    p.add_argument("names", nargs="*", help="just these (default: all)")
    command("list", lifecycle.cmd_list, "running workspaces of every lab", True)
    p = command("ssh", access.cmd_ssh, "ssh into a workspace (pinned host key)")
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]",
                   help="run this instead of a login shell")  # fmt: skip
    p.add_argument("--lab", help="another lab, e.g. one kept by pytest")
    p = command("logs", access.cmd_logs, "console log and journal of a workspace")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="follow the journal")
    p.add_argument("--console", action="store_true", help="the console log only")
    p.add_argument("-n", "--lines", type=int, default=100, help="how many (100)")
    p.add_argument("--job", metavar="ID", help="a job's output instead (wsfixture jobs NAME)")
    p.add_argument("--lab", help="another lab, e.g. one kept by pytest")
    p = command("check", access.cmd_check, "run the verification suite on running workspaces", True)
    p.add_argument("names", nargs="*", help="running workspaces (default: all)")
    p = command("forward", access.cmd_forward, "relay 127.0.0.1:<local> to a workspace's port")
    p.add_argument("name")
    p.add_argument("port", type=int, help="the workspace's port")
    p.add_argument("--local", type=int, default=0, help="the host port (default: a free one)")
    p = command("egress", access.cmd_egress, "what an allowlist let through and refused", True)
    p.add_argument("name")
    p = command("checkpoint", checkpoints.cmd_checkpoint,
                "save a running workspace's root (a VM's memory too) under a tag")  # fmt: skip
    p.add_argument("name")
    p.add_argument("tag", nargs="?", help="default: checkpoint-<n>")
    p = command("rollback", checkpoints.cmd_rollback,
                "return a running workspace to a checkpoint; shares stay as they are")  # fmt: skip
    p.add_argument("name")
    p.add_argument("tag", help="a checkpoint's tag (wsfixture checkpoints NAME)")
    p = command("checkpoints", checkpoints.cmd_checkpoints, "a workspace's checkpoints", True)
    p.add_argument("name")
    p.add_argument("--delete", metavar="TAG", help="delete this checkpoint")
    p = command("fault", faults.cmd_fault, "faults between running workspaces: partition, "
                "block, shape (loss, delay, jitter, rate), dns, list, heal")  # fmt: skip
    p.add_argument("action", choices=faults.ACTIONS, help="what to do (below)")
    p.add_argument(
        "operands", nargs=argparse.REMAINDER, metavar="NAME",
        help="partition A B, or A B -- C D; block SRC DST; shape WS [PEER] [--loss 10%%] "
             "[--delay 50ms [--jitter 10ms]] [--rate 1mbit]; dns NAME nxdomain|servfail|timeout",
    )  # fmt: skip
    command("world", world.cmd_world, "a stand-in internet (HTTP, DNS) in namespaces of its "
            "own, for a lab's uplinkNamespace, until Ctrl-C")  # fmt: skip
    p = command("serve", agents.cmd_serve, "an E2B-compatible server: sandboxes are workspaces "
                "of the config (templates) or base")  # fmt: skip
    p.add_argument("--listen", default=serve.DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="where to serve E2B's API and envd "
                        f"(default: {serve.DEFAULT_LISTEN})")  # fmt: skip
    p.add_argument("--max-sandboxes", type=int, default=serve.MAX_SANDBOXES, metavar="N",
                   help="sandboxes at once; past them a create is refused with 429 "
                        f"(default: {serve.MAX_SANDBOXES})")  # fmt: skip
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--api-key", help="the key every call must carry (X-API-KEY)")
    keys.add_argument("--api-key-file", metavar="FILE", help="read the key from FILE (default: "
                      "one made on first start, /var/lib/wsfixture/serve/api-key)")  # fmt: skip
    p = command("skill", agents.cmd_skill, "the create-workspace skill for coding agents "
                "(SKILL.md): printed, or written into a skills directory")  # fmt: skip
    p.add_argument("--install", metavar="DIR", help="write DIR/create-workspace/SKILL.md")
    command("mcp", agents.cmd_mcp, "an MCP server on stdio: tools over the config's workspaces "
            "(list, up, down, status, exec, files, checkpoints, egress)")  # fmt: skip
    p = command("pause", power.cmd_pause, "stop every process of a running workspace where it is")
    p.add_argument("name")
    p = command("resume", power.cmd_resume, "let a paused workspace go on")
    p.add_argument("name")
    p = command(
        "cp", access.cmd_cp, "copy a file in or out: cp LOCAL NAME:PATH, cp NAME:PATH LOCAL"
    )
    p.add_argument("-r", "--recursive", action="store_true", help="copy a directory")
    p.add_argument("--max", metavar="SIZE", help="refuse a copy out over SIZE (100M, 2G); "
                   "default: each file's own size, and the target's free space")  # fmt: skip
    p.add_argument("source", help="LOCAL, or NAME:PATH to copy out")
    p.add_argument("target", help="NAME:PATH to copy in, or LOCAL")
    p = command("exec", access.cmd_exec, "run a command in a workspace (its words are its "
                "argv: sh -c '...' for a shell line); --detach: a job")  # fmt: skip
    p.add_argument("-d", "--detach", action="store_true", help="return at once: a job")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="a variable for it (again for more)")  # fmt: skip
    p.add_argument("-w", "--workdir", metavar="DIR", help="the directory it runs in")
    p.add_argument("-u", "--user", help="the user it runs as (root too), through doas")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]",
                   help="its argv, as given (no shell)")  # fmt: skip
    p = command("jobs", access.cmd_jobs, "the detached commands of a workspace, with their state")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("kill", access.cmd_kill, "signal a job's process group (wsfixture jobs NAME)")
    p.add_argument("name")
    p.add_argument("id", help="the job's ID, as `jobs` lists it")
    p.add_argument("-s", "--signal", default="TERM", help="TERM (the default), KILL, INT, ...")
    p = command("aliases", config.cmd_aliases, 'shell aliases: eval "$(wsfixture aliases)"')
    p.add_argument("--shell", choices=("bash", "zsh", "fish"), default="bash",
                   help="the shell's syntax (bash)")  # fmt: skip
    p = command("hosts", config.cmd_hosts, "print hosts entries, or --apply them to a hosts file")
    p.add_argument("--apply", action="store_true", help="write them (default: print them)")
    p.add_argument("--file", help="hosts file to edit (default: the lab's)")
    p.add_argument("--root-namespace", action="store_true", help="edit the real /etc/hosts")
    p = command(
        "apply", lifecycle.cmd_apply, "restart changed workspaces, start new autoStart ones", True
    )
    p.add_argument("--dry-run", action="store_true", help="say what it would do; do nothing")
    p = command(
        "completion", host.cmd_completion, 'shell completion: eval "$(wsfixture completion)"'
    )
    p.add_argument("shell", nargs="?", choices=("bash", "zsh", "fish"), default="bash",
                   help="the shell (bash)")  # fmt: skip
    p = command("destroy", lifecycle.cmd_destroy, "delete a stopped workspace's state directory")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p = command("gc", host.cmd_gc, "reap what crashed runs left behind (dead owners only)", True)
    p.add_argument("--quiet", action="store_true", help="print only when something was reaped")
    p.add_argument("--lab", help="release everything of this lab, kept workspaces too")
    p = command(
        "inventory", access.cmd_inventory,
        "an Ansible inventory of a lab's running workspaces (host keys stay pinned)",
    )  # fmt: skip
    p.add_argument("--lab", help="a lab kept by pytest (default: the config's persistent lab)")
    p.add_argument("--format", choices=inventory.FORMATS, default="ini",
                   help="ini (the default), yaml or json")  # fmt: skip
    p = command("images", images.cmd_images, "the image cache; --prune removes stale images", True)
    p.add_argument(
        "action", nargs="?", choices=images.ACTIONS,
        help="key: a hash of what the config's images and templates depend on (a CI cache "
        "key); export FILE [KEY...]: them (default: the config's) into a file; import FILE; "
        "push REF [KEY...]: to an OCI registry; pull REF [KEY...] (default: REF's index)",
    )  # fmt: skip
    p.add_argument("operands", nargs="*", metavar="FILE|REF|KEY",
                   help="the action's file or registry reference, then keys")  # fmt: skip
    p.add_argument("--build", action="store_true",
                   help="export, push: first make what the cache lacks of the config's set "
                   "(each workspace started once, in a lab of its own)")  # fmt: skip
    p.add_argument(
        "--prune",
        action="store_true",
        help="remove images of an older wsfixture or unused for --days",
    )
    p.add_argument("--days", type=float, default=14.0, help="keep images used since (14)")
    p.add_argument("--dry-run", action="store_true", help="say what --prune would remove")
    p.add_argument("--remove", nargs="+", metavar="KEY", help="remove these images/templates")
    for subparser in sub.choices.values():  # a shell completes workspace names (argcomplete)
        for action in subparser._actions:
            if action.dest in ("name", "names"):
                action.completer = workspace_names  # type: ignore[attr-defined]
            if action.dest == "name" and action.help is None:
                action.help = NAME_HELP
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but words after an option (``images export --build FILE``)
    still go to a command's trailing ``operands`` (argparse stops filling positionals at
    the first option)."""
    args, extra = parser.parse_known_args(argv)
    if (
        extra
        and isinstance(getattr(args, "operands", None), list)
        and not any(word.startswith("-") for word in extra)
    ):
        args.operands += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def workspace_names(prefix: str, parsed_args: argparse.Namespace, **_: object) -> list[str]:
    """The config's workspace names that start with ``prefix`` (none if it cannot be read:
    a completing shell shows nothing rather than an error)."""
    from wsfixture.model.config import load_config

    try:
        config = load_config(getattr(parsed_args, "config", None) or os.environ.get(
            "WSFIXTURE_CONFIG", DEFAULT_CONFIG))  # fmt: skip
    except Exception:
        return []
    return [name for name in config.workspaces if name.startswith(prefix)]


def version() -> str:
    try:
        return importlib.metadata.version("wsfixture")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"
