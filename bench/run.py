#!/usr/bin/env python3
"""wsfixture benchmarks: medians, each beside a baseline measured in the same run.

    make bench            # RUNS=3
    make bench RUNS=1     # quick
    .venv/bin/python bench/run.py --runs 5 --only container,latency

Prints one table (metric, wsfixture, baseline, ratio, target) and writes
bench/results/latest.json. Every loop is bounded in count and time; everything it starts
lives in lab namespaces it creates, and it stops what it started.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsfixture.backends.qemu.qmp import QmpClient
from wsfixture.host import settings
from wsfixture.image.build import ensure_image
from wsfixture.image.recipe import ImageRecipe
from wsfixture.model.config import Config, config_from_dict
from wsfixture.model.spec import RELEASES
from wsfixture.net.lab import Lab
from wsfixture.workspace import Workspace

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PEER_VENV = HERE / ".peer-venv"
USER_VENV = HERE / ".user-venv"
DEADLINE = 30 * 60  # the whole run stops starting new measurements after this


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


def banner(lab: Lab, ip: str, timeout: float) -> float | None:
    """Seconds until sshd at ``ip`` sends its banner (polled at 50 ms, as the handle does)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            sock = lab.connect(ip, 22, 0.25)
        except OSError:
            time.sleep(0.05)
            continue
        try:
            sock.settimeout(2)
            if sock.recv(8).startswith(b"SSH-"):
                return time.monotonic() - started
        except OSError:
            pass
        finally:
            sock.close()
        time.sleep(0.05)
    return None


# -- start/stop against raw baselines ------------------------------------------------------


def ours_start_stop(config: Config, name: str, runs: int) -> tuple[list[float], list[float]]:
    ready, stop = [], []
    with Lab(config.network) as lab:
        for _ in range(runs):
            ws = Workspace(config.workspaces[name], config, lab).start()
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
        assert ws.backend is not None
        backend = ws.backend
        argv = raw_argv(ws)
        assert ws.session is not None
        ws.session.close()  # the machine goes away under it
        assert backend.process is not None
        backend.process.send_signal(signal.SIGTERM)
        backend.process.wait(60)
        try:
            for _ in range(runs):
                if before_each is not None:
                    before_each(ws)
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

    assert isinstance(ws.backend, QemuBackend)
    qmp = QmpClient.connect(ws.backend.qmp_socket)
    try:
        qmp.command("system_powerdown")
        try:
            proc.wait(QemuBackend.stop_timeout)
        except subprocess.TimeoutExpired:
            qmp.command("quit")
            proc.wait(10)
    finally:
        qmp.close()


def raw_nspawn_argv(ws: Workspace) -> list[str]:
    """What a person would run by hand: the same tree and flags, nspawn's own bridge veth."""
    from wsfixture.backends.nspawn import NspawnBackend

    assert isinstance(ws.backend, NspawnBackend)
    argv = ws.backend.argv()
    bridge = f"--network-bridge={ws.config.network.bridge}"
    return [bridge if a.startswith("--network-veth-extra=") else a for a in argv]


def raw_nspawn_argv_without_userns(ws: Workspace) -> list[str]:
    """The same container without the user namespace, to show what the namespace itself
    costs: on a copy of its provisioned tree with the ownership shifted back (untimed)."""
    from wsfixture.backends.nspawn import NspawnBackend
    from wsfixture.guest.osconfig import CONTAINER_UID_BASE, NSPAWN_USER_NAMESPACE, shift_ownership

    assert isinstance(ws.backend, NspawnBackend)
    plain = ws.runtime_dir.parent / f"{ws.name}-plain-root"
    subprocess.run(["cp", "-a", str(ws.backend.root), str(plain)], check=True)
    shift_ownership(plain, -CONTAINER_UID_BASE)
    ws.lab.adopt_dir(plain)  # goes with the lab
    argv = [a for a in raw_nspawn_argv(ws) if a not in NSPAWN_USER_NAMESPACE]
    argv = [f"--directory={plain}" if a.startswith("--directory=") else a for a in argv]
    return [a.removesuffix(":idmap") if a.startswith("--bind") else a for a in argv]


