"""VM restore's pure parts: when a VM may restore, what a template and its clones declare,
the template's key and its checks, and the identity message."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import socket
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from wsfixture.backends.base import BackendContext
from wsfixture.backends.qemu import QemuBackend
from wsfixture.backends.qemu.argv import TEMPLATE_MAC, Boot, accel_argv
from wsfixture.backends.qemu.clone import agent_answer
from wsfixture.guest import restore, seed
from wsfixture.host import ledger, system
from wsfixture.host.virt import Accel
from wsfixture.image import store, templates
from wsfixture.image.recipe import Image, ImageRecipe
from wsfixture.image.templates import (
    SPARE_ROOT_PORTS,
    Template,
    TemplateShape,
    restore_blocker,
    spec_restore_blocker,
)
from wsfixture.model.config import Config, workspace_spec
from wsfixture.net.lab import Lab


def test_what_keeps_a_vm_from_restoring() -> None:
    assert restore_blocker("auto", "q35", False, 3) is None
    assert restore_blocker("off", "q35", False, 3) == "snapshot = 'off'"
    assert "hot-plug" in str(restore_blocker("auto", "microvm", False, 3))
    assert "vsock" in str(restore_blocker("auto", "q35", True, 3))
    assert "at most" in str(restore_blocker("auto", "q35", False, SPARE_ROOT_PORTS + 1))


def test_a_spec_s_blocker_counts_the_standard_shares_and_the_host_s_vsock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wsfixture.model.config import config_from_dict

    extra = SPARE_ROOT_PORTS - 3  # the three standard shares fill the rest
    shares = [{"source": "/srv", "target": f"/mnt/{i}", "readOnly": True} for i in range(extra)]
    config = config_from_dict(
        {
            "workspaces": {
                "fits": {"type": "vm", "ip": "192.168.83.10", "shares": shares},
                "over": {
                    "type": "vm",
                    "ip": "192.168.83.11",
                    "shares": [*shares, {**shares[0], "target": "/mnt/x"}],
                },
                "cold": {"type": "vm", "ip": "192.168.83.12", "snapshot": "off"},
            }
        }
    )
    monkeypatch.setattr("wsfixture.host.virt.vsock_available", lambda: False)
    assert spec_restore_blocker(config, config.workspaces["fits"]) is None
    assert "at most" in str(spec_restore_blocker(config, config.workspaces["over"]))
    assert spec_restore_blocker(config, config.workspaces["cold"]) == "snapshot = 'off'"
    monkeypatch.setattr("wsfixture.host.virt.vsock_available", lambda: True)
    assert "vsock" in str(spec_restore_blocker(config, config.workspaces["fits"]))


def backend(tmp_path: Path, accel: str) -> QemuBackend:
    config = Config()
    spec = workspace_spec(config, name="vm", type="vm", ip="192.168.83.20", vcpu=1, memory=768)
    record = ledger.Record("unit", ledger.BuildInfo("k", "s"), system.ProcessRef(1, 0))
    ctx = BackendContext(
        config=config, spec=spec, lab=Lab(config.network), runtime_dir=tmp_path,
        state_dir=tmp_path / "state", record=record, provision=lambda root, offset: None,
    )  # fmt: skip
    made = QemuBackend(ctx, Image(ImageRecipe.base_of("vm"), tmp_path / "image"))
    made.accel = Accel(accel, "unit test")
    return made


def test_tcg_emulates_several_vcpus_on_one_thread() -> None:
    # QEMU 7.2's multi-threaded TCG let a vCPU run code the kernel was patching on another.
    assert accel_argv("tcg", 1) == ["-accel", "tcg,tb-size=128"]
    assert accel_argv("tcg", 2) == ["-accel", "tcg,tb-size=128,thread=single"]
    assert accel_argv("kvm", 4) == ["-accel", "kvm", "-cpu", "host"]


def devices(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == "-device"]


@pytest.mark.parametrize("accel", ["kvm", "tcg"])
def test_a_template_and_its_clone_declare_the_same_machine(tmp_path: Path, accel: str) -> None:
    vm = backend(tmp_path, accel)
    clone = Boot(
        tmp_path / "vmlinuz", tmp_path / "initrd", "console=ttyS0", tmp_path / "root.qcow2",
        tmp_path / "seed.tar", TEMPLATE_MAC, "ws-tap", tmp_path, restorable=True, incoming=True,
        disk_fds=(7, 8),
    )  # fmt: skip
    template = dataclasses.replace(
        clone, incoming=False, tap="tap0", sockets=tmp_path / "t", disk_fds=(5, 6)
    )
    argv, template_argv = vm.argv(clone), vm.argv(template)
    assert devices(argv) == devices(template_argv)
    assert argv[argv.index("-accel") + 1] == ("kvm" if accel == "kvm" else "tcg,tb-size=128")
    if accel == "kvm":
        assert argv[argv.index("-cpu") + 1] == "host"
    assert argv[argv.index("-incoming") + 1] == "defer"
    assert "-incoming" not in template_argv
    assert argv[argv.index("-add-fd") : argv.index("-add-fd") + 4] == [
        "-add-fd",
        "fd=7,set=1",
        "-add-fd",
        "fd=8,set=1",
    ]
    assert argv[argv.index("-drive") + 1].startswith("file=/dev/fdset/1,")
    assert "vmgenid,guid=auto" in devices(argv)
    assert sum(d.startswith("pcie-root-port") for d in devices(argv)) == SPARE_ROOT_PORTS
    assert any(restore.PORT_NAME in d for d in devices(argv))
    assert not any(d.startswith("vhost-user-fs") for d in devices(argv)), "shares: hot-plugged"
    assert f"mac={TEMPLATE_MAC}" in " ".join(devices(argv))


def test_a_template_made_in_its_staging_directory_has_its_entrys_key(tmp_path: Path) -> None:
    """The template's guest boots with the machine-id of ``template.key`` and its clones
    link their journal to that id: the key is the entry's, also while it is staged."""
    entry = tmp_path / "templates" / "trixie-vm-0123456789abcdef-q35-1c768m-fedcba9876543210"
    assert templates.Template(store.staging_path(entry, 4242)).key == entry.name
    assert templates.Template(entry).key == entry.name


