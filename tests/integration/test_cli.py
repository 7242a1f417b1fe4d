"""The `wsfixture` command for real: up, status, ssh, check, apply, down, against a lab of
its own (a namespace name unique to this test run)."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.leaks import leftovers
from tests.support.registry import free_port
from wsfixture import checks
from wsfixture.host import ledger, settings, system
from wsfixture.net.world import world as make_world

CONFIG = """
[network]
namespace = "{ns}"
internet = false  # the CLI's default is on; this test has no world to reach

[defaults]
stateRoot = "{state}"

[workspaces.one]
type = "container"
ip = "192.168.83.10"
autoStart = true

[workspaces.two]
type = "container"
ip = "192.168.83.11"
autoStart = true
restartIfChanged = false

[workspaces.vmthree]
type = "vm"
ip = "192.168.83.12"
vcpu = 2
memory = 1024

[workspaces.ckpt]
type = "container"
ip = "192.168.83.13"
packages = ["figlet"]  # a layer of its own: the checkpoint test removes and rebuilds it
"""


def wsf(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "wsfixture.cli", "-c", str(config), *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, (
            f"{args}: rc {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture
def cli_config(tmp_path: Path) -> Path:
    ns = f"wsfcli-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "workspaces.toml"
    # A state root with a space: every path in the generated ssh_config is quoted.
    path.write_text(CONFIG.format(ns=ns, state=tmp_path / "state dir"))
    yield path
    subprocess.run([sys.executable, "-m", "wsfixture.cli", "gc", "--lab", ns], check=False)
    assert leftovers(ns) == {}
    system.remove_tree(tmp_path / "state dir")  # its checkpoints' copies of a root: not kept


def follow_logs(config: Path, name: str, action: Callable[[], object], wanted: str) -> str:
    """Output of ``logs -f`` from its start until ``wanted`` shows up (10 s at most)."""
    follower = subprocess.Popen(
        [sys.executable, "-m", "wsfixture.cli", "-c", str(config), "logs", "-f", "-n", "1", name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert follower.stdout is not None
    seen = ""
    try:
        deadline = time.monotonic() + 10
        acted = False
        while wanted not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([follower.stdout], [], [], 0.5)
            if ready:
                line = follower.stdout.readline()
                if not line:
                    break
                seen += line
            if not acted and seen:  # following has begun
                action()
                acted = True
    finally:
        follower.terminate()
        follower.wait(10)
    return seen


def status(config: Path) -> dict[str, dict[str, str]]:
    return {row["name"]: row for row in json.loads(wsf(config, "status", "--json").stdout)}


def test_day_to_day(cli_config: Path) -> None:
    ns = cli_config.read_text().split('namespace = "')[1].split('"')[0]
    up = wsf(cli_config, "up")
    assert "one: ready in" in up.stdout
    assert "two: ready in" in up.stdout
    rows = status(cli_config)
    assert rows["one"]["state"] == rows["two"]["state"] == "running"
    assert rows["vmthree"]["state"] == "stopped"
    assert rows["one"]["matches"] is True
    assert isinstance(rows["one"]["uptime"], int)
    assert rows["vmthree"]["uptime"] is None
    # Limits as facts: each bound (disk too), and a running one's OOM kills.
    assert rows["one"]["limits"]["oom_kills"] == 0
    assert rows["vmthree"]["limits"]["memory_mib"] == 1024
    assert rows["vmthree"]["limits"]["disk_mib"] == 8192
    assert "oom_kills" not in rows["vmthree"]["limits"], "stopped: nothing to count"
    assert "2 cpu, 1024 MiB, disk 8192 MiB" in wsf(cli_config, "status").stdout
    assert wsf(cli_config, "up", "one").stdout.strip() == "one: already running"
    just_one = json.loads(wsf(cli_config, "status", "one", "--json").stdout)
    assert [row["name"] for row in just_one] == ["one"]
    assert "two" not in wsf(cli_config, "status", "one").stdout
    unknown = wsf(cli_config, "status", "nope", check=False)
    assert unknown.returncode == 2
    listed = json.loads(wsf(cli_config, "list", "--json").stdout)
    assert {r["name"] for r in listed if r["lab"] == ns} == {"one", "two"}

    # OpenSSH through the generated ssh_config: ProxyCommand into the lab, pinned key.
    assert wsf(cli_config, "ssh", "one", "hostname").stdout.strip() == "one"
    assert (
        wsf(cli_config, "ssh", "one", "getent", "hosts", "two").stdout.split()[0] == "192.168.83.11"
    )
    # Only this lab's workspaces: an unknown name is a usage error, a stopped one says how
    # to start it, and ssh_config refuses any other name or address outright.
    nope = wsf(cli_config, "ssh", "nope", "true", check=False)
    assert (nope.returncode, nope.stderr.strip()) == (
        2,
        "wsfixture: no workspace named 'nope'; known: one, two, vmthree, ckpt",
    )
    stopped = wsf(cli_config, "ssh", "vmthree", "true", check=False)
    assert stopped.returncode == 1
    assert "'vmthree' is not running: start it with `wsfixture up vmthree`" in stopped.stderr
    ssh_config = settings.current().labs_dir / ns / "ssh_config"
    for target in ("nope", "localhost", "192.168.83.99"):
        refused = subprocess.run(
            ["ssh", "-F", str(ssh_config), target, "true"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert refused.returncode == 255
        assert f"wsfixture: {target} is not a workspace of lab {ns}" in refused.stderr
    by_address = subprocess.run(
        ["ssh", "-F", str(ssh_config), "192.168.83.10", "hostname"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert by_address.stdout.strip() == "one"
    logs = wsf(cli_config, "logs", "one", "-n", "20").stdout
    assert "journal of one" in logs
    assert "journal of one" not in wsf(cli_config, "logs", "one", "--console").stdout
    marker = f"wsf-follow-{uuid.uuid4().hex[:8]}"
    assert marker in follow_logs(
        cli_config, "one", lambda: wsf(cli_config, "ssh", "one", "logger", marker), marker
    )

    # Files in and out, commands run and left running.
    local = cli_config.parent / "note.txt"
    local.write_text("hello\n")
    wsf(cli_config, "cp", str(local), "one:/home/dev/note.txt")
    assert wsf(cli_config, "exec", "one", "cat", "/home/dev/note.txt").stdout == "hello\n"
    assert wsf(cli_config, "exec", "one", "false", check=False).returncode == 1
    wsf(cli_config, "cp", "one:/etc/hostname", str(cli_config.parent / "hostname"))
    assert (cli_config.parent / "hostname").read_text() == "one\n"
    assert wsf(cli_config, "cp", "a", "b", check=False).returncode == 2
    # A directory needs -r (an error, not a traceback); with it, the tree comes out.
    tree = cli_config.parent / "apt"
    flat = wsf(cli_config, "cp", "one:/etc/apt", str(tree), check=False)
    assert flat.returncode == 1, flat.stderr
    assert "is a directory; cp -r" in flat.stderr
    assert "Traceback" not in flat.stderr
    wsf(cli_config, "cp", "-r", "one:/etc/apt", str(tree))
    assert (tree / "sources.list").is_file() or any(tree.rglob("*.sources"))
    unreadable = wsf(cli_config, "cp", "-r", "one:/root", str(tree / "r"), check=False)
    assert unreadable.returncode == 1, unreadable.stderr
    assert "Permission denied" in unreadable.stderr
    assert "Traceback" not in unreadable.stderr
    missing = wsf(cli_config, "cp", str(tree / "nothing"), "one:/tmp/x", check=False)
    assert missing.returncode == 1, missing.stderr
    assert "Traceback" not in missing.stderr
    # Faults between CLI workspaces, kept between commands until healed.
    ping_two = ("exec", "one", "ping", "-c", "1", "-W", "1", "192.168.83.11")
    assert wsf(cli_config, *ping_two).returncode == 0  # control
    assert wsf(cli_config, "fault", "partition", "one", "two").stdout == "partition one | two\n"
    assert wsf(cli_config, *ping_two, check=False).returncode != 0
    assert re.match(r"\d\d:\d\d:\d\d-active partition one \| two\n",
                    wsf(cli_config, "fault", "list").stdout)  # fmt: skip
    bad = wsf(cli_config, "fault", "shape", "one", "--loss", "200", check=False)
    assert bad.returncode == 1, bad.stderr
    assert "loss '200'" in bad.stderr
    assert wsf(cli_config, "fault", "heal").stdout == "healed\n"
    assert wsf(cli_config, *ping_two).returncode == 0
    slow = wsf(cli_config, "fault", "shape", "one", "two", "--delay", "300ms", "--rate", "1mbit")
    assert slow.stdout == "delay 300ms rate 1mbit one <-> two\n"
    delayed = re.search(r"time=([0-9.]+) ms", wsf(cli_config, *ping_two).stdout)
    assert delayed, "a round trip"
    assert float(delayed.group(1)) >= 300
    assert wsf(cli_config, "fault", "dns", "two", "nxdomain").stdout == "dns two nxdomain\n"
    assert wsf(cli_config, "exec", "one", "getent", "hosts", "two", check=False).returncode != 0
    assert wsf(cli_config, "fault", "heal").stdout == "healed\n"
    assert wsf(cli_config, "fault", "list").stdout == "no faults\n"
    assert wsf(cli_config, "exec", "one", "getent", "hosts", "two").stdout.startswith(
        "192.168.83.11 "
    )
    # Paused through its supervisor: what would hang is refused at once; resumed, it runs.
    sleeper = wsf(cli_config, "exec", "--detach", "one", "sleep", "600").stdout
    sleeper_pid = re.fullmatch(r"one: pid (\d+), output in (\S+)\n", sleeper).group(1)
    assert wsf(cli_config, "pause", "one").stdout == "one: paused\n"
    paused = wsf(cli_config, "exec", "one", "true", check=False)
    assert paused.returncode == 1, paused.stderr
    assert "'one' is paused" in paused.stderr
    assert wsf(cli_config, "resume", "one").stdout == "one: running\n"
    assert wsf(cli_config, "exec", "one", "kill", sleeper_pid).returncode == 0, "the same process"
    over = wsf(cli_config, "cp", "--max", "2", "one:/etc/hostname", str(tree / "h"), check=False)
    assert "over the bound of 2 (--max)" in over.stderr, over.stderr
    assert not (tree / "h").exists()
    # exec's words are its argv (as docker exec's); a shell line is sh -c's; -e, -w, -u.
    argv = wsf(cli_config, "exec", "one", "printf", "%s|", "two words", "$HOME", ";", "x")
    assert argv.stdout == "two words|$HOME|;|x|"
    shell = wsf(cli_config, "exec", "-e", "GREETING=hi there", "-w", "/etc", "one", "sh", "-c",
                'echo "$GREETING from $(pwd)"')  # fmt: skip
    assert shell.stdout == "hi there from /etc\n"
    assert wsf(cli_config, "exec", "-u", "root", "one", "id", "-un").stdout == "root\n"
    assert wsf(cli_config, "exec", "-u", "nobody", "one", "id", "-un").stdout == "nobody\n"
    bad = wsf(cli_config, "exec", "-e", "1X=y", "one", "true", check=False)
    assert bad.returncode != 0
    assert "env: is not a variable name (got '1X')" in bad.stderr
    # Jobs: listed with their state, their output tailed, ended by ID.
    detached = wsf(cli_config, "exec", "--detach", "one", "sh", "-c", "echo early; sleep 300")
    pid, output = re.fullmatch(r"one: pid (\d+), output in (\S+)\n", detached.stdout).groups()
    done = wsf(cli_config, "exec", "-d", "-w", "/tmp", "one", "sh", "-c", "pwd; exit 3").stdout
    done_pid = re.fullmatch(r"one: pid (\d+), .*\n", done).group(1)
    time.sleep(0.5)
    jobs = {row["id"]: row for row in json.loads(wsf(cli_config, "jobs", "one", "--json").stdout)}
    assert jobs[pid]["state"] == "running"
    assert jobs[pid]["command"] == "sh -c 'echo early; sleep 300'"
    assert jobs[done_pid]["state"] == "exit 3"
    assert wsf(cli_config, "logs", "one", "--job", pid).stdout == "early\n"
    assert wsf(cli_config, "logs", "one", "--job", done_pid).stdout == "/tmp\n"
    assert wsf(cli_config, "kill", "one", pid).stdout == f"one: job {pid} sent SIGTERM\n"
    time.sleep(0.5)
    jobs = {row["id"]: row for row in json.loads(wsf(cli_config, "jobs", "one", "--json").stdout)}
    assert jobs[pid]["state"] in ("killed", "exit 143"), jobs[pid]
    assert wsf(cli_config, "exec", "one", "test", "-e", output).returncode == 0
    nojob = wsf(cli_config, "kill", "one", "999999", check=False)
    assert nojob.returncode == 2, nojob.stderr
    assert "one has no job '999999'" in nojob.stderr

    check = wsf(cli_config, "check", "--json")
    outcomes = json.loads(check.stdout)
    assert len(outcomes) == 2 * len(checks.CHECKS)
    assert all(o["result"] == "ok" for o in outcomes)

    # Edit the config: one changes (restart), two changes but must not restart, three is
    # new without autoStart, and a removed workspace would be stopped.
    text = cli_config.read_text()
    text = text.replace(
        'ip = "192.168.83.10"\nautoStart = true',
        'ip = "192.168.83.10"\nautoStart = true\npackages = ["curl"]',
    )
    text = text.replace("restartIfChanged = false", "restartIfChanged = false\nvcpu = 2")
    cli_config.write_text(text)
    assert status(cli_config)["one"]["matches"] is False
    assert status(cli_config)["one"]["changed"] == ["packages"]
    assert status(cli_config)["two"]["changed"] == ["vcpu"]
    assert "no: needs restart (packages changed)" in wsf(cli_config, "status").stdout
    dry_run = json.loads(wsf(cli_config, "apply", "--dry-run", "--json").stdout)
    assert {a["name"]: a["changed"] for a in dry_run} == {"one": "packages", "two": "vcpu"}
    planned = {a["name"]: a["action"] for a in dry_run}
    assert planned == {
        "one": "would be restarted",
        "two": "needs restart (restartIfChanged = false)",
    }
    assert status(cli_config)["one"]["matches"] is False, "a dry run changes nothing"
    actions = {
        a["name"]: a["action"] for a in json.loads(wsf(cli_config, "apply", "--json").stdout)
    }
    assert actions == {"one": "restarted", "two": "needs restart (restartIfChanged = false)"}
    assert wsf(cli_config, "ssh", "one", "command", "-v", "curl").returncode == 0
    cli_config.write_text(text.split("[workspaces.two]")[0])
    actions = {
        a["name"]: a["action"] for a in json.loads(wsf(cli_config, "apply", "--json").stdout)
    }
    assert actions["two"].startswith("stopped")

    down = wsf(cli_config, "down")
    assert "removed" in down.stdout
    assert leftovers(ns) == {}
    state = cli_config.parent / "state dir" / "one"
    assert (state / "ssh-host-keys").is_dir(), "down keeps the state"
    assert wsf(cli_config, "destroy", "one", check=False).returncode == 2, "asks for --yes"
    wsf(cli_config, "destroy", "one", "--yes")
    assert not state.exists()
    # The client key goes with the last workspace's state, not before.
    client_keys = cli_config.parent / "state dir" / ".wsfixture"
    assert (client_keys / "id_ed25519").exists(), "two's state is still there"
    cli_config.write_text(CONFIG.format(ns=ns, state=cli_config.parent / "state dir"))
    wsf(cli_config, "destroy", "two", "--yes")
    assert not client_keys.exists()


def test_gc_lab_stops_supervisors_and_leaves_nothing(cli_config: Path) -> None:
    ns = cli_config.read_text().split('namespace = "')[1].split('"')[0]
    wsf(cli_config, "up", "one")
    (record,) = ledger.workspaces(ns).values()
    supervisor = record.owner
    assert supervisor.alive()
    wsf(cli_config, "gc", "--lab", ns)
    deadline = time.monotonic() + 10
    while supervisor.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not supervisor.alive(), "the supervisor stopped its workspace and exited"
    assert leftovers(ns) == {}


def test_failed_up_leaves_no_lab(cli_config: Path, tmp_path: Path) -> None:
    ns = cli_config.read_text().split('namespace = "')[1].split('"')[0]
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state root should be")
    cli_config.write_text(cli_config.read_text().replace(str(tmp_path / "state dir"), str(blocker)))
    up = wsf(cli_config, "up", "one", check=False)
    assert up.returncode == 1
    assert str(blocker) in up.stdout, up.stdout
    assert f"lab {ns}: removed" in up.stdout
    assert leftovers(ns) == {}


def test_vm_through_the_cli(cli_config: Path) -> None:
    up = wsf(cli_config, "up", "vmthree")
    # A start of over two seconds says what it does, as plain lines into a pipe: the phase
    # it is in when it first speaks (restoring its shape's template, making that template
    # first where this machine has none yet, or, after a restore quicker than two seconds,
    # the pinned login). How it booted is checked below, from its console.
    progress = [line for line in up.stderr.splitlines() if line.startswith("starting vmthree")]
    doing = (": restoring from a template (", ": making VM template ", ": waiting for sshd on ")
    if progress:
        assert any(what in line for line in progress for what in doing), up.stderr
        assert progress[-1].startswith("starting vmthree (vm): done in "), up.stderr
    else:  # a start within the reporter's two quiet seconds says nothing (seen in CI)
        ready = re.search(r"vmthree: ready in ([0-9.]+)s", up.stdout)
        assert ready is not None, up.stdout
        assert float(ready.group(1)) < 2.5, (up.stdout, up.stderr)
    assert "\r" not in up.stderr, "no terminal redraws into a pipe"
    assert status(cli_config)["vmthree"]["state"] == "running"
    assert wsf(cli_config, "ssh", "vmthree", "uname", "-r").stdout.strip().endswith("amd64")
    assert all(
        o["result"] == "ok"
        for o in json.loads(wsf(cli_config, "check", "vmthree", "--json").stdout)
    )
    # Restored from a template: its console starts where the template was saved, with the
    # kernel seeing the fork (vmgenid).
    ns = cli_config.read_text().split('namespace = "')[1].split('"')[0]
    console_log = settings.current().labs_dir / ns / "vmthree" / "console.log"
    assert b"virtual machine fork" in console_log.read_bytes()
    # A serial console is coloured (a cold boot's systemd status lines); `logs --console`
    # into a pipe is plain text.
    with open(console_log, "ab") as console:
        console.write(b"[\x1b[0;32m  OK  \x1b[0m] Started a coloured line.\r\n")
    console_text = wsf(cli_config, "logs", "vmthree", "--console", "-n", "200").stdout
    assert "[  OK  ] Started a coloured line." in console_text
    assert "\x1b[" not in console_text
    wsf(cli_config, "down", "vmthree")


def test_checkpoints_through_the_cli(cli_config: Path) -> None:
    """checkpoint, rollback and checkpoints on a CLI workspace (its supervisor does them);
    its checkpoints outlive `down` while its image build matches, and one made over an
    image rebuilt since is removed at `up`, which says so."""
    wsf(cli_config, "up", "ckpt")
    wsf(cli_config, "exec", "ckpt", "sh", "-c", "echo one | doas tee /etc/ck")
    made = wsf(cli_config, "checkpoint", "ckpt", "first").stdout
    assert made.startswith("ckpt: checkpoint 'first' made in "), made
    bad = wsf(cli_config, "checkpoint", "ckpt", "a/b", check=False)
    assert bad.returncode == 1
    assert "checkpoint tag 'a/b' is not allowed" in bad.stderr
    wsf(cli_config, "exec", "ckpt", "sh", "-c", "echo two | doas tee /etc/ck")
    rolled = wsf(cli_config, "rollback", "ckpt", "first").stdout
    assert rolled.startswith("ckpt: rolled back to 'first', ready in "), rolled
    assert wsf(cli_config, "exec", "ckpt", "cat", "/etc/ck").stdout.strip() == "one"
    unknown = wsf(cli_config, "rollback", "ckpt", "frist", check=False)
    assert "no checkpoint tagged 'frist'; did you mean 'first'?" in unknown.stderr
    rows = json.loads(wsf(cli_config, "checkpoints", "ckpt", "--json").stdout)
    assert [r["tag"] for r in rows] == ["first"]
    assert "ckpt:first" in wsf(cli_config, "images").stdout  # its disk use is shown
    image_key = rows[0]["image"].split("@")[0]

    wsf(cli_config, "down", "ckpt")
    stopped = json.loads(wsf(cli_config, "checkpoints", "ckpt", "--json").stdout)
    assert [r["tag"] for r in stopped] == ["first"], "kept while it is stopped"
    up = wsf(cli_config, "up", "ckpt").stdout
    assert "removed" not in up, up
    assert wsf(cli_config, "exec", "ckpt", "cat", "/etc/ck", check=False).returncode == 1
    wsf(cli_config, "rollback", "ckpt", "first")  # a new boot, the same image build
    assert wsf(cli_config, "exec", "ckpt", "cat", "/etc/ck").stdout.strip() == "one"

    wsf(cli_config, "down", "ckpt")
    wsf(cli_config, "images", "--remove", image_key)  # built again at the next up
    up = wsf(cli_config, "up", "ckpt").stdout
    assert f"checkpoint 'first' removed: it was made over image {image_key}@" in up, up
    assert wsf(cli_config, "checkpoints", "ckpt").stdout.strip() == "ckpt: no checkpoints"
    wsf(cli_config, "checkpoint", "ckpt")
    tags = [r["tag"] for r in json.loads(wsf(cli_config, "checkpoints", "ckpt", "--json").stdout)]
    assert tags == ["checkpoint-1"]
    wsf(cli_config, "checkpoints", "ckpt", "--delete", "checkpoint-1")
    assert wsf(cli_config, "checkpoints", "ckpt").stdout.strip() == "ckpt: no checkpoints"
    wsf(cli_config, "down", "ckpt")


def test_aliases_and_hosts(cli_config: Path, tmp_path: Path) -> None:
    bash = wsf(cli_config, "aliases").stdout.splitlines()
    assert any(
        line.startswith(f"alias workspace_one='{sys.executable} -m wsfixture.cli -c ")
        and line.endswith(" ssh one'")
        for line in bash
    )
    assert any(line.startswith("alias workspace_two_restart=") for line in bash)
    assert len(bash) == 5 * 4  # five aliases for each of the four workspaces
    fish = wsf(cli_config, "aliases", "--shell", "fish").stdout.splitlines()
    assert fish[0].startswith(f"alias workspace_one '{sys.executable} -m wsfixture.cli")
    # Syntax check: bash accepts every line.
    subprocess.run(["bash", "-n", "-c", "\n".join(bash)], check=True)

    assert wsf(cli_config, "hosts").stdout.splitlines()[0] == "192.168.83.10 one workspace-one"
    scratch = tmp_path / "hosts"
    foreign = "127.0.0.1 localhost\n# keep me  exactly\n10.9.9.9 printer\n"
    scratch.write_text(foreign)
    assert "updated" in wsf(cli_config, "hosts", "--apply", "--file", str(scratch)).stdout
    assert (
        "already up to date" in wsf(cli_config, "hosts", "--apply", "--file", str(scratch)).stdout
    )
    text = scratch.read_text()
    assert text.startswith(foreign)
    assert "192.168.83.12 vmthree workspace-vmthree" in text
    scratch.write_text(
        text + "# BEGIN wsfixture: managed by `wsfixture hosts --apply`, do not edit\n"
    )
    assert wsf(cli_config, "hosts", "--apply", "--file", str(scratch), check=False).returncode != 0


def test_up_gives_internet_and_forwards_by_default(tmp_path: Path) -> None:
    """A day-to-day lab has the internet unless the config says no (here the uplink runs
    in a world namespace the test builds), and `forwards` are held while it runs."""
    local = free_port()
    with make_world(tmp_path / "www") as world:
        ns = f"wsfcli-{uuid.uuid4().hex[:6]}"
        config = tmp_path / "workspaces.toml"
        config.write_text(
            f'[network]\nnamespace = "{ns}"\nuplinkNamespace = "{world.netns}"\n'
            f'[defaults]\nstateRoot = "{tmp_path / "state"}"\n'
            f'[workspaces.web]\ntype = "container"\nip = "192.168.83.10"\n'
            f"forwards = {{ {local} = 8000 }}\n"
        )
        try:
            wsf(config, "up", "web")
            fetch = (
                "python3 -c 'import urllib.request as u; "
                'print(u.urlopen("http://world.test/").read().decode())\''
            )
            assert wsf(config, "ssh", "web", fetch).stdout == "hello from the world\n\n"
            wsf(config, "ssh", "web", "echo hi > /tmp/i")
            serve = "python3 -m http.server --directory /tmp 8000 </dev/null >/dev/null 2>&1 &"
            wsf(config, "ssh", "web", serve)
            rows = {r["name"]: r for r in json.loads(wsf(config, "status", "--json").stdout)}
            assert rows["web"]["forwards"] == f"127.0.0.1:{local}->8000"
            deadline = time.monotonic() + 15
            while True:
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{local}/i", timeout=5).read()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the held forward never answered"
                    time.sleep(0.2)
            assert body == b"hi\n"
            # `wsfixture forward` in the foreground, until Ctrl-C.
            forward = ["forward", "web", "8000"]
            proc = subprocess.Popen(
                [sys.executable, "-m", "wsfixture.cli", "-c", str(config), *forward],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert proc.stdout is not None
            line = proc.stdout.readline()
            host_port = line.split()[0]
            assert line.strip().endswith("-> web:8000 (Ctrl-C to stop)")
            assert urllib.request.urlopen(f"http://{host_port}/i", timeout=5).read() == b"hi\n"
            proc.send_signal(signal.SIGINT)  # our own child, by PID
            assert proc.wait(15) == 0
            taken = wsf(config, "forward", "web", "8000", "--local", str(local), check=False)
            assert taken.returncode == 2
            assert "forward.local: cannot be bound" in taken.stderr
        finally:
            subprocess.run([sys.executable, "-m", "wsfixture.cli", "gc", "--lab", ns], check=False)
        assert leftovers(ns) == {}


def wait_for_state(config: Path, name: str, state: str, timeout: float) -> float:
    """Seconds until ``status`` says ``state`` for ``name`` (bounded)."""
    began = time.monotonic()
    while status(config)[name]["state"] != state:
        assert time.monotonic() - began < timeout, f"{name} not {state} within {timeout}s"
        time.sleep(0.5)
    return time.monotonic() - began


def test_ttl_and_idle_timeout_stop_workspaces(cli_config: Path) -> None:
    """A ttl and an idle timeout stop their workspaces; the lab goes with the last one."""
    ns = cli_config.read_text().split('namespace = "')[1].split('"')[0]
    text = cli_config.read_text().replace(
        "restartIfChanged = false", 'restartIfChanged = false\nidleTimeout = "6s"'
    )
    cli_config.write_text(text)
    up = wsf(cli_config, "up", "--ttl", "8s", "one")
    assert "one: ready in" in up.stdout
    assert re.fullmatch(r"in [0-9]s \(ttl\)", status(cli_config)["one"]["stops"])
    wsf(cli_config, "up", "two")
    # An open SSH session keeps the idle one alive past its timeout.
    session = subprocess.Popen(
        [sys.executable, "-m", "wsfixture.cli", "-c", str(cli_config), "exec", "two", "sleep", "10"]
    )
    try:
        time.sleep(2)
        assert status(cli_config)["two"]["stops"] == "idle timer: a session is open"
        assert wait_for_state(cli_config, "one", "stopped", 20) > 0, "the ttl stopped one"
        assert status(cli_config)["two"]["state"] == "running", "kept by its session"
        assert Path(f"/run/netns/{ns}").exists(), "the lab stays while a workspace runs"
    finally:
        assert session.wait(30) == 0
    deadline = time.monotonic() + 5  # the supervisor looks once a second
    while not (stops := status(cli_config)["two"]["stops"]).endswith("(idle)"):
        assert time.monotonic() < deadline, f"the session's end not seen: {stops}"
        time.sleep(0.3)
    wait_for_state(cli_config, "two", "stopped", 20)
    deadline = time.monotonic() + 10  # the last one's supervisor removes the lab as it goes
    while leftovers(ns):
        assert time.monotonic() < deadline, f"the lab outlived its last workspace: {leftovers(ns)}"
        time.sleep(0.2)
    bad = wsf(cli_config, "up", "--ttl", "soon", "one", check=False)
    assert bad.returncode == 2
    assert "'soon' is not a duration" in bad.stderr