def fresh_disk(ws: Workspace) -> None:
    """A workspace boots a new qcow2 overlay every time, first-boot work (growing the root
    filesystem to the disk size) included; so does each raw run, on the same base disk."""
    from wsfixture.backends.qemu import QemuBackend

    assert isinstance(ws.backend, QemuBackend)
    ws.backend.create_overlay()


def raw_qemu_argv(ws: Workspace) -> list[str]:
    """The same kernel, initrd, disk, seed, TAP, accelerator and flags; without the virtiofs
    devices (their daemons exit with the VM), so the baseline does less than we do."""
    from wsfixture.backends.qemu import QemuBackend

    assert isinstance(ws.backend, QemuBackend)
    argv = ws.lab.exec_argv(ws.backend.argv(ws.backend.cold_boot()))
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if arg in ("-chardev", "-device") and ("fs-" in following or "vhost-user-fs" in following):
            skip = True
            continue
        out.append(arg)
    return out


# -- scenarios ------------------------------------------------------------------------------


def bench_container(state: Path, runs: int) -> list[Row]:
    config = make_config(state, bc={"type": "container", "ip": "192.168.83.10"})
    ours_ready, ours_stop = ours_start_stop(config, "bc", runs)
    raw_ready, raw_stop_ = raw_start_stop(config, "bc", runs, raw_nspawn_argv, 60)
    plain_ready, _ = raw_start_stop(config, "bc", runs, raw_nspawn_argv_without_userns, 60)
    return [
        Row(
            "container start -> ready",
            median(ours_ready),
            median(raw_ready),
            "raw nspawn -> sshd banner",
            target="<= 1.10x",
            met=median(ours_ready) <= 1.10 * median(raw_ready),
        ),
        Row(
            "container stop -> gone",
            median(ours_stop),
            median(raw_stop_),
            "raw nspawn SIGTERM -> exit",
        ),
        Row(
            "raw nspawn with user namespace -> banner",
            median(raw_ready),
            median(plain_ready),
            "raw nspawn without one",
        ),
    ]


VM = {"type": "vm", "vcpu": 1, "memory": 768}


def bench_vm(state: Path, runs: int) -> list[Row]:
    """Restore and cold boot against raw QEMU's cold boot of the same disk; the first VM of
    a shape (its template made first) against a cold boot; three restores at once."""
    config = make_config(
        state,
        bv={**VM, "ip": "192.168.83.11"},
        cold={**VM, "ip": "192.168.83.12", "snapshot": "off"},
        **{f"t{i}": {**VM, "ip": f"192.168.83.{30 + i}"} for i in range(3)},
    )
    with Lab(config.network) as lab:  # the template exists before anything is timed
        Workspace(config.workspaces["bv"], config, lab).start().stop()
    restored, restored_stop = ours_start_stop(config, "bv", runs)
    cold, _ = ours_start_stop(config, "cold", runs)
    raw_ready, raw_stop_ = raw_start_stop(config, "cold", runs, raw_qemu_argv, 300, fresh_disk)
    first = first_of_a_shape(state, runs)
    raw = median(raw_ready)
    return [
        Row(
            "vm start -> ready, restored (TCG here)",
            median(restored),
            raw,
            "raw qemu cold boot -> sshd banner",
            target="<= 0.2x, 3 s",
            met=median(restored) <= min(0.2 * raw, 3.0),
        ),
        Row(
            "vm start -> ready, cold boot (snapshot off)",
            median(cold),
            raw,
            "raw qemu cold boot -> sshd banner",
            target="<= 1.10x",
            met=median(cold) <= 1.10 * raw,
        ),
        first,
        restored_beside_running(config, runs, median(restored)),
        three_at_once(config, runs),
        Row(
            "vm stop -> gone",
            median(restored_stop),
            median(raw_stop_),
            "raw qemu powerdown -> exit",
        ),
    ]


