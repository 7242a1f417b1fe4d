"""What every benchmark scenario uses: the row it reports, medians, the configs it boots,
starts and stops of ours and of a raw baseline, suites run by a user's pytest, the table."""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsfixture.backends.qemu.qmp import QmpClient
from wsfixture.model.config import Config, config_from_dict
from wsfixture.net.lab import Lab
from wsfixture.workspaces import Workspace
from wsfixture.workspaces.machine import PORT_POLL_INTERVAL

HERE = Path(__file__).resolve().parent
# The repository, for the scenarios that use the tests' helpers (tests.support: a local
# registry, a server of `wsfixture serve`).
sys.path.insert(0, str(HERE.parent))

RESULTS = HERE / "results"

USER_VENV = HERE / ".user-venv"

DEADLINE = 30 * 60  # the whole run stops starting new measurements after this


@dataclass
class Context:
    """What every scenario gets: the run's state root and repetitions, and the session
    walls the sessions scenario measured (the peer compares against them)."""

    state: Path
    runs: int
    session_walls: dict[str, float] = field(default_factory=dict)


@dataclass
class Row:
    metric: str
    ours: float | None
    baseline: float | None = None
    baseline_name: str = ""
    unit: str = "s"
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline


def median(values: list[float]) -> float:
    return statistics.median(values)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_config(state: Path, **workspaces: dict[str, Any]) -> Config:
    return config_from_dict({"defaults": {"stateRoot": str(state)}, "workspaces": workspaces})


VM = {"type": "vm", "vcpu": 1, "memory": 768}


def banner(lab: Lab, ip: str, timeout: float) -> float | None:
    """Seconds until sshd at ``ip`` sends its banner (its port polled as often as the handle
    polls it: ``PORT_POLL_INTERVAL``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            sock = lab.connect(ip, 22, 0.25)
        except OSError:
            time.sleep(PORT_POLL_INTERVAL)
            continue
        try:
            sock.settimeout(2)
            if sock.recv(8).startswith(b"SSH-"):
                return time.monotonic() - started
        except OSError:
            pass
        finally:
            sock.close()
        time.sleep(PORT_POLL_INTERVAL)
    return None


def ours_start_stop(
    config: Config, name: str, runs: int, discard: bool = False
) -> tuple[list[float], list[float]]:
    """Start to ready and stop to gone of ``name``, ``runs`` times in one lab; ``discard``:
    stopped as the pytest plugin stops a test's workspace."""
    ready, stop = [], []
    with Lab(config.network) as lab:
        for _ in range(runs):
            ws = Workspace(config.workspaces[name], config, lab, discard_at_stop=discard).start()
            assert ws.ready_seconds is not None
            ready.append(ws.ready_seconds)
            ws.stop()
            assert ws.stop_seconds is not None
            stop.append(ws.stop_seconds)
    return ready, stop