def test_a_cold_boot_has_its_shares_and_its_own_mac(tmp_path: Path) -> None:
    vm = backend(tmp_path, "tcg")
    boot = Boot(
        tmp_path / "k", tmp_path / "i", "c", tmp_path / "d", tmp_path / "s", "02:aa:bb:cc:dd:ee",
        "tap", tmp_path,
    )  # fmt: skip
    argv = vm.argv(boot)
    assert sum(d.startswith("vhost-user-fs-pci") for d in devices(argv)) == 3
    assert "vmgenid,guid=auto" not in devices(argv)
    assert "-incoming" not in argv
    assert argv[argv.index("-drive") + 1].startswith(f"file={tmp_path / 'd'},")


SHAPE = TemplateShape(
    "bookworm-vm-0", "q35", 1, 768, 8192, "tcg", "virtiofs", "QEMU 7.2.22", "console=ttyS0"
)


def test_every_part_of_the_shape_is_in_the_key() -> None:
    keys = {SHAPE.key}
    for field in dataclasses.fields(SHAPE):
        value = getattr(SHAPE, field.name)
        other = value + 1 if isinstance(value, int) else value + "x"
        keys.add(dataclasses.replace(SHAPE, **{field.name: other}).key)
    assert len(keys) == 1 + len(dataclasses.fields(SHAPE))


def made_template(tmp_path: Path) -> tuple[Template, Image]:
    image = Image(ImageRecipe.base_of("vm"), tmp_path / "image")
    image.dir.mkdir()
    (image.dir / "ready").write_text("1\n")
    template = Template(tmp_path / "templates" / SHAPE.key)
    template.dir.mkdir(parents=True)
    for path in (template.disk, template.kernel, template.initrd, template.frozen, template.seed):
        path.write_text("")
    template.state.write_bytes(templates.QEMU_STATE_MAGIC + b"\0" * 4092)
    with open(template.ram, "wb") as ram:  # sparse: the guest wrote two pages
        ram.truncate(SHAPE.memory * 2**20)
        ram.seek(5 * 4096)
        ram.write(b"guest" * 1000)
    meta = {
        "shape": dataclasses.asdict(SHAPE),
        "image_ready": "1\n",
        "state_size": 4096,
        "state_sha256": templates.file_digest(template.state),
        "ram_sha256": templates.ram_digest(template.ram),
    }
    template.meta_path.write_text(json.dumps(meta))
    return template, image