def first_of_a_shape(state: Path, runs: int) -> Row:
    """A shape without a template: the first start makes it (boot + save), then restores."""
    from wsfixture.image import templates

    firsts, colds = [], []
    for run in range(runs):
        memory = 832 + 16 * run  # a shape of its own each run
        config = make_config(
            state,
            new={**VM, "ip": "192.168.83.13", "memory": memory},
            base={**VM, "ip": "192.168.83.14", "memory": memory, "snapshot": "off"},
        )
        for template in templates.cached_templates():
            if template.shape is not None and template.shape.memory == memory:
                templates.remove(template)
        firsts += ours_start_stop(config, "new", 1)[0]
        colds += ours_start_stop(config, "base", 1)[0]
    return Row(
        "vm start -> ready, first of a new shape (template made)",
        median(firsts),
        median(colds),
        "cold boot of the same shape",
        target="<= 1.3x",
        met=median(firsts) <= 1.3 * median(colds),
    )


def restored_beside_running(config: Config, runs: int, idle: float) -> Row:
    """A restore while two restored VMs idle in the same lab: what their guests' timers and
    services cost a third one's start on a TCG host."""
    ready = []
    with Lab(config.network) as lab:
        running = [Workspace(config.workspaces[name], config, lab).start() for name in ("t0", "t1")]
        try:
            time.sleep(5)  # past their own first seconds: idle, as a suite's other VMs are
            for _ in range(runs):
                ws = Workspace(config.workspaces["bv"], config, lab).start()
                assert ws.ready_seconds is not None
                ready.append(ws.ready_seconds)
                ws.stop()
        finally:
            for ws in running:
                ws.stop()
    return Row(
        "vm start -> ready, restored beside 2 running VMs",
        median(ready),
        idle,
        "the same restore, alone",
        target="<= 1.5x",
        met=median(ready) <= 1.5 * idle,
    )


def three_at_once(config: Config, runs: int) -> Row:
    names = [f"t{i}" for i in range(3)]
    walls = [start_together(config, names) for _ in range(runs)]
    return Row("3 VMs at once, restored -> all ready", median(walls))


def start_together(config: Config, names: list[str]) -> float:
    """Seconds until every named workspace is ready, started at once in a new lab."""
    with Lab(config.network) as lab:
        wss = [Workspace(config.workspaces[name], config, lab) for name in names]
        started = time.monotonic()
        try:
            for ws in wss:
                ws.launch()
            threads = [threading.Thread(target=ws.wait_ready) for ws in wss]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert all(ws.ready_seconds is not None for ws in wss), "not all became ready"
            return time.monotonic() - started
        finally:
            for ws in wss:
                ws.stop()


def bench_parallel(state: Path, runs: int) -> list[Row]:
    rows = []
    for count in (4, 8):
        config = make_config(
            state,
            **{f"p{i}": {"type": "container", "ip": f"192.168.83.{20 + i}"} for i in range(count)},
        )
        walls = [start_together(config, list(config.workspaces)) for _ in range(runs)]
        target = "< 4 s" if count == 8 else ""
        rows.append(
            Row(
                f"{count} containers at once -> all ready",
                median(walls),
                target=target,
                met=median(walls) < 4 if count == 8 else None,
            )
        )
    return rows


DOWNLOAD_MIB = 32
TIMED_GET = (
    "python3 -c 'import sys, time, urllib.request as u; b = time.perf_counter(); "
    "n = len(u.urlopen(sys.argv[1], timeout=60).read()); "
    "print(n, time.perf_counter() - b)' "
)


def timed_get(ws: Workspace, url: str) -> float:
    """Seconds a workspace takes to GET ``url`` (all of it), measured inside it."""
    size, seconds = ws.succeed(TIMED_GET + url, timeout=120).split()
    assert int(size) == DOWNLOAD_MIB * 2**20, size
    return float(seconds)


SMALL_GETS = (
    "python3 -c 'import statistics, sys, time, urllib.request as u\n"
    "def one():\n b = time.perf_counter(); u.urlopen(sys.argv[1], timeout=10).read()\n"
    " return time.perf_counter() - b\n"
    "one(); print(statistics.median(one() for _ in range(int(sys.argv[2]))))' "
)


