"""The thread rule: the CPUs this process may use minus those other work keeps busy (at least one),
unless --threads or OMP_NUM_THREADS choose; applied before a command's torch work starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cvae import threads


@pytest.fixture
def machine(monkeypatch):
    """A 2-CPU machine whose other work keeps ``busy[0]`` CPUs busy."""
    busy = [0.0]
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "busy_cpus", lambda seconds=0: busy[0])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return busy


@pytest.mark.parametrize("busy, want", [(0.0, 2), (0.4, 2), (0.6, 1), (1.0, 1), (2.0, 1), (3.5, 1)])
def test_the_rule_leaves_the_cpus_other_work_keeps_busy(machine, busy, want):
    machine[0] = busy
    n, why = threads.choose_threads()
    assert n == want and "2 CPUs" in why and f"{busy:.1f} busy" in why


def test_threads_flag_and_omp_num_threads_win(machine, monkeypatch):
    machine[0] = 2.0
    assert threads.choose_threads(2) == (2, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads() == (2, "OMP_NUM_THREADS")
    assert threads.choose_threads(1) == (1, "--threads")


def test_busy_cpus_sees_a_spinning_process():
    """/proc/stat over a quarter second: near 0 CPUs busy when idle-ish, about 1 more while a process
    spins (the suite's other processes may add some)."""
    if threads.busy_cpus() is None:
        pytest.skip("no /proc/stat here")
    before = threads.busy_cpus()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        during = threads.busy_cpus()
    finally:
        spinner.kill()
        spinner.wait()
    assert during >= 0.7 and during > before - 0.3, (before, during)
    assert 0 <= before <= (os.cpu_count() or 1)


def test_use_threads_sets_omp_and_torch(machine, monkeypatch):
    import torch

    machine[0] = 1.0
    previous = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # empty: not a choice of the user's
    try:
        assert threads.use_threads() == (1, "2 CPUs, 1.0 busy with other work")
        assert os.environ["OMP_NUM_THREADS"] == "1" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
