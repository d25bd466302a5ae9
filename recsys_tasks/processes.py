"""Stopping the process trees a launcher or a test started (Airflow components fork workers)."""

from __future__ import annotations

import psutil


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants, found now (a child may later leave the process group)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_processes(processes: list[psutil.Process], grace: float = 20.0) -> list[psutil.Process]:
    """SIGTERM each, SIGKILL what is left after ``grace`` seconds; returns what still runs (normally nothing)."""
    for p in processes:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return psutil.wait_procs(alive, timeout=10)[1]