def small_get_latency(ws: Workspace, url: str, count: int) -> float:
    """Median seconds of ``count`` small GETs of ``url``, each on a fresh connection,
    measured inside the workspace."""
    return float(ws.succeed(f"{SMALL_GETS} {url} {count}", timeout=120))


def http_get_from_host(address: tuple[str, int], path: str = "/") -> float:
    """One small GET from this process over a fresh connection to ``address``."""
    import urllib.request

    begin = time.perf_counter()
    urllib.request.urlopen(f"http://{address[0]}:{address[1]}{path}", timeout=10).read()
    return time.perf_counter() - begin


def http_get_in_lab(lab: Lab, ip: str, port: int, path: str = "/") -> float:
    """The same GET, made from this process on a socket inside the lab (no relay)."""
    import http.client

    begin = time.perf_counter()
    connection = http.client.HTTPConnection(ip, port, timeout=10)
    connection.sock = lab.connect(ip, port, 10)
    connection.request("GET", path)
    connection.getresponse().read()
    connection.close()
    return time.perf_counter() - begin


def bench_network(state: Path, runs: int) -> list[Row]:
    """The uplink against the lab itself, ws.forward against a request made in the lab, and
    a lab with internet against one without. The world is a namespace of this machine."""
    sys.path.insert(0, str(HERE.parent))
    from tests.integration.world import WORLD_HTTP
    from tests.integration.world import world as make_world

    with make_world(state / "www") as world:
        blob = f"blob-{DOWNLOAD_MIB}m"
        (state / "www" / blob).write_bytes(os.urandom(DOWNLOAD_MIB * 2**20))
        config = config_from_dict({
            "network": {"internet": True, "uplinkNamespace": world.netns},
            "defaults": {"stateRoot": str(state)},
            "workspaces": {
                "nc": {"type": "container", "ip": "192.168.83.13"},
                "ns": {"type": "container", "ip": "192.168.83.14"},
            },
        })  # fmt: skip
        on, off = [], []
        for _ in range(max(runs, 10)):
            for internet, samples in ((True, on), (False, off)):
                begin = time.perf_counter()
                lab = Lab(config.network, internet=internet).open()
                samples.append(time.perf_counter() - begin)  # creation only: close untimed
                lab.close()
        with (
            Lab(config.network, internet=True) as lab,
            Workspace(config.workspaces["nc"], config, lab) as client,
            Workspace(config.workspaces["ns"], config, lab) as server,
        ):
            server.succeed(f"head -c {DOWNLOAD_MIB * 2**20} /dev/urandom > /tmp/{blob}")
            server.succeed(
                "python3 -m http.server --directory /tmp 8000 </dev/null >/dev/null 2>&1 &"
            )
            server.wait_for_port(8000)
            uplink = [timed_get(client, f"http://{WORLD_HTTP}/{blob}") for _ in range(runs)]
            in_lab = [timed_get(client, f"http://{server.ip}:8000/{blob}") for _ in range(runs)]
            (state / "www" / "small").write_text("small\n")
            server.succeed("echo small > /tmp/small")
            uplink_rtt = [
                small_get_latency(client, f"http://{WORLD_HTTP}/small", 20) for _ in range(runs)
            ]
            lab_rtt = [
                small_get_latency(client, f"http://{server.ip}:8000/small", 20) for _ in range(runs)
            ]
            address = server.forward(8000)
            forwarded = [http_get_from_host(address, "/small") for _ in range(50 * runs)]
            direct = [http_get_in_lab(lab, server.ip, 8000, "/small") for _ in range(50 * runs)]
    mib = float(DOWNLOAD_MIB)
    return [
        Row(
            f"HTTP GET {DOWNLOAD_MIB} MiB via the uplink (MiB/s)",
            mib / median(uplink), mib / median(in_lab), "the same from a workspace in the lab",
            unit="MiB/s",
        ),
        Row(
            "small HTTP GET via the uplink", median(uplink_rtt) * 1000, median(lab_rtt) * 1000,
            "the same from a workspace in the lab", unit="ms",
        ),
        Row(
            "HTTP GET via ws.forward (127.0.0.1)", median(forwarded) * 1000,
            median(direct) * 1000, "the same request made in the lab", unit="ms",
        ),
        Row(
            "lab creation with internet", median(on), median(off), "lab creation without",
            target="<= +50 ms", met=median(on) - median(off) <= 0.050,
        ),
    ]  # fmt: skip


