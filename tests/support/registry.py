"""A throwaway OCI registry (Debian's docker-registry, the reference distribution
registry) on 127.0.0.1, for the image-cache tests and benchmarks: its own config and
storage directory, ended by its PID."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from wsfixture.host import system


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def patched_env(changes: dict[str, str]) -> Iterator[None]:
    """This process's environment with ``changes``, restored as it was afterwards (a
    client in this process reads it: the registry's credentials, the e2b SDK's URLs)."""
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server of ``handler`` on 127.0.0.1 in a thread: its "127.0.0.1:PORT"."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def local_registry(top: Path) -> Iterator[tuple[str, Path]]:
    """A registry serving from ``top``/storage: ("127.0.0.1:PORT", the storage dir)."""
    port = free_port()
    config = top / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {top / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log_path = top / "registry.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["docker-registry", "serve", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = log_path.read_text()
                    raise RuntimeError(f"the registry never answered:\n{log}") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}", top / "storage"
    finally:
        system.end_process(process, 5.0)
