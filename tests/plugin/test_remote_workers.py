"""Remote xdist workers for real: an sshd this test starts on 127.0.0.1 (its own host key,
config and authorized key, pinned on the client side; not the host's sshd), and two
`--tx ssh=...` workers through it running a suite with a container and a VM. Each worker
makes its own lab; the report shows both used. A config missing on a worker is an error
naming the path and where it was looked for."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.leaks import leftovers
from tests.support.prereqs import require_root_and_tools
from tests.support.registry import free_port
from wsfixture.host import system

SSHD = "/usr/sbin/sshd"
CONFIG = """
[workspaces.alpha]
type = "container"
ip = "192.168.83.10"
"""


@pytest.fixture
def remote_sshd(tmp_path: Path) -> Iterator[Path]:
    """An sshd on 127.0.0.1 for this test, and a client config that pins its host key."""
    require_root_and_tools("ssh", "ssh-keygen")
    if not Path(SSHD).exists():
        pytest.fail(f"{SSHD} is missing (Debian: openssh-server)")
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        system.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)])
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    port = free_port()
    server_config = tmp_path / "sshd_config"
    server_config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"StrictModes no\nPidFile {tmp_path / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation dir
    host_key = (keys / "host.pub").read_text().split()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    client_config = tmp_path / "ssh_config"
    client_config.write_text(
        f"Host 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {keys / 'client'}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {keys / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n"
    )
    with open(tmp_path / "sshd.log", "wb") as log:
        server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(server_config)],
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["ssh", "-F", str(client_config), "127.0.0.1", "true"],
                             capture_output=True, check=False).returncode != 0:  # fmt: skip
            assert server.poll() is None, (tmp_path / "sshd.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "sshd.log").read_text()
            time.sleep(0.1)
        yield client_config
    finally:
        system.end_process(server, 5.0)


def test_two_ssh_workers_run_a_container_and_a_vm(
    pytester: pytest.Pytester, remote_sshd: Path
) -> None:
    pytester.makefile(".toml", workspaces=CONFIG)
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.parametrize("workspace", ["container", "vm"], indirect=True)
        def test_kind(workspace, ws_lab):
            assert workspace.succeed("hostname").strip() == workspace.name
            print("WORKER", os.environ["PYTEST_XDIST_WORKER"], "LAB", ws_lab.name)
        """
    )
    spec = (
        f"ssh=127.0.0.1//python={sys.executable}//chdir={pytester.path}//ssh_config={remote_sshd}"
    )
    result = pytester.runpytest_subprocess(
        "--tx", spec, "--tx", spec, "--dist", "load",
        "--ws-config=workspaces.toml", "-v", "-p", "no:cacheprovider", "-rA",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    workers = set(re.findall(r"\[(gw\d)\] .*PASSED", out))
    assert workers == {"gw0", "gw1"}, out
    labs = set(re.findall(r"LAB (wsf-[0-9a-f]{10}-gw\d)", out))
    assert len(labs) == 2, "each worker its own lab"
    for lab in labs:
        assert leftovers(lab) == {}


def test_a_config_missing_on_the_worker_names_the_path_and_where(
    pytester: pytest.Pytester, remote_sshd: Path, tmp_path: Path
) -> None:
    pytester.makepyfile("def test_x(workspace):\n    pass\n")
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    shutil.copy(pytester.path / "test_a_config_missing_on_the_worker_names_the_path_and_where.py",
                elsewhere)  # fmt: skip
    spec = f"ssh=127.0.0.1//python={sys.executable}//chdir={elsewhere}//ssh_config={remote_sshd}"
    pytester.makefile(".toml", workspaces=CONFIG)  # on the controller only
    result = pytester.runpytest_subprocess("--tx", spec, "--dist", "load",
                                           "--ws-config=workspaces.toml", "-p",
                                           "no:cacheprovider")  # fmt: skip
    text = result.stdout.str() + result.stderr.str()
    assert result.ret != 0
    assert f"workspaces.toml: no such file on {socket.gethostname()}:{elsewhere}" in text, text
    assert "(xdist worker gw0)" in text
