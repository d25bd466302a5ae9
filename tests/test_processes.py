"""Stopping process trees, as `make ui` and the tests that start Airflow do."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from recsys_tasks.processes import process_tree, stop_processes

CHILD = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(60)"


def _tree(grandchild: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(grandchild=grandchild)])
    deadline = time.monotonic() + 20
    while len(process_tree(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def test_every_descendant_is_stopped() -> None:
    proc = _tree("import time; time.sleep(60)")
    tree = process_tree(proc.pid)
    assert len(tree) == 2
    assert stop_processes(tree, grace=5) == []
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    proc.wait(timeout=5)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    proc = _tree(stubborn)
    tree = process_tree(proc.pid)
    time.sleep(0.5)  # let the grandchild install its handler
    assert stop_processes(tree, grace=1) == []  # SIGTERM was ignored: only SIGKILL can have ended it
    proc.wait(timeout=5)


def test_a_finished_process_has_no_tree() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert process_tree(proc.pid) == []
