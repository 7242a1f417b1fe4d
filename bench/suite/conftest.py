"""Records, per test, fixture setup/teardown time and the workspace's own boot time, so the
runner can report the fixture's overhead (setup + teardown - boot; the stop runs in the
background after the test)."""

import json
import os

import pytest

OUT = os.environ.get("WSF_BENCH_OUT")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if OUT and report.when in ("setup", "teardown"):
        item.stash.setdefault(_key, {})[report.when] = report.duration
    if OUT and report.when == "teardown":
        row = dict(item.stash.get(_key, {}))
        ws = item.stash.get(_ws, None)
        if ws is not None:
            row.update(ready=ws.ready_seconds)
        with open(f"{OUT}.{os.getpid()}", "a") as handle:
            handle.write(json.dumps(row) + "\n")
    return report


@pytest.fixture(autouse=True)
def _remember_workspace(request, workspace):
    request.node.stash[_ws] = workspace


_key = pytest.StashKey[dict]()
_ws = pytest.StashKey[object]()
