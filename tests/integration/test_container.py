"""Container workspaces for real: systemd-nspawn in a lab namespace, checked over pinned SSH."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.support.configs import booted, make_config
from tests.support.leaks import leftovers
from wsfixture import checks
from wsfixture.errors import CommandError, CommandTimeout, ConfigError, WaitTimeout
from wsfixture.host import keys, ledger, settings
from wsfixture.model.config import Config, load_config, workspace_spec
from wsfixture.net.lab import Lab
from wsfixture.remote import SshSession
from wsfixture.workspaces import Workspace

EXAMPLE = Path(__file__).parents[2] / "examples" / "workspaces.toml"


@pytest.fixture(scope="module")
def alpha(config: Config, lab: Lab) -> Iterator[Workspace]:
    with Workspace(config.workspaces["alpha"], config, lab) as ws:
        yield ws


@pytest.fixture(scope="module")
def beta(config: Config, lab: Lab) -> Iterator[Workspace]:
    with Workspace(config.workspaces["beta"], config, lab) as ws:
        yield ws


def test_services_network_user_doas(alpha: Workspace) -> None:
    host = alpha.host
    assert host.service("ssh").is_running
    assert host.service("systemd-networkd").is_running
    assert host.service("systemd-resolved").is_running
    assert host.interface("eth0").addresses[0] == "192.168.83.10"  # as in a VM, as in Docker
    assert "default via 192.168.83.1" in host.check_output("ip route")
    user = host.user("dev")
    assert user.exists
    assert (user.uid, user.home) == (1000, "/home/dev")
    assert host.run("doas -n true").rc == 0
    with host.sudo():
        assert host.check_output("id -u") == "0"
    assert alpha.conn.run("hostname", hide=True).stdout.strip() == "alpha"


def test_every_builtin_check_passes(alpha: Workspace, beta: Workspace) -> None:
    failed = [o for ws in (alpha, beta) for o in checks.verify(ws) if not o.ok]
    assert failed == []


def test_peers_ping_by_name(alpha: Workspace, beta: Workspace) -> None:
    assert alpha.host.check_output("getent hosts beta").split()[0] == "192.168.83.11"
    assert alpha.host.check_output("getent hosts workspace-beta").split()[0] == "192.168.83.11"
    alpha.succeed("ping -c 1 -W 2 beta")
    beta.succeed("ping -c 1 -W 2 workspace-alpha")


def test_shares_are_mounted_and_owned(alpha: Workspace) -> None:
    alpha.succeed("echo hello > ~/workspace/from-guest.txt")
    made = alpha.state_dir / "workspace" / "from-guest.txt"
    assert made.read_text() == "hello\n"
    assert made.stat().st_uid == 1000
    keys = alpha.host.file("/etc/ssh/host-keys/ssh_host_ed25519_key.pub")
    assert not keys.exists, "the host key share is root's alone"
    with alpha.host.sudo():
        assert keys.exists


def test_command_errors_carry_everything(alpha: Workspace) -> None:
    from wsfixture import CommandError

    with pytest.raises(CommandError) as info:
        alpha.succeed("echo out; echo err >&2; exit 3")
    assert (info.value.rc, info.value.stdout, info.value.stderr) == (3, "out\n", "err\n")


def test_large_output_on_both_streams(alpha: Workspace) -> None:
    # More than the SSH window (2 MiB) on stderr while stdout is also written.
    rc, out, err = alpha.run(
        "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o"
    )
    assert rc == 0
    assert (len(out), len(err)) == (3000000, 3000000)
    assert set(out) == {"o"}
    assert set(err) == {"e"}
    # fabric's runner (polling every 1 ms for the end) still gets every byte and the status.
    result = alpha.conn.run("seq 1 200000; sleep 0.3; echo done >&2; exit 3", hide=True, warn=True)
    assert (result.exited, result.stdout.count("\n"), result.stderr) == (3, 200000, "done\n")


def test_a_timed_out_command_is_killed_in_the_workspace(alpha: Workspace) -> None:
    # A child of the command, and one it started as root through doas: the group goes.
    command = "echo started; sleep 1001 & doas -n sleep 1002 & sleep 1003"
    with pytest.raises(CommandTimeout) as info:
        alpha.run(command, timeout=1.0)
    assert isinstance(info.value, TimeoutError)
    assert info.value.stdout == "started\n"
    assert "timed out after 1.0s" in str(info.value)
    assert any("was killed in the workspace" in note for note in info.value.__notes__)
    assert alpha.run("pgrep -x sleep")[0] == 1, "no sleep survives its command"
    assert alpha.succeed("echo still usable").strip() == "still usable"


def test_output_past_the_cap_kills_the_command(alpha: Workspace) -> None:
    with pytest.raises(CommandError, match=r"stdout passed the output cap of 1 MiB") as info:
        alpha.run("cat /dev/zero", timeout=30, max_output=2**20)
    assert 2**20 < len(info.value.stdout) < 2**20 + 2**18  # stopped right after the cap
    assert len(str(info.value)) < 10_000, "the message shows a tail, not a MiB"
    assert alpha.run("pgrep -x cat")[0] == 1
    with pytest.raises(CommandError, match="stderr passed the output cap of 1000 bytes"):
        alpha.run("yes >&2", max_output=1000)
    assert alpha._ssh is not None
    assert alpha._ssh.max_output == 64 * 2**20  # the default cap


def test_the_handle_default_timeout_applies_and_none_lifts_it(alpha: Workspace) -> None:
    alpha.command_timeout = 0.5
    try:
        with pytest.raises(CommandTimeout):
            alpha.succeed("sleep 3")
        assert alpha.run("sleep 1; echo late", timeout=None)[1] == "late\n"
        assert alpha.run("echo soon", timeout=5)[1] == "soon\n"
    finally:
        alpha.command_timeout = None


def test_the_pid_line_never_reaches_stderr(alpha: Workspace) -> None:
    assert alpha.run("echo a >&2; echo b")[1:] == ("b\n", "a\n")
    assert alpha.run("true") == (0, "", "")
    assert alpha.host.run("echo x >&2").stderr == "x\n"  # testinfra rides the same run


def test_wait_helpers(alpha: Workspace) -> None:
    alpha.wait_for_unit("systemd-resolved.service", timeout=10)
    alpha.wait_for_port(22, timeout=5)

    with pytest.raises(WaitTimeout, match="port 2222"):
        alpha.wait_for_port(2222, timeout=0.5)


def test_files_go_in_and_out_over_the_pinned_session(alpha: Workspace, tmp_path: Path) -> None:
    local = tmp_path / "in.txt"
    local.write_text("from the host\n")
    alpha.put(local, "/home/dev/in.txt")
    assert alpha.succeed("stat -c %U /home/dev/in.txt").strip() == "dev"
    alpha.succeed("echo more >> /home/dev/in.txt")
    alpha.get("/home/dev/in.txt", tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text() == "from the host\nmore\n"


def test_a_detached_process_keeps_running_and_can_be_waited_for(alpha: Workspace) -> None:
    began = time.monotonic()
    server = alpha.spawn("echo started; exec python3 -m http.server 8642")
    assert time.monotonic() - began < 10, "spawn returns at once"
    alpha.wait_for_port(8642, timeout=30)
    assert server.running
    assert "started" in server.output()
    server.kill()
    assert server.wait(timeout=30) == -1, "killed before it could write a status"
    assert not alpha.lab.port_open(alpha.ip, 8642), "the server is gone"
    done = alpha.spawn("echo out; echo err >&2; exit 7")
    assert done.wait(timeout=30) == 7
    assert done.output() == "out\nerr\n"


def test_wrong_pinned_key_is_refused(alpha: Workspace, lab: Lab, tmp_path: Path) -> None:
    other = keys.host_key(tmp_path, "impostor").public_key()
    assert alpha._ssh is not None
    session = SshSession(lab, "alpha", alpha.ip, "dev", alpha._ssh.client_key, other)
    with pytest.raises(paramiko.SSHException):
        session.run("true")
    session.close()


def test_host_key_survives_restart_and_nothing_leaks(config: Config, tmp_path: Path) -> None:
    spec = workspace_spec(config, name="gamma", type="container", ip="192.168.83.12")
    with Lab(config.network) as lab:
        ws = Workspace(spec, config, lab).start()
        assert ws._ssh is not None
        first = ws._ssh.client().get_transport().get_remote_server_key().get_base64()
        ws.stop()
        ws.start()
        assert ws._ssh is not None
        second = ws._ssh.client().get_transport().get_remote_server_key().get_base64()
        ws.stop()
        assert first == second
        assert not (lab.dir / "gamma").exists()
        name = lab.name
    assert leftovers(name) == {}
    assert (config.state_dir("gamma") / "ssh-host-keys").is_dir(), "state survives stop"


def test_stop_detaches_a_mount_inside_and_keeps_its_data(config: Config, tmp_path: Path) -> None:
    """A mount left inside a workspace's runtime directory (an operator's bind mount to look
    at files, say) is detached at stop; the removal never reaches through it into data."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    spec = workspace_spec(config, name="delta", type="container", ip="192.168.83.13")
    with Lab(config.network) as lab:
        ws = Workspace(spec, config, lab).start()
        peek = ws._runtime_dir / "peek"
        peek.mkdir()
        subprocess.run(["mount", "--bind", str(precious), str(peek)], check=True)
        ws.stop()
        name = lab.name
    assert (precious / "data.txt").read_text() == "keep me"
    assert leftovers(name) == {}