def raw_start_stop(
    config: Config,
    name: str,
    runs: int,
    raw_argv: Callable[[Workspace], list[str]],
    timeout: float,
    before_each: Callable[[Workspace], None] | None = None,
) -> tuple[list[float], list[float]]:
    """The same tree/disk booted by a bare process: prepared once by a workspace, whose
    machine is then stopped, and the raw command started ``runs`` times on what it left
    (after ``before_each``, untimed)."""
    ready, stop = [], []
    with Lab(config.network) as lab:
        ws = Workspace(config.workspaces[name], config, lab).start()
        assert ws._backend is not None
        backend = ws._backend
        argv = raw_argv(ws)
        assert ws._ssh is not None
        ws._ssh.close()  # the machine goes away under it
        assert backend.process is not None
        backend.process.send_signal(signal.SIGTERM)
        backend.process.wait(60)
        try:
            for _ in range(runs):
                if before_each is not None:
                    before_each(ws)
                # As a workspace's start does (``Lab.add_host``): the last run's neighbour
                # entry, left stale, sent the first knocks nowhere (a 0.25 s stall in 2 of
                # 7 runs).
                lab.forget_neighbour(ws.ip)
                started = time.monotonic()
                proc = subprocess.Popen(
                    argv,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                try:
                    seconds = banner(lab, ws.ip, timeout)
                    if seconds is None:
                        raise RuntimeError(f"raw baseline of {name} never answered")
                    ready.append(time.monotonic() - started)
                    begin = time.monotonic()
                    raw_stop(proc, ws)
                    stop.append(time.monotonic() - begin)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
        finally:
            ws.stop()
    return ready, stop


def raw_stop(proc: subprocess.Popen[bytes], ws: Workspace) -> None:
    """What a person would do: SIGTERM for nspawn (it powers the container off); for QEMU,
    an ACPI powerdown over QMP, and `quit` if the guest ignores it (as our stop does)."""
    if ws.spec.type == "container":
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return
    from wsfixture.backends.qemu import QemuBackend

    assert isinstance(ws._backend, QemuBackend)
    qmp = QmpClient.connect(ws._backend.qmp_socket)
    try:
        qmp.command("system_powerdown")
        try:
            proc.wait(QemuBackend.stop_timeout)
        except subprocess.TimeoutExpired:
            qmp.command("quit")
            proc.wait(10)
    finally:
        qmp.close()


def start_together(config: Config, names: list[str]) -> float:
    """Seconds until every named workspace is ready, started at once in a new lab."""
    with Lab(config.network) as lab:
        wss = [Workspace(config.workspaces[name], config, lab) for name in names]
        started = time.monotonic()
        try:
            for ws in wss:
                ws._launch()
            threads = [threading.Thread(target=ws._wait_ready) for ws in wss]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert all(ws.ready_seconds is not None for ws in wss), "not all became ready"
            return time.monotonic() - started
        finally:
            for ws in wss:
                ws.stop()


def run_suite(
    args: list[str], cwd: Path, env: dict[str, str], pytest: str, expect: str = "8 passed"
) -> tuple[float, str]:
    began = time.monotonic()
    proc = subprocess.run(
        [pytest, "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    wall = time.monotonic() - began
    if proc.returncode != 0 or expect not in proc.stdout:
        raise RuntimeError(f"suite {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def user_pytest() -> str:
    """pytest from a venv holding only what a wsfixture user installs (wsfixture, editable,
    and pytest-xdist), just as the peer's venv holds only its own stack. The dev venv also
    carries hypothesis, whose pytest plugin costs ~0.5 s of import in every pytest process
    (three of them under -n 2): that is our test tooling, not the user's bill."""
    root = HERE.parent
    stamp = USER_VENV / ".installed"
    wanted = (root / "pyproject.toml").read_text()
    if not stamp.exists() or stamp.read_text() != wanted:
        say("bench: creating the user venv (wsfixture, pytest-xdist)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(USER_VENV)], check=True)
        pip = str(USER_VENV / "bin" / "pip")
        subprocess.run([pip, "install", "-q", "-e", str(root), "pytest-xdist"], check=True)
        stamp.write_text(wanted)
    return str(USER_VENV / "bin" / "pytest")


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MiB/s":
        return f"{value:.0f}MiB/s"
    if unit in ("%", "Mbit/s"):
        return f"{value:.1f}{unit}" if unit == "%" else f"{value:.2f}{unit}"
    return f"{value:.1f}ms" if unit == "ms" else f"{value:.3f}s"


def render(rows: list[Row]) -> str:
    header = (
        f"{'metric':<56} {'wsfixture':>11} {'baseline':>11} {'ratio':>7}  "
        f"{'target':<9} met  baseline is"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        met = "" if r.met is None else ("yes" if r.met else "NO")
        lines.append(
            f"{r.metric:<56} {fmt(r.ours, r.unit):>11} {fmt(r.baseline, r.unit):>11} {ratio:>7}  "
            f"{r.target:<9} {met:<4} {r.baseline_name}"
        )
    return "\n".join(lines)
