"""The kill matrix: a pytest session is killed with SIGKILL, SIGTERM or SIGINT while it builds
a layer, makes a VM template, boots, runs the test body, writes a checkpoint or tears down,
for both kinds. After
one `wsfixture gc` nothing of it is left: namespaces, mounts, cgroups in both hierarchies,
processes, directories (its temporary state dir too), ledger records, half-built images and
templates.

`make test` runs a short version (every cell for containers; for VMs the layer build and
the boot with every signal, the test body and the checkpoint with SIGTERM); `make soak`
(WSFIXTURE_SOAK=1) runs every cell three times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.leaks import leftovers
from tests.support.prereqs import require_root_and_tools
from wsfixture.host import ledger, settings, system
from wsfixture.image import cache, store
from wsfixture.image.obtain import ensure_image
from wsfixture.image.recipe import ImageRecipe

SOAK = os.environ.get("WSFIXTURE_SOAK") == "1"
KINDS = ("container", "vm")
PHASES = ("build", "template", "boot", "body", "checkpoint", "teardown")
TEMPLATE_MEMORY = 704  # a VM shape no other test has: its template is made in the cell
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
LAYER_PACKAGES = ["sl"]  # a layer no other test builds: its build is the "build" phase
TEARDOWN_PAUSE = 3.0  # seconds the patched stop waits, so a signal lands inside teardown

INNER_CONFTEST = textwrap.dedent(
    f"""
    import os, pathlib, time

    from wsfixture.backends.nspawn import NspawnBackend
    from wsfixture.backends.qemu import QemuBackend

    KM = pathlib.Path(os.environ["KM_DIR"])

    def paused(original, phase):
        # Inside the phase (the checkpoint's staging dir made and in the ledger), a
        # pause for the signal to land in.
        def method(self, *args):
            (KM / phase).write_text("")
            time.sleep({TEARDOWN_PAUSE})
            return original(self, *args)
        return method

    for backend in (NspawnBackend, QemuBackend):
        if os.environ["KM_PHASE"] == "teardown":
            backend.stop = paused(backend.stop, "teardown")
        if os.environ["KM_PHASE"] == "checkpoint":
            backend.checkpoint = paused(backend.checkpoint, "checkpoint")
    """
)
INNER_TEST = textwrap.dedent(
    f"""
    import os, pathlib, time
    import pytest

    KM = pathlib.Path(os.environ["KM_DIR"])
    PACKAGES = {LAYER_PACKAGES!r} if os.environ["KM_PHASE"] == "build" else []

    MEMORY = {TEMPLATE_MEMORY} if os.environ["KM_PHASE"] == "template" else 768

    @pytest.mark.workspace(type=os.environ["KM_KIND"], packages=PACKAGES, vcpu=1, memory=MEMORY)
    def test_cell(workspace):
        (KM / "body").write_text("")
        if os.environ["KM_PHASE"] == "body":
            time.sleep(600)
        if os.environ["KM_PHASE"] == "checkpoint":
            workspace.checkpoint("km")
    """
)


def cells() -> list[tuple[str, str, signal.Signals]]:
    chosen = []
    for kind in KINDS:
        for phase in PHASES:
            if phase == "template" and kind == "container":
                continue  # containers have none
            for signum in SIGNALS:
                full = SOAK or kind == "container" or phase in ("build", "template", "boot")
                if full or (phase in ("body", "checkpoint") and signum == signal.SIGTERM):
                    chosen.append((kind, phase, signum))
    # A closed terminal (SIGHUP) is handled like SIGTERM; one cell shows it.
    chosen.append(("container", "body", signal.SIGHUP))
    return chosen * (3 if SOAK else 1)


def reached(phase: str, kind: str, pid: int, km: Path) -> bool:
    if phase == "build":
        key = ImageRecipe.for_packages(LAYER_PACKAGES, kind).key
        return any(settings.current().images_dir.glob(f"{key}.building-*"))
    if phase == "template":
        return any(store.templates_dir().glob(f"*.building-{pid}"))
    if phase == "boot":
        owned = [r for r in ledger.workspaces().values() if r.owner.pid == pid]
        return bool(owned) and not (km / "body").exists()
    return (km / phase).exists()


def owned_by(pid: int) -> list[ledger.Record]:
    return [r for r in ledger.records() if r.owner.pid == pid]


def our_cgroups(names: set[str], pid: int) -> list[str]:
    where = settings.current()
    found = []
    for root in (where.cgroup_root, where.cgroup_v1_root):
        if root.is_dir():
            found += [
                str(d)
                for d in root.iterdir()
                if d.is_dir()
                and (
                    d.name.startswith((f"image-build-{pid}-", f"template-{pid}-"))
                    or any(n in d.name for n in names)
                )
            ]
    return found


def unbuilt(kind: str) -> None:
    """The cell's layer must be built inside the cell: remove one a late signal finished."""
    key = ImageRecipe.for_packages(LAYER_PACKAGES, kind).key
    done = settings.current().images_dir / key
    if done.exists():
        system.remove_tree(done)


