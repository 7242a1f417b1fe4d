"""``wsfixture serve``: an E2B-compatible server backed by wsfixture workspaces, so agent
frameworks that speak E2B's protocol (its ``e2b`` SDK, and what is built on it) get a
container or a VM on this host, with the config's allowlists, limits and checkpoints.

    wsfixture serve --listen 127.0.0.1:49982
    E2B_API_URL=http://127.0.0.1:49982 E2B_SANDBOX_URL=http://127.0.0.1:49982 \\
    E2B_API_KEY=$(cat /var/lib/wsfixture/serve/api-key) python agent.py
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

from wsfixture.errors import ConfigError, ConfigIssue
from wsfixture.host import settings
from wsfixture.model.config import Config

DEFAULT_LISTEN = "127.0.0.1:49982"  # E2B's envd port, on loopback
MAX_SANDBOXES = 16  # at once, unless `serve --max-sandboxes` says otherwise
KEY_BYTES = 32
MIN_KEY = 16  # characters a key must have to be a secret
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The server's labs are named wsrv-<hex>: apart from the Python API's own (wspy-<hex>), so
# `wsfixture list` and a count of the API's labs tell the two apart.
LAB_PREFIX = "wsrv"


def key_file() -> Path:
    return settings.current().lib_dir / "serve" / "api-key"


def api_key(given: str | None, path: Path | None) -> str:
    """The key every call must carry: ``given``, else the one in ``path`` (the default
    file, made with a new key on first start: 0600 in a 0700 directory)."""
    if given is not None:
        if len(given) < MIN_KEY:
            issue = ConfigIssue("--api-key", "is too short to be a secret", "*" * len(given),
                                f"{MIN_KEY} characters or more")  # fmt: skip
            raise ConfigError([issue])
        return given
    path = path or key_file()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"wsf_{secrets.token_hex(KEY_BYTES)}\n")
    key = path.read_text().strip()
    if len(key) < MIN_KEY:
        issue = ConfigIssue("--api-key-file", f"holds no key of {MIN_KEY} characters or more",
                            str(path), "a file with the key on its first line")  # fmt: skip
        raise ConfigError([issue])
    return key


def listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); ConfigError naming ``--listen`` otherwise."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError([ConfigIssue("--listen", "is not HOST:PORT", value,
                                       f"like {DEFAULT_LISTEN}")])  # fmt: skip
    return host.strip("[]"), int(port)


def serve(
    config: Config, listen: str, key: str, ready: Callable[[str, str], None],
    most: int = MAX_SANDBOXES,
) -> None:  # fmt: skip
    """Serve until interrupted, ``most`` sandboxes at once; every sandbox and the lab are
    gone when it returns.
    ``ready(url, lab)`` is told where it serves and the lab its sandboxes live in."""
    import uvicorn

    from wsfixture import api
    from wsfixture.net.lab import new_lab_name
    from wsfixture.serve.app import Server
    from wsfixture.serve.sandboxes import Sandboxes

    class Until(uvicorn.Server):
        """uvicorn's server, but a signal only asks it to stop: uvicorn's own handling
        raises the signal again once it has stopped, which would end this process before
        the sandboxes and the lab are taken down."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            def stop(signum: int, frame: object) -> None:
                self.should_exit = True

            before = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in before.items():
                    signal.signal(sig, handler)

    host, port = listen_address(listen)
    with api.Lab(config, new_lab_name(LAB_PREFIX)) as lab:
        sandboxes = Sandboxes(lab, most)
        try:
            server = Until(uvicorn.Config(
                Server(sandboxes, key), host=host, port=port, log_level="warning",
                lifespan="on", access_log=False, timeout_graceful_shutdown=5,
            ))  # fmt: skip
            ready(f"http://{host}:{port}", lab.name)
            server.run()
        finally:
            sandboxes.close()
