"""``wsfixture world``: a stand-in internet (``net.world``) for trying egress and allowlists
by hand, in the foreground until Ctrl-C (or SIGTERM), then taken down. A config's
``network.uplinkNamespace`` names its host namespace, so a lab's uplink goes there."""

from __future__ import annotations

import argparse
import signal
import threading

from wsfixture.cli.output import say
from wsfixture.net.world import world


def cmd_world(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    with world() as made:
        say(f"world: up; its host namespace is {made.netns}, its internet {made.internet}")
        say(f"  http://{made.name}/ at {made.http}, http://{made.other_name}/ at "
            f"{made.other_http}, DNS at {made.dns}")  # fmt: skip
        say(f'  a config goes out through it with: [network] internet = true, '
            f'uplinkNamespace = "{made.netns}"')  # fmt: skip
        say("  Ctrl-C takes it down")
        stop.wait()
    say("world: down")
    return 0