def unmade() -> None:
    """The cell's template must be made inside the cell: remove one a late signal finished."""
    for template in cache.cached_templates():
        if template.shape is not None and template.shape.memory == TEMPLATE_MEMORY:
            cache.remove_keys([template.key])


@pytest.mark.parametrize(
    ("kind", "phase", "signum"),
    cells(),
    ids=[f"{k}-{p}-{s.name}" for k, p, s in cells()],
)
def test_killed_session_leaves_nothing_after_gc(
    kind: str, phase: str, signum: signal.Signals, tmp_path: Path
) -> None:
    require_root_and_tools("systemd-nspawn", "qemu-system-x86_64", "dnsmasq")
    if phase == "build":
        unbuilt(kind)
    if phase == "template":
        unmade()
    km = tmp_path / "km"
    km.mkdir()
    (tmp_path / "conftest.py").write_text(INNER_CONFTEST)
    (tmp_path / "test_cell.py").write_text(INNER_TEST)
    states_before = set(Path("/tmp").glob("wsstate-*"))
    env = {**os.environ, "KM_DIR": str(km), "KM_KIND": kind, "KM_PHASE": phase}
    env.pop("PYTEST_XDIST_WORKER", None)
    log = tmp_path / "inner.log"
    with open(log, "wb") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_cell.py"],
            cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # our signal goes to this process alone
        )  # fmt: skip
    labs: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        while not reached(phase, kind, proc.pid, km):
            assert proc.poll() is None, f"the session ended before {phase}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{phase} never came:\n{log.read_text()}"
            labs |= {r.lab for r in owned_by(proc.pid) if r.lab}
            time.sleep(0.02)
        labs |= {r.lab for r in owned_by(proc.pid) if r.lab}
        proc.send_signal(signum)  # our own child, by PID
        # A handled signal tears down; a teardown already under way finishes its pause.
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    gc = subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", "gc"], capture_output=True, text=True, check=False
    )
    assert gc.returncode == 0, gc.stderr
    assert labs, "the session never had a lab"
    for lab in labs:
        assert leftovers(lab) == {}, lab
    assert owned_by(proc.pid) == []
    assert our_cgroups(labs, proc.pid) == []
    assert not any(settings.current().images_dir.glob("*.building-*"))
    assert not any(store.templates_dir().glob("*.building-*"))
    assert not [m for m in system.mount_points() if ".building-" in str(m)]
    half_written = list(settings.current().labs_dir.glob("*/*/checkpoints/.making-*"))
    assert half_written == [], "a checkpoint being written when the signal came"
    assert set(Path("/tmp").glob("wsstate-*")) == states_before, "the state dir (keys) stays"
    if signum != signal.SIGKILL:
        # A handled signal: the session itself tore down; gc found nothing of it to reap.
        # (a str message: pytest shows it whole, where a tuple's repr was cut)
        assert "reaped 0 record(s)" in gc.stdout, f"{gc.stdout}\n--- inner ---\n{log.read_text()}"
    if phase == "build" and signum == signal.SIGKILL:
        # What a killed build left is gone for good: the next session builds the layer.
        recipe = ImageRecipe.for_packages(LAYER_PACKAGES, kind)
        assert ensure_image(recipe, progress=lambda line: None).ready
        unbuilt(kind)
