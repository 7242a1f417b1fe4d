"""``wsfixture serve`` for the tests and the bench: a server on a free loopback port over
a config of the caller's, and the ``e2b`` SDK pointed at it."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.registry import free_port, patched_env

KEY = "wsf-test-key-0123456789abcdef"


class Served:
    def __init__(self, url: str, process: subprocess.Popen[str], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C would; its exit status once it has taken everything down."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)

    def lab(self) -> str:
        """The server's lab, as its sandboxes' workspaces name it."""
        for line in Path(self.log).read_text().splitlines():
            if line.startswith("lab "):
                return line.split()[1].rstrip(":")
        raise AssertionError(f"no lab line in {self.log.read_text()}")


@contextlib.contextmanager
def serving(where: Path, text: str, *options: str) -> Iterator[Served]:
    """``wsfixture serve`` of the config ``text`` (its ``{state}`` under ``where``), the SDK
    pointed at it (its environment restored after); the server is the caller's to stop."""
    where.mkdir(parents=True, exist_ok=True)
    config = where / "workspaces.toml"
    config.write_text(text.format(state=where / "state"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = where / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "wsfixture.cli", "-c", str(config), "serve",
             "--listen", f"127.0.0.1:{port}", "--api-key", KEY, *options],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError(f"the server did not listen within 60 s: {log.read_text()}")
    with patched_env({"E2B_API_URL": url, "E2B_SANDBOX_URL": url, "E2B_API_KEY": KEY}):
        yield Served(url, process, log)
