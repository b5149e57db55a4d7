"""How many threads a command's torch uses, on a machine it may share with other work.

torch's CPU ops run on a pool of one OpenMP thread per core by default. When another process keeps
some of those cores busy, every parallel op waits for the thread that lost its core, and the
whole command crawls (measured up to 47x slower, docs/performance.md). ``cvae train``, ``evaluate``,
``predict``, ``compare`` and ``report`` therefore count the CPUs this process may use and how many
of them other work keeps busy, and use the rest (at least one); ``--threads N`` or OMP_NUM_THREADS
choose instead. Sweep workers get cores / workers each.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

THREADS_SAMPLE_S = 0.25  # how long the CPUs' business is watched before the thread count is chosen


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cpus(seconds: float = THREADS_SAMPLE_S) -> float | None:
    """How many CPUs other work keeps busy right now: the non-idle share of /proc/stat's CPU time over
    ``seconds`` (this process sleeps meanwhile) times the CPUs; None where there is no /proc/stat."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """Intra-op threads for a command, and why. ``requested`` (``--threads``) wins, then an
    OMP_NUM_THREADS the user set; else the rule: the CPUs this process may use minus those other work
    keeps busy, rounded, at least 1. A thread of torch's pool that shares its core with another
    process makes every parallel op wait for it: measured up to 47x slower (docs/performance.md)."""
    cpus = usable_cpus()
    if requested is not None:
        return requested, "--threads"
    if os.environ.get("OMP_NUM_THREADS"):
        try:
            return max(1, int(os.environ["OMP_NUM_THREADS"])), "OMP_NUM_THREADS"
        except ValueError:
            pass
    busy = busy_cpus()
    if busy is None:
        return cpus, f"{cpus} CPUs"
    n = max(1, min(cpus, round(cpus - busy)))
    return n, f"{cpus} CPUs, {busy:.1f} busy with other work"


def use_threads(requested: int | None = None) -> tuple[int, str]:
    """Apply ``choose_threads``: OMP_NUM_THREADS for the OpenMP pool (read when torch loads) and
    torch's intra-op threads if torch is loaded already."""
    n, why = choose_threads(requested)
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n, why