def test_a_whole_template_passes_its_checks(tmp_path: Path) -> None:
    template, image = made_template(tmp_path)
    assert template.problem(SHAPE, image) is None
    assert template.verify_state() is None


def test_a_truncated_state_is_found_before_qemu_reads_it(tmp_path: Path) -> None:
    template, image = made_template(tmp_path)
    with open(template.state, "r+b") as state:
        state.truncate(1000)
    assert "truncated" in str(template.problem(SHAPE, image))


def test_a_changed_state_is_found_by_its_digest(tmp_path: Path) -> None:
    template, image = made_template(tmp_path)
    with open(template.state, "r+b") as state:
        state.seek(2000)
        state.write(b"x")
    assert template.problem(SHAPE, image) is None  # same size, same start
    assert "digest" in str(template.verify_state())
    template.state.write_bytes(b"JUNK" + b"\0" * 4092)
    assert "migration stream" in str(template.problem(SHAPE, image))


def test_the_agent_is_a_shell_script_whose_escapes_survived(tmp_path: Path) -> None:
    """It is written inside a Python f-string: a lost backslash changes the script."""
    script = tmp_path / "agent"
    script.write_text(restore.AGENT_SCRIPT)
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert restore.AGENT_SCRIPT.count("printf '%s\\n'") == 2


def test_a_guest_that_asks_for_the_time_is_told_it_before_it_answers(tmp_path: Path) -> None:
    """The host's side of the agent's protocol, over a socket pair: the clock request is
    answered with the host's time then, and the answer after it is what the host gets."""
    host, guest = socket.socketpair()
    heard: list[bytes] = []

    def agent() -> None:
        heard.append(guest.recv(64))  # the host's request
        guest.sendall(f"{restore.CLOCK_REQUEST}\n".encode())
        heard.append(guest.recv(64))
        guest.sendall(b"ok\n")

    with host, guest, subprocess.Popen(["sleep", "30"]) as alive:
        try:
            thread = threading.Thread(target=agent)
            thread.start()
            host.sendall(b"resume\n")
            asked = time.time()
            assert agent_answer(host, 5.0, alive, tmp_path / "console.log") == "ok"
            thread.join()
        finally:
            alive.kill()
    verb, told = heard[1].decode().split()
    assert (heard[0], verb) == (b"resume\n", "time")
    assert asked <= float(told) <= time.time()


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def test_the_clock_is_the_host_s_time_plus_the_uptime_since_halfway_through_asking() -> None:
    """The shell the agent runs for a clone and a resume: told the host's time 1000.0, asked
    at uptime 50.0 and answered at 50.2, it gives 1000.0 plus the uptime passed since 50.1;
    and to the microsecond, with fractions of any length (zeros leading them kept)."""

    def clock_now(told: str) -> str:
        script = f"{restore.CLOCK_NOW_SH}\nclock_now '{told}'\necho \"$now\""
        return subprocess.run(
            ["sh", "-c", script], check=True, capture_output=True, text=True
        ).stdout.strip()

    before = uptime()
    said = clock_now("1000.0 50.0 50.2")
    after = uptime()
    assert 1000.0 + before - 50.1 - 1e-6 <= float(said) <= 1000.0 + after - 50.1 + 0.01, said
    assert re.fullmatch(r"\d+\.\d{6}", said), f"not what `date -s @...` takes: {said!r}"
    # The uptime part cancels out when asked and answered are now: what is left is exact.
    now = f"{uptime():.2f}"
    for told, host in (("1765040000.000123", 1765040000_000123), ("7", 7_000000),
                       ("12.5", 12_500000), ("3.0000009", 3_000000)):  # fmt: skip
        got = clock_now(f"{told} {now} {now}")
        micros = int(got.replace(".", ""))
        assert 0 <= micros - host <= 50_000, (told, got)  # the uptime read a moment later


