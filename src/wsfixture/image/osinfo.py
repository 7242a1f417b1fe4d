"""What testinfra's ``host.system_info`` finds in a workspace, read from its image here.

testinfra learns it from the guest before its first file, package or service check: three
commands (``uname -s``, ``cat /etc/os-release``, ``uname -m``), each a channel and an exec.
On a freshly restored VM under TCG those are among the slowest programs it ever runs
(~0.4 s together, a third of a short test's body), and the answers are in the image the
workspace booted from. The parsing follows testinfra's own, so the values are the ones it
would have found (``tests/integration`` compares them on a container and a VM).
"""

from __future__ import annotations

import os

from wsfixture.image.recipe import Image

OS_RELEASE = "etc/os-release"
# The fields testinfra reads from os-release, and its names for them.
FIELDS = {"ID=": "distribution", "VERSION_ID=": "release", "VERSION_CODENAME=": "codename"}


def parse_os_release(text: str) -> dict[str, str]:
    """testinfra's reading of os-release: quotes dropped wherever they stand."""
    found = {}
    for line in text.splitlines():
        for key, name in FIELDS.items():
            if line.startswith(key):
                found[name] = line[len(key) :].replace('"', "").replace("'", "").strip()
    if found.get("distribution") == "arch":
        found["release"] = "rolling"
    return found


def system_info(image: Image) -> dict[str, str | None] | None:
    """``host.system_info``'s values for a Linux workspace of ``image`` on this machine's
    architecture; None where the image has no os-release (testinfra then asks the guest,
    as it would anywhere)."""
    try:
        found = parse_os_release(image.read_text(OS_RELEASE))
    except (OSError, UnicodeError):
        return None
    return {
        "type": "linux",
        "distribution": found.get("distribution"),
        "codename": found.get("codename"),
        "release": found.get("release"),
        "arch": os.uname().machine,
    }
