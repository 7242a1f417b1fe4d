"""What agents use: ``wsfixture serve``, the E2B-compatible server (``wsfixture.serve``),
in the foreground until Ctrl-C (or SIGTERM), its sandboxes and their lab taken down when it
stops; ``wsfixture mcp``, the MCP server on stdio (``wsfixture.mcp_server``) over the
config's workspaces; ``wsfixture skill``, the create-workspace skill an agent reads."""

from __future__ import annotations

import argparse
import importlib
import os
from importlib import resources
from pathlib import Path

from wsfixture.api import CONFIG_ENV, DEFAULT_CONFIG
from wsfixture.cli.lookup import UsageError
from wsfixture.cli.output import say
from wsfixture.model.config import Config, load_config


def _needs_extra(module: str) -> None:
    """A clear word, not a traceback, when the agents extra is not installed."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise UsageError(f"this command needs the {module!r} package: pip install "
                         "'wsfixture[agents]'") from None  # fmt: skip


def cmd_serve(args: argparse.Namespace) -> int:
    _needs_extra("e2b")
    _needs_extra("uvicorn")
    from wsfixture import serve

    # No config file where the default points: the base template alone. One named on
    # the command line must be there (load_config says so).
    default = os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)
    missing_default = args.config == default and not Path(args.config).exists()
    config = Config() if missing_default else load_config(args.config)
    key_path = Path(args.api_key_file) if args.api_key_file else None
    key = serve.api_key(args.api_key, key_path)
    serve.listen_address(args.listen)  # a bad address is refused before a lab is made
    if args.max_sandboxes < 1:
        raise UsageError(f"--max-sandboxes: {args.max_sandboxes}; 1 or more")
    templates = ", ".join(["base", *config.workspaces])

    def ready(url: str, lab: str) -> None:
        where = "given" if args.api_key else str(key_path or serve.key_file())
        say(f"serving E2B's API at {url} (templates: {templates}; API key: {where})")
        say(f"  E2B_API_URL={url} E2B_SANDBOX_URL={url} E2B_API_KEY=...")
        say(f"lab {lab}: the sandboxes' network (Ctrl-C stops them all)")

    serve.serve(config, args.listen, key, ready, args.max_sandboxes)
    say("serve: stopped; its sandboxes are gone")
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """The MCP server on stdin/stdout, until its client closes them."""
    _needs_extra("mcp")
    from wsfixture.mcp_server import serve_stdio

    serve_stdio(load_config(args.config))
    return 0


SKILL_NAME = "create-workspace"


def skill_text() -> str:
    return resources.files("wsfixture").joinpath("skill/SKILL.md").read_text()


def cmd_skill(args: argparse.Namespace) -> int:
    """Print the skill, or write it where an agent looks for skills."""
    if args.install is None:
        print(skill_text(), end="")
        return 0
    target = Path(args.install) / SKILL_NAME / "SKILL.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(skill_text())
    say(f"{target}: written")
    return 0
