"""The servers agents speak to: ``wsfixture serve``, the E2B-compatible one
(``wsfixture.serve``), in the foreground until Ctrl-C (or SIGTERM), its sandboxes and their
lab taken down when it stops; ``wsfixture mcp``, the MCP server on stdio
(``wsfixture.mcp_server``) over the config's workspaces."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from wsfixture.api import CONFIG_ENV, DEFAULT_CONFIG
from wsfixture.cli.output import say
from wsfixture.model.config import Config, load_config


def cmd_serve(args: argparse.Namespace) -> int:
    from wsfixture import serve

    # No config file where the default points: the base template alone. One named on
    # the command line must be there (load_config says so).
    default = os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)
    missing_default = args.config == default and not Path(args.config).exists()
    config = Config() if missing_default else load_config(args.config)
    key_path = Path(args.api_key_file) if args.api_key_file else None
    key = serve.api_key(args.api_key, key_path)
    serve.listen_address(args.listen)  # a bad address is refused before a lab is made
    templates = ", ".join(["base", *config.workspaces])

    def ready(url: str, lab: str) -> None:
        where = "given" if args.api_key else str(key_path or serve.key_file())
        say(f"serving E2B's API at {url} (templates: {templates}; API key: {where})")
        say(f"  E2B_API_URL={url} E2B_SANDBOX_URL={url} E2B_API_KEY=...")
        say(f"lab {lab}: the sandboxes' network (Ctrl-C stops them all)")

    serve.serve(config, args.listen, key, ready)
    say("serve: stopped; its sandboxes are gone")
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """The MCP server on stdin/stdout, until its client closes them."""
    from wsfixture.mcp_server import serve_stdio

    serve_stdio(load_config(args.config))
    return 0
