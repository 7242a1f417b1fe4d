"""A newcomer's first workspaces, from a plain Python process (no pytest): a container
and a VM in one line each, two workspaces in a lab of their own, and, given a config and
a name, a handle on a workspace that `wsfixture up` started.

    sudo python3 examples/python/first_workspaces.py [CONFIG NAME]

Each step prints what it saw; the script exits non-zero if any check fails.
"""

from __future__ import annotations

import sys
import threading

import wsfixture


def one_liners() -> None:
    with wsfixture.workspace() as box:  # a container, a lab and a state root of its own
        print("container:", box.succeed("uname -sr").strip(), "as", box.succeed("id -un").strip())
    with wsfixture.workspace(type="vm", vcpu=1, memory=768) as vm:
        print("vm:", vm.succeed("systemd-detect-virt").strip(), vm.succeed("hostname").strip())


def a_lab_of_two() -> None:
    with wsfixture.Lab() as lab:
        db = lab.workspace("db")
        app = lab.workspace()
        print("app reaches db by name:", app.succeed("getent hosts db").split()[0] == db.ip)


def from_a_thread_that_ends() -> None:
    """Started by a thread that is gone before it is used: it lives on all the same."""
    made: list[wsfixture.Workspace] = []
    starter = threading.Thread(target=lambda: made.append(wsfixture.workspace()))
    starter.start()
    starter.join()
    with made[0] as box:
        print("after its thread ended:", box.succeed("echo alive").strip())


def connected(config: str, name: str) -> None:
    with wsfixture.connect(name, config) as ws:  # left running when the block ends
        ws.succeed("echo mark > /var/tmp/mark")
        ws.checkpoint("marked")
        ws.succeed("rm /var/tmp/mark")
        ws.rollback("marked")
        print("connected, rolled back:", ws.succeed("cat /var/tmp/mark").strip())
        ws.delete_checkpoint("marked")


if __name__ == "__main__":
    one_liners()
    a_lab_of_two()
    from_a_thread_that_ends()
    if len(sys.argv) == 3:
        connected(sys.argv[1], sys.argv[2])