def bench_latency(state: Path, runs: int) -> list[Row]:
    config = make_config(state, lat={"type": "container", "ip": "192.168.83.12"})
    calls = 100 * runs
    with Lab(config.network) as lab, Workspace(config.workspaces["lat"], config, lab) as ws:
        assert ws.session is not None
        session = ws.session

        def timed(action: Callable[[], object]) -> float:
            action()  # warm
            samples = []
            for _ in range(calls):
                begin = time.perf_counter()
                action()
                samples.append(time.perf_counter() - begin)
            return median(samples) * 1000

        raw = timed(lambda: session.run("true"))
        host = timed(lambda: ws.host.run("true"))
        conn = timed(lambda: ws.conn.run("true", hide=True))
    return [
        Row(
            "command via ws.host.run (testinfra)",
            host,
            raw,
            "raw paramiko exec",
            "ms",
            "< 15 ms",
            host < 15,
        ),
        Row(
            "command via ws.conn.run (fabric)",
            conn,
            raw,
            "raw paramiko exec",
            "ms",
            "< 15 ms",
            conn < 15,
        ),
    ]


def bench_cold_warm(state: Path, runs: int) -> list[Row]:
    cache = Path(
        tempfile.mkdtemp(prefix="wsf-bench-cache-", dir=settings.current().cache_dir.parent)
    )
    config = make_config(state, cw={"type": "container", "ip": "192.168.83.13"})
    spec = config.workspaces["cw"]
    try:
        began = time.monotonic()
        ensure_image(
            ImageRecipe.for_packages(config.packages_for(spec)), cache, progress=lambda _: None
        )
        build = time.monotonic() - began
        # A package set not seen before: apt installs it as a layer over that base.
        began = time.monotonic()
        ensure_image(ImageRecipe.for_packages(["curl"]), cache, progress=lambda _: None)
        layer = time.monotonic() - began
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    began = time.monotonic()
    ensure_image(ImageRecipe.for_packages(config.packages_for(spec)))
    hit = time.monotonic() - began
    ready, _ = ours_start_stop(config, "cw", runs)
    return [
        Row(
            "cold start (image build + boot)",
            build + median(ready),
            median(ready),
            "warm start (cached image)",
        ),
        Row("image build, new package set (apt layer)", layer, build, "base image build"),
        Row("image cache hit", hit * 1000, unit="ms"),
    ]


# A setup as a role's converge would do it: a system user, a directory, a config file, a
# link. Lines run by `sh -e` in the layer, after the packages.
BENCH_SETUP = (
    "useradd --system --home-dir /srv/app --create-home app",
    "install -d -o app -g app /srv/app/data",
    "printf 'listen = 8080\\ndata = /srv/app/data\\n' > /etc/app.conf",
    "ln -s /etc/app.conf /srv/app/app.conf",
)


