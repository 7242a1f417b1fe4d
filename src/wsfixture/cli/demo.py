"""``python -m wsfixture.cli.demo CONFIG``: boot every workspace of a config, verify, tear down.

What ``make demo`` runs. It uses a throwaway state root and its own lab, so it touches
nothing of yours, and prints what it found: boot times, every check, the teardown.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from wsfixture import checks
from wsfixture.errors import WsfixtureError
from wsfixture.host import system
from wsfixture.model.config import load_config, override
from wsfixture.model.plan import plan, render_text
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace
from wsfixture.workspaces.prepare import prepare_image


def say(text: str) -> None:
    print(text, flush=True)


def run_demo(path: str) -> int:
    base = load_config(path)
    state = Path(tempfile.mkdtemp(prefix="wsfixture-demo-"))
    config = base.with_state_root(state)
    say(f"== plan of {path}\n{render_text(plan(config))}\n")
    failures = 0
    # The demo checks workspaces; its lab has no internet (no packet leaves this machine).
    with Lab(config.network) as lab:
        say(f"== lab {lab.name}: network namespace with bridge {config.network.bridge}, "
            f"DNS on {config.network.gateway}, no internet")  # fmt: skip
        specs = []
        for spec in config.workspaces.values():
            if isinstance(spec.internet, tuple) or isinstance(config.network.internet, tuple):
                say(
                    f"   {spec.name}: its allowlist applies under `wsfixture up`; here, no internet"
                )
                spec = override(config, spec, internet=False)
            specs.append(spec)
        workspaces = [
            Workspace(spec, config, lab, progress=lambda line: say(f"   {line}")) for spec in specs
        ]
        try:
            # Images first: a boot timed while another workspace's image builds would
            # count the build, not the boot.
            for ws in workspaces:
                prepare_image(ws.config, ws.spec, ws._progress)
            for ws in workspaces:
                say(f"== starting {ws.name} ({ws.spec.type}) ...")
                ws._launch()
            for ws in workspaces:
                ws._wait_ready()
                facts = ws.describe()
                extra = f", accel {facts['accel']}" if "accel" in facts else ""
                say(f"   {ws.name}: ready in {ws.ready_seconds:.2f}s{extra}")
            for ws in workspaces:
                say(f"== checks of {ws.name}")
                for outcome in checks.verify(ws):
                    mark = f"{outcome.result:<4}"
                    say(f"   {mark} {outcome.check.id:<26} {outcome.detail or outcome.check.doc}")
                    failures += not outcome.ok
                say(f"   uname: {ws.succeed('uname -sr').strip()}")
        finally:
            for ws in reversed(workspaces):
                started = time.monotonic()
                ws.stop()
                say(f"== stopped {ws.name} in {time.monotonic() - started:.2f}s")
    system.remove_tree(state)  # a throwaway state root: its keys go with it
    say(f"== lab removed; the throwaway state root {state} (host keys) removed")
    say("demo: all checks passed" if failures == 0 else f"demo: {failures} check(s) FAILED")
    return 0 if failures == 0 else 1


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "examples/workspaces.toml"
    try:
        return run_demo(path)
    except WsfixtureError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", []):
            print(note, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