def test_example_config_boots(tmp_path: Path) -> None:
    config = load_config(EXAMPLE).with_state_root(tmp_path)
    with booted(config, "myproject") as [ws]:
        for package in ("git", "curl", "make"):  # a layer over the base image
            assert ws.host.package(package).is_installed
        resolv = ws.host.file("/etc/resolv.conf")
        assert resolv.linked_to == "/run/systemd/resolve/stub-resolv.conf"
        assert ws.host.run("git --version").rc == 0
        assert [o for o in checks.verify(ws) if not o.ok] == []


OWNER = textwrap.dedent(
    """
    import sys, time
    from wsfixture.model.config import config_from_dict
    from wsfixture.net.lab import Lab
    from wsfixture.workspaces import Workspace
    config = config_from_dict({"defaults": {"stateRoot": sys.argv[1]},
        "workspaces": {"orphan": {"type": "container", "ip": "192.168.83.30"}}})
    lab = Lab(config.network).open()
    Workspace(config.workspaces["orphan"], config, lab).start()
    print(lab.name, flush=True)
    time.sleep(600)
    """
)


def test_kill_9_of_owner_is_reaped_by_gc(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        lab_name = owner.stdout.readline().strip()
        assert lab_name, "the owner process did not start its workspace"
        assert leftovers(lab_name)["netns"] == lab_name
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, failures = ledger.reap()
        assert failures == []
        if not leftovers(lab_name):
            break
        time.sleep(0.2)
    assert leftovers(lab_name) == {}
    assert os.path.exists(tmp_path / "orphan" / "ssh-host-keys"), "gc keeps the state dir"


def test_a_taken_name_or_address_is_refused_before_anything_is_made(
    alpha: Workspace, config: Config, lab: Lab
) -> None:
    records = {r.key for r in ledger.records() if lab.name in r.key}  # (others run beside)
    same_ip = workspace_spec(config, name="twin", type="container", ip=alpha.ip)
    with pytest.raises(ConfigError, match=r"workspace\.ip: is already used by workspace alpha"):
        Workspace(same_ip, config, lab).start()
    with pytest.raises(ConfigError, match=r"workspace\.name: is already used by a running"):
        Workspace(config.workspaces["alpha"], config, lab).start()
    # Refused before anything was made: no record, no runtime dir, no wait for readiness.
    assert {r.key for r in ledger.records() if lab.name in r.key} == records
    assert not (lab.dir / "twin").exists()
    assert alpha.succeed("hostname").strip() == "alpha"  # the running one is untouched


def test_the_dns_check_is_skipped_without_lab_dns(state_root: Path) -> None:
    config = make_config(state_root, network={"dns": False}, nodns={"type": "container"})
    with booted(config, "nodns") as [ws]:
        outcomes = {o.check.id: o for o in checks.verify(ws)}
    assert outcomes["networking:dns"].result == "skipped"
    assert "network.dns = false" in outcomes["networking:dns"].detail
    assert [o.check.id for o in outcomes.values() if o.result != "ok"] == ["networking:dns"]


def test_the_workspace_user_edits_what_the_host_user_put_in_the_share(alpha: Workspace) -> None:
    dropped = alpha.state_dir / "workspace" / "from-host.txt"
    dropped.write_text("written on the host\n")
    os.chown(dropped, 1000, 1000)  # the host user whose uid the workspace user has
    inside = "/home/dev/workspace/from-host.txt"
    assert alpha.succeed(f"stat -c %U:%G {inside}").strip() == "dev:dev"
    alpha.succeed(f"echo edited inside >> {inside}")
    assert dropped.read_text() == "written on the host\nedited inside\n"
    assert dropped.stat().st_uid == 1000


def test_an_image_account_with_the_users_uid_is_refused_not_taken_over(tmp_path: Path) -> None:
    """A setup line's `useradd -m user` takes uid 1000, the workspace user's: it used to
    become that user (`id` said uid=1000(user)). Refused before the machine starts, naming
    both; the control: the same image with `defaults.user.uid = 1001` starts, `dev` is
    itself and `user` is untouched."""
    setup = {"type": "container", "setup": ["useradd -m user"]}
    config = make_config(tmp_path / "state", taker=setup)
    with Lab(config.network) as lab:
        ws = Workspace(config.workspaces["taker"], config, lab)
        with pytest.raises(ConfigError, match=r"defaults\.user\.uid: is the image's user 'user''s"):
            ws.start()
        assert ws.is_running is False
        assert "taker" not in ledger.workspaces(lab.name)  # nothing of it left
    assert leftovers(lab.name) == {}
    config = make_config(tmp_path / "state", {}, {"user": {"uid": 1001}}, taker=setup)
    with booted(config, "taker") as (ws,):
        assert ws.succeed("id -un; id -u").split() == ["dev", "1001"]
        assert ws.succeed("id -u user").strip() == "1000"


def test_host_sudo_takes_any_user_and_the_image_s_own_rules_stay(tmp_path: Path) -> None:
    """doas, the default: testinfra's ``host.sudo()`` is root and ``host.sudo("nobody")``
    nobody, and a rule the image's setup wrote is kept beside the workspace's (every
    boot rewrote the file over it). ``privilege = "sudo"``: sudo installed, ``host.sudo()``
    through it with the user's NOPASSWD rule, the image's own sudoers.d rule kept."""
    image_rule = "permit nopass nobody as root cmd /usr/bin/id"
    config = make_config(
        tmp_path / "state",
        viadoas={"type": "container", "setup": [f"echo '{image_rule}' > /etc/doas.conf"]},
    )
    with booted(config, "viadoas") as (ws,):
        with ws.host.sudo():
            assert ws.host.check_output("id -un") == "root"
        with ws.host.sudo("nobody"):
            assert ws.host.check_output("id -un") == "nobody"
        rules = ws.succeed("doas -n cat /etc/doas.conf").splitlines()
        assert rules == [image_rule, "permit nopass dev", "permit nopass root"]
        assert ws.host_as("root").check_output("id -un") == "root"  # a suite for a root login
        assert ws.host_as("nobody").check_output("id -un") == "nobody"
    app_rule = "nobody ALL=(root) NOPASSWD: /usr/bin/id"
    config = make_config(
        tmp_path / "state2", None, {"privilege": "sudo"},
        viasudo={"type": "container", "setup": [f"echo '{app_rule}' > /etc/sudoers.d/app"]},
    )  # fmt: skip
    with booted(config, "viasudo") as (ws,):
        with ws.host.sudo():
            assert ws.host.check_output("id -un") == "root"
            assert ws.host.check_output("cat /etc/sudoers.d/app") == app_rule
        with ws.host.sudo("nobody"):
            assert ws.host.check_output("id -un") == "nobody"
        assert "NOPASSWD: ALL" in ws.succeed("sudo -n -l")
        assert ws.succeed("doas -n id -un") == "root\n"  # wsfixture's own tool stays


def test_docs_brings_a_layer_s_man_pages_and_locales(tmp_path: Path) -> None:
    """The base's dpkg excludes reach a layer's packages (no man page for `hello`);
    ``docs = true`` lets them in. Control: the same package without it."""
    config = make_config(
        tmp_path / "state",
        plain={"type": "container", "packages": ["hello"]},
        withdocs={"type": "container", "packages": ["hello"], "docs": True},
    )
    with booted(config, "plain", "withdocs") as (plain, withdocs):
        for path in ("/usr/share/man/man1/hello.1.gz", "/usr/share/locale/de/LC_MESSAGES/hello.mo"):
            assert plain.run(f"test -e {path}")[0] != 0, path
            withdocs.succeed(f"test -e {path}")


def test_two_reapers_of_one_record_both_report_nothing_failed() -> None:
    """A record released while another reaper (a `wsfixture gc` beside a session's own
    reap) has just deleted its namespace: what is gone is not a failure. Positive control:
    the first release deletes the namespace it lists."""
    name = f"wsf-reap-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        first = ledger.Record.create(f"test-reap-{name}", ledger.LabInfo(name))
        first.add_netns(name)
        second = ledger.Record(first.key, first.info, first.owner, netns=[name])
        assert ledger.release(first) == []
        assert not (settings.NETNS_RUN / name).exists(), "the first reaper deleted it"
        assert ledger.release(second) == [], "the second found it gone: not a failure"
        assert not second.path.exists()
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