def bench_releases(state: Path, runs: int) -> list[Row]:
    """Debian 13 (the default) against Debian 12: base image builds of both flavours, boot
    of both kinds (a VM restored, and cold); and a layer with a setup against the same
    packages without one."""
    quiet: Callable[[str], None] = lambda _: None  # noqa: E731
    cache = Path(
        tempfile.mkdtemp(prefix="wsf-bench-cache-", dir=settings.current().cache_dir.parent)
    )
    builds: dict[tuple[str, str], list[float]] = {}
    layers: dict[str, list[float]] = {"plain": [], "setup": []}
    try:
        for _ in range(runs):
            for release in RELEASES:
                for flavour in ("container", "vm"):
                    recipe = ImageRecipe.base_of(flavour, release)
                    shutil.rmtree(cache / "images" / recipe.key, ignore_errors=True)
                    began = time.monotonic()
                    ensure_image(recipe, cache, progress=quiet)
                    builds.setdefault((release, flavour), []).append(time.monotonic() - began)
            for kind, setup in (("plain", ()), ("setup", BENCH_SETUP)):
                recipe = ImageRecipe.for_packages(["curl"], setup=setup)
                shutil.rmtree(cache / "images" / recipe.key, ignore_errors=True)
                began = time.monotonic()
                ensure_image(recipe, cache, progress=quiet)
                layers[kind].append(time.monotonic() - began)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    new, old = RELEASES
    rows = [
        Row(f"base image build, {flavour}: {new}", median(builds[new, flavour]),
            median(builds[old, flavour]), f"the same, {old}")
        for flavour in ("container", "vm")
    ]  # fmt: skip
    rows.append(
        Row("layer build: curl + 4 setup lines", median(layers["setup"]),
            median(layers["plain"]), "the same layer, curl only")
    )  # fmt: skip
    boots = {
        f"{release}-{kind}": {**spec, "release": release, "ip": f"192.168.83.{50 + i}"}
        for i, (release, (kind, spec)) in enumerate(
            (r, k) for r in RELEASES for k in (
                ("ct", {"type": "container"}), ("vm", VM), ("cold", {**VM, "snapshot": "off"}),
            )
        )
    }  # fmt: skip
    config = make_config(state, **boots)
    with Lab(config.network) as lab:  # each release's template exists before timing
        for release in RELEASES:
            Workspace(config.workspaces[f"{release}-vm"], config, lab).start().stop()
    for kind, label in (("ct", "container"), ("vm", "VM, restored"), ("cold", "VM, cold")):
        ready = {r: median(ours_start_stop(config, f"{r}-{kind}", runs)[0]) for r in RELEASES}
        rows.append(
            Row(f"start -> ready, {label}: {new}", ready[new], ready[old], f"the same, {old}")
        )
    return rows


def run_suite(args: list[str], cwd: Path, env: dict[str, str], pytest: str) -> tuple[float, str]:
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
    if proc.returncode != 0 or "8 passed" not in proc.stdout:
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


def bench_sessions(state: Path, runs: int) -> tuple[list[Row], dict[str, float]]:
    rows = []
    walls: dict[str, float] = {}
    pytest = user_pytest()
    for label, extra in (("serial", []), ("-n 2", ["-n", "2"]), ("-n 4", ["-n", "4"])):
        samples, overheads = [], []
        for _ in range(runs):
            out = Path(tempfile.mkdtemp()) / "durations"
            env = dict(os.environ, WSF_BENCH_OUT=str(out))
            wall, _ = run_suite([*extra, "test_eight.py"], HERE / "suite", env, pytest)
            samples.append(wall)
            for path in glob.glob(f"{out}.*"):
                for line in Path(path).read_text().splitlines():
                    row = json.loads(line)
                    if row.get("ready") is not None:
                        # The workspace stops in the background after its test, so the
                        # test pays setup + teardown; its own share of that is the boot.
                        fixture = row.get("setup", 0) + row.get("teardown", 0)
                        overheads.append(fixture - row["ready"])
            shutil.rmtree(out.parent, ignore_errors=True)
        walls[label] = median(samples)
        rows.append(Row(f"pytest, 8 workspace tests, {label}", median(samples)))
        if overheads:
            rows.append(
                Row(f"  fixture overhead per test, {label}", median(overheads) * 1000, unit="ms")
            )
    for label, extra in (("serial", []), ("-n 2", ["-n", "2"])):
        restored = [vm_suite(extra, "auto", pytest) for _ in range(runs)]
        cold = [vm_suite(extra, "off", pytest) for _ in range(runs)]
        rows.append(
            Row(
                f"pytest, 8 VM workspace tests, {label}",
                median(restored),
                median(cold),
                "the same, cold boots",
                target="<= 0.35x",
                met=median(restored) <= 0.35 * median(cold),
            )
        )
    return rows, walls


def vm_suite(extra: list[str], snapshot: str, pytest: str) -> float:
    env = dict(os.environ, WSF_SNAPSHOT=snapshot)
    wall, _ = run_suite([*extra, "test_eight_vm.py"], HERE / "suite", env, pytest)
    return wall


