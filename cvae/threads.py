"""How many threads a command's torch uses, on a machine it may share with other work.

torch's CPU ops run on a pool of one OpenMP thread per core by default. When another process keeps
some of those cores busy, every parallel op waits for the thread that lost its core, and the whole
command crawls (docs/performance.md, "Threads on a shared machine", has the measurements). ``cvae
train``, ``evaluate``, ``predict``, ``compare`` and ``report`` therefore count the CPUs this process
may use and how many of them other work keeps busy, and use the rest (at least one); ``--threads
N`` or OMP_NUM_THREADS choose instead. Sweep workers get cores / workers each.
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
    """How many of the CPUs this process may use other work keeps busy right now: each CPU's non-idle
    share of /proc/stat's time over ``seconds`` (this process sleeps meanwhile), summed over the
    CPUs of its affinity; None where there is no /proc/stat."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = None

    def sample() -> dict[int, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if not (name.startswith("cpu") and name[3:].isdigit()):
                continue
            fields = [int(v) for v in values]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
            out[int(name[3:])] = (sum(fields[:8]), idle)
        return out

    try:
        first = sample()
        time.sleep(seconds)
        second = sample()
    except (OSError, ValueError, IndexError):
        return None
    busy, seen = 0.0, 0
    for cpu, (total1, idle1) in second.items():
        if (cpus is not None and cpu not in cpus) or cpu not in first:
            continue
        total0, idle0 = first[cpu]
        if total1 > total0:
            busy += 1 - (idle1 - idle0) / (total1 - total0)
            seen += 1
    return busy if seen else None


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """Intra-op threads for a command, and why. ``requested`` (``--threads``) wins, then an
    OMP_NUM_THREADS the user set; else the rule: the CPUs this process may use minus those other work
    keeps busy, rounded, at least 1. A thread of torch's pool that shares its core with another
    process makes every parallel op wait for it."""
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


def per_worker(workers: int) -> int:
    """Threads of each of ``workers`` processes sharing this machine's CPUs (sweep workers, the runs of
    ``cvae sweep confirm`` and ``cvae report --reproduce``): a core each, not every core each."""
    return max(1, usable_cpus() // workers)


def use_threads(requested: int | None = None) -> tuple[int, str]:
    """Apply ``choose_threads``: OMP_NUM_THREADS for the OpenMP pool (read when torch loads) and
    torch's intra-op threads if torch is loaded already."""
    n, why = choose_threads(requested)
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n, why
