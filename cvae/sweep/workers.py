"""Sweep workers: processes that share one study, each running a trial at a time.

Workers on one machine start trials one at a time under a file lock, so K workers never start
more trials than the budget. A trial whose worker was stopped (Ctrl-C) or died is queued again
with the same values and resumes from its run folder's last checkpoint:

- Ctrl-C marks the running trial ``interrupted``; the next ``cvae sweep run`` queues it again;
- with an RDB storage the heartbeat stops when a worker dies; Optuna fails the trial after the
  grace period and queues a retry (``RetryHeartbeatStaleTrialCallback``);
- with the journal (no heartbeat) a worker that starts on the same machine finds trials whose
  process is gone (``worker`` attribute: ``host:pid:start time``) and queues them again.

The budget is the study's total number of trials: re-running the same command continues a study
until it has that many (a replaced trial counts once).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from cvae.errors import Stopped, sigterm_stops
from cvae.placement import child_env
from cvae.sweep.file import Sweep, budget
from cvae.sweep.study import (
    STORAGE_ENV,
    is_rdb,
    make_sampler,
    open_study,
    quiet_experimental,
    superseded,
)
from cvae.sweep.trial import make_objective

LOCK_NAME = ".workers.lock"
WORKER_SEED_STRIDE = 1000  # sampler seeds of workers of one run stay this far apart


def sampler_seed(seed: int, worker_index: int, trials_before: int) -> int:
    """The sampler seed of worker ``worker_index`` joining a study that already holds
    ``trials_before`` trials: distinct per worker and per continuation, so no two samplers ever
    replay the same proposals."""
    return seed + WORKER_SEED_STRIDE * worker_index + trials_before


# --------------------------------------------------------------------------- liveness and recovery


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks (Linux), telling a reused pid from the original."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_worker() -> str:
    """``host:pid:start``: the process start time tells a reused pid from the original."""
    return f"{socket.gethostname()}:{os.getpid()}:{_proc_start(os.getpid())}"


def alive(worker: str) -> bool:
    """Whether the worker process ``host:pid:start`` still runs (only knowable on its host)."""
    host, pid, start = (worker.split(":") + ["", "", ""])[:3]
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return _proc_start(int(pid)) == start


def recover(study, heartbeat: bool) -> list[int]:
    """Queue a resume for trials stopped by Ctrl-C and (without a heartbeat) trials whose worker
    on this host died; each continues from its run folder. Returns the numbers queued."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = superseded(trials)
    queued = []
    for t in trials:
        if t.number in done:
            continue
        dead = (
            not heartbeat
            and t.state == TrialState.RUNNING
            and "worker" in t.user_attrs
            and not alive(t.user_attrs["worker"])
        )
        if dead:
            optuna.trial.Trial(study, t._trial_id).set_user_attr("fail_reason", "its worker process died")
            study.tell(t.number, state=TrialState.FAIL)
        if dead or (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")):
            attrs = {"resume_of": t.number} | ({"label": t.user_attrs["label"]} if "label" in t.user_attrs else {})
            study.enqueue_trial(t.params, user_attrs=attrs)
            queued.append(t.number)
    return queued


def count_slots(trials) -> dict[str, int]:
    """Trials that take a place in the budget (replaced ones count once), waiting, running."""
    from optuna.trial import TrialState

    gone = superseded(trials)
    return {
        "slots": sum(1 for t in trials if t.number not in gone),
        "waiting": sum(1 for t in trials if t.state == TrialState.WAITING),
        "running": sum(1 for t in trials if t.state == TrialState.RUNNING),
    }


# --------------------------------------------------------------------------- workers


@dataclass
class RunOptions:
    url: str
    n_trials: int | None
    timeout: float | None
    worker_index: int = 0


def workers_lock(sweep: Sweep) -> FileLock:
    sweep.out_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(sweep.out_dir / LOCK_NAME)


def prepare(sweep: Sweep, url: str, console=None):
    """Create or load the study, queue resumes, make sure the data exists (once per machine)."""
    from cvae.data.root import ensure_data

    with workers_lock(sweep):
        study = open_study(sweep, url)
        queued = recover(study, heartbeat=is_rdb(url))
        if queued and console is not None:
            console.print(f"resuming stopped trial(s) {', '.join(map(str, queued))} from their checkpoints")
        ensure_data(sweep.base_spec(), console)
    return study


def run_worker(sweep: Sweep, opts: RunOptions, console=None, report=None, on_ready=None) -> None:
    """Optimize the shared study until its budget is spent (or the timeout passes).

    A worker that finds the budget taken while trials still run waits for them when the storage
    has a heartbeat: one may die and be retried. ``report(frozen_trial)`` is called after each
    trial this worker ran; ``on_ready()`` once the study exists.
    """
    import optuna
    from optuna.trial import TrialState

    if not os.environ.get("CVAE_DEBUG"):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = prepare(sweep, opts.url, console)
    if on_ready is not None:
        on_ready()
    heartbeat = is_rdb(opts.url)
    n_before = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(sweep, sampler_seed(sweep.spec.seed, opts.worker_index, n_before))
    limit = budget(sweep, opts.n_trials)
    deadline = time.monotonic() + opts.timeout if opts.timeout else math.inf
    lock = workers_lock(sweep)
    me = this_worker()
    objective = make_objective(sweep, sweep.study, lock, me)
    poll = min(sweep.spec.heartbeat.interval, 2)
    while time.monotonic() < deadline:
        lock.acquire()
        try:
            if heartbeat:
                with quiet_experimental():
                    optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            c = count_slots(trials)
            if c["waiting"] == 0 and limit is not None and c["slots"] >= limit:
                if heartbeat and c["running"]:
                    lock.release()
                    time.sleep(poll)
                    continue
                break
            before = {t.number for t in trials if t.state.is_finished()}  # an enqueued trial waits, unfinished
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        finally:
            lock.release()
        if report is not None:
            for t in study.get_trials(deepcopy=False):
                if t.number not in before and t.state != TrialState.RUNNING and t.user_attrs.get("worker") == me:
                    report(t)


def worker_command(sweep: Sweep, opts: RunOptions, index: int) -> list[str]:
    cmd = [sys.executable, "-m", "cvae.cli", "sweep", "run", str(sweep.path), "--workers", "1"]
    cmd += ["--study", sweep.study, "--dir", str(sweep.out_dir), "--worker-index", str(index), "--quiet"]
    if opts.n_trials is not None:
        cmd += ["--n-trials", str(opts.n_trials)]
    if opts.timeout is not None:
        cmd += ["--timeout", str(opts.timeout)]
    return cmd


def worker_env(opts: RunOptions, workers: int, gpu: str | None) -> dict[str, str]:
    """The environment of a worker process: the storage URL (not on the command line: it may hold a
    password), a share of the cores, and its GPU (``cvae.placement``)."""
    env = child_env(workers, gpu)
    env[STORAGE_ENV] = opts.url
    return env


def run_workers(
    sweep: Sweep, opts: RunOptions, workers: int, console, gpus: list[str] | None = None, report=None, on_ready=None
) -> int:
    """K worker processes on this machine, each optimizing the shared study (worker i on ``gpus[i]``
    when given); returns an exit code. ``report(frozen_trial)`` is called per finished trial,
    ``on_ready()`` once the study exists. Ctrl-C reaches every worker (one process group): each
    records its trial as interrupted, to resume on the next run."""
    import subprocess

    study = prepare(sweep, opts.url, console)
    if on_ready is not None:
        on_ready()
    gpus = gpus or [None] * workers
    procs = [
        subprocess.Popen(worker_command(sweep, opts, i), env=worker_env(opts, workers, gpus[i])) for i in range(workers)
    ]
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    with sigterm_stops():
        return _watch(study, procs, seen, report)


def _watch(study, procs, seen: set[int], report=None) -> int:
    """Wait for the workers, reporting each trial they finish (``report``); Ctrl-C (or SIGTERM) waits
    for them too: they record their trials as interrupted."""
    import subprocess

    try:
        while True:
            done = all(p.poll() is not None for p in procs)
            for t in study.get_trials(deepcopy=False) if report is not None else ():
                if t.state.is_finished() and t.number not in seen:
                    seen.add(t.number)
                    report(t)
            if done:
                break
            time.sleep(1)
    except KeyboardInterrupt as e:
        if isinstance(e, Stopped):  # a SIGTERM to this process only (a terminal's Ctrl-C reached them all)
            for p in procs:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.terminate()
        raise
    codes = [p.returncode for p in procs]
    return next((c for c in codes if c != 0), 0)
