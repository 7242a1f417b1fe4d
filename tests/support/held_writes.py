"""A write a VM's guest still holds when the VM stops: what shows whether a stop wrote out
what the guest held for its shares, and whether the guest was shut down or ended."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wsfixture.retry import retry_until
from wsfixture.workspaces import Workspace

# Written through a shared mapping by a process that goes on holding it: its pages stay
# dirty in the guest until written back (closing the file, or the mapping, would have
# written them; FUSE does on both).
WRITE_THROUGH_MAP = (
    'nohup python3 -c "import mmap, os, time; '
    "fd = os.open(os.path.expanduser({path!r}), os.O_RDWR); "
    "m = mmap.mmap(fd, 4096); m[:10] = b'through-it'; open('/tmp/mapped', 'w').close(); "
    'time.sleep(600)" >/dev/null 2>&1 &'
)
WRITTEN = b"through-it"
POWER_DOWN = "reboot: Power down"  # the guest kernel's last line in a shutdown


def stopped(ws: Workspace, share: tuple[str, Path], how: Callable[[], None]) -> tuple[bytes, str]:
    """A file of ``share`` (its guest path, its host directory) written through a mapping
    that a guest process holds, then ``ws`` stopped by ``how``: what of the write reached
    the host, and the console's lines from the moment ``how`` stopped it (read by a
    descriptor opened before: the runtime dir goes with the workspace)."""
    inside, host = share
    ws.succeed(f"truncate -s 4096 {inside}/mapped")
    ws.succeed(WRITE_THROUGH_MAP.format(path=f"{inside}/mapped"))
    written = retry_until(lambda _: ws.run("test -e /tmp/mapped")[0] == 0 or None, 30.0, 0.2)
    assert written, "the guest's writer did not start"
    with open(ws.console_log, errors="replace") as console:
        console.seek(0, 2)
        how()
        said = console.read()
    return (host / "mapped").read_bytes()[:10], said