def test_changed_or_cut_memory_is_found(tmp_path: Path) -> None:
    template, image = made_template(tmp_path)
    with open(template.ram, "r+b") as ram:
        ram.seek(300 * 2**20)  # a hole until now
        ram.write(b"x")
    assert template.problem(SHAPE, image) is None
    assert "ram digest" in str(template.verify_state())
    with open(template.ram, "r+b") as ram:
        ram.truncate(2**20)
    assert "not the shape's 768 MiB" in str(template.problem(SHAPE, image))


def test_the_memory_digest_is_the_same_for_zeros_stored_or_left_as_holes(
    tmp_path: Path,
) -> None:
    """A copy (an import, ``cp``) may store zeros where the template's file had holes."""
    template, _ = made_template(tmp_path)
    dense = tmp_path / "dense"
    with open(template.ram, "rb") as ram, open(dense, "wb") as out:
        out.write(ram.read(2**20))  # its first MiB whole, zeros and all
        out.truncate(SHAPE.memory * 2**20)
    assert templates.ram_digest(dense) == templates.ram_digest(template.ram)
    with open(dense, "r+b") as ram:
        ram.seek(7 * 4096)
        ram.write(b"\1")
    assert templates.ram_digest(dense) != templates.ram_digest(template.ram)


def test_a_clone_s_memory_copy_has_the_template_s_content_and_holes(tmp_path: Path) -> None:
    template, _ = made_template(tmp_path)
    copy = tmp_path / "copy"
    with open(copy, "w+b") as target:
        target.truncate(SHAPE.memory * 2**20)
        with open(template.ram, "rb") as source:
            templates.copy_ram(source.fileno(), target.fileno())
    assert templates.ram_digest(copy) == templates.ram_digest(template.ram)
    with open(copy, "rb") as copied:
        assert copied.read(7 * 4096)[5 * 4096 :].startswith(b"guest" * 800)
    assert copy.stat().st_blocks * 512 < 2**20  # only what the guest wrote was copied


def test_a_template_from_another_qemu_or_image_build_is_not_restored(tmp_path: Path) -> None:
    template, image = made_template(tmp_path)
    newer = dataclasses.replace(SHAPE, qemu="QEMU 8.2.0")
    assert "another shape or QEMU" in str(template.problem(newer, image))
    (image.dir / "ready").write_text("2\n")
    assert "rebuilt" in str(template.problem(SHAPE, image))
    template.meta_path.unlink()
    assert "missing" in str(template.problem(SHAPE, image))


def test_the_identity_message_is_a_header_and_a_short_tar(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    (staging / "etc").mkdir(parents=True)
    (staging / "etc/hostname").write_text("ws\n")
    seed_tar = tmp_path / "seed.tar"
    seed.pack(staging, "workspace /home/dev/workspace virtiofs rw,relatime\n", seed_tar)
    data = seed_tar.read_bytes()
    message = restore.message("02:00:00:00:00:01", "10.0.0.2/24", "10.0.0.1", data, ("a", "b"))
    at = message.rindex(restore.HEADER_MAGIC.encode())
    tar, header = message[:at], message[at:]
    assert header.endswith(b"\n")
    magic, size, mac, address, gateway, entropy = header.decode().split()
    assert (magic, int(size), mac) == (restore.HEADER_MAGIC, len(tar), "02:00:00:00:00:01")
    assert restore.time_line(5.0) == b"time 5.000000\n", "the answer to its clock request"
    assert (address, gateway, len(entropy)) == ("10.0.0.2/24", "10.0.0.1", 64)
    assert len(tar) % 512 == 0
    assert len(tar) < len(data)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        names = archive.getnames()
        assert archive.extractfile("./etc/hostname").read() == b"ws\n"  # type: ignore[union-attr]
        assert archive.getmember("./run/log/journal/a").linkname == "b"
    assert "./home/dev/workspace" in names  # the mount point comes made
    assert "." not in names
    assert "./etc" not in names


def test_the_agent_answers_ok_or_why_not() -> None:
    assert restore.parse_reply(b"ok\n") == (True, "ok")
    assert restore.parse_reply(b"error configuring eth0\n") == (False, "error configuring eth0")
