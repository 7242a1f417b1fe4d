"""``python -m wsfixture.relay HOST PORT``: kept for the ssh_config files of labs that were
started before the relay moved to ``wsfixture.net.relay``."""

from __future__ import annotations

import sys

from wsfixture.net.relay import relay

if __name__ == "__main__":
    relay(sys.argv[1], int(sys.argv[2]))