# -- the peer -------------------------------------------------------------------------------


def peer_ready() -> bool:
    return shutil.which("podman") is not None and (PEER_VENV / "bin" / "pytest").exists()


def setup_peer(state: Path) -> None:
    """podman + runc from Debian, testcontainers in a venv of its own, our base image imported."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        say("peer: installing podman and runc (apt)")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "podman", "runc"],
            check=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
            stdout=subprocess.DEVNULL,
        )
    if not (PEER_VENV / "bin" / "pytest").exists():
        say("peer: creating its venv (testcontainers, pytest-testinfra, pytest-xdist)")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [
                str(PEER_VENV / "bin" / "pip"),
                "install",
                "-q",
                "pytest",
                "pytest-testinfra",
                "pytest-xdist",
                "testcontainers",
            ],
            check=True,
        )
    env = dict(os.environ, CONTAINERS_CONF=str(HERE / "peer" / "containers.conf"))
    have = subprocess.run(["podman", "image", "exists", "localhost/wsbase"], env=env, check=False)
    if have.returncode != 0:
        say("peer: importing our container base image into podman")
        image = ensure_image(ImageRecipe.for_packages(()))
        tar = subprocess.Popen(["tar", "-C", str(image.root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "-", "localhost/wsbase:latest"],
            stdin=tar.stdout,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar.wait()


def bench_peer(state: Path, runs: int, ours: dict[str, float]) -> list[Row]:
    setup_peer(state)
    conf = str(HERE / "peer" / "containers.conf")
    sock_dir = Path(tempfile.mkdtemp(prefix="wsf-peer-"))
    sock = sock_dir / "podman.sock"
    env = dict(
        os.environ,
        CONTAINERS_CONF=conf,
        DOCKER_HOST=f"unix://{sock}",
        TESTCONTAINERS_RYUK_DISABLED="true",
    )
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        pytest = str(PEER_VENV / "bin" / "pytest")
        for label, extra in (("serial", []), ("-n 2", ["-n", "2"])):
            samples = [
                run_suite([*extra, "test_peer.py"], HERE / "peer", env, pytest)[0]
                for _ in range(runs)
            ]
            peer = median(samples)
            mine = ours.get(label)
            rows.append(
                Row(
                    f"8 tests {label}: wsfixture vs testcontainers+podman",
                    mine,
                    peer,
                    "peer (bare container, podman exec)",
                    target="<= 0.7x",
                    met=None if mine is None else mine <= 0.7 * peer,
                )
            )
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)
    return rows


# -- runner ---------------------------------------------------------------------------------

SCENARIOS = (
    "container", "vm", "parallel", "latency", "network", "coldwarm", "releases", "sessions",
    "peer",
)  # fmt: skip


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MiB/s":
        return f"{value:.0f}MiB/s"
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(SCENARIOS), help=",".join(SCENARIOS))
    args = parser.parse_args()
    runs = max(1, min(args.runs, 50))
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    state = Path(tempfile.mkdtemp(prefix="wsf-bench-state-"))
    began = time.monotonic()
    rows: list[Row] = []
    session_walls: dict[str, float] = {}
    try:
        for scenario in chosen:
            if time.monotonic() - began > DEADLINE:
                say(f"bench: time limit reached; skipping {scenario}")
                continue
            say(f"bench: {scenario} ({runs} run(s)) ...")
            if scenario == "sessions":
                more, session_walls = bench_sessions(state, runs)
            elif scenario == "peer":
                more = bench_peer(state, runs, session_walls)
            else:
                more = globals()[f"bench_{scenario.replace('coldwarm', 'cold_warm')}"](state, runs)
            rows += more
    finally:
        shutil.rmtree(state, ignore_errors=True)
    table = render(rows)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    data = {
        "runs": runs,
        "seconds": time.monotonic() - began,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": [{**r.__dict__, "ratio": r.ratio} for r in rows],
    }
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=1))
    print(
        f"\n{len(rows)} figures in {data['seconds']:.0f}s (medians of {runs}); "
        f"written to {RESULTS / 'latest.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
