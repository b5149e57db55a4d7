"""Sweep faults (docs/reliability.md, promise 4): raising and diverging trials fail with their
reason and the study goes on; a worker killed with -9 is retried from its checkpoint; Ctrl-C stops
cleanly and a rerun resumes; a journal trial of a dead worker is queued again; a Ctrl-C during a
storage write waits for the write. Trials are tiny (seconds each); the workers are real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SEARCH, assert_ok, cvae, subprocess_env, trials_of, write_sweep

from cvae.sweep.trial import run_epoch_rows as epoch_rows


@pytest.mark.slow
def test_raising_and_diverging_trials_fail_with_reason(tmp_path, tiny_data):
    """Grid over a clip longer than the training videos (raises) and a beta of 1e300 (the loss is
    inf): those trials fail with their reason, the others complete, the command succeeds."""
    sweep = {
        "overrides": {"train.epochs": 1, "kl_annealing.type": "none"},  # beta = max_beta from the first step
        "search": {
            "data.clip_len": {"type": "categorical", "choices": [4, 30]},
            "kl_annealing.max_beta": {"type": "categorical", "choices": [1.0, 1e300]},
        },
        "sampler": {"type": "grid"},
        "pruner": {"type": "none"},
    }
    path = write_sweep(tmp_path, tiny_data, sweep)
    r = cvae("sweep", "run", path, "--dir", tmp_path / "out")
    assert_ok(r)
    trials = trials_of(str(tmp_path / "out" / "optuna.journal"), "sweep")
    assert len(trials) == 4
    by_params = {(t.params["data.clip_len"], t.params["kl_annealing.max_beta"]): t for t in trials}
    assert by_params[(4, 1.0)].state.name == "COMPLETE"
    diverged = by_params[(4, 1e300)]
    assert diverged.state.name == "FAIL"
    assert diverged.user_attrs["fail_reason"].startswith("TrainingDiverged: non-finite loss")
    for beta in (1.0, 1e300):
        t = by_params[(30, beta)]
        assert t.state.name == "FAIL" and "DataError" in t.user_attrs["fail_reason"], t.user_attrs
    assert "TrainingDiverged" in r.stdout  # said on the trial's line


def _wait_for_epochs(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run has logged n epochs and written a checkpoint."""
    deadline = time.monotonic() + timeout
    while len(epoch_rows(run_dir)) < n or not (run_dir / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no epoch {n} in {run_dir}"
        time.sleep(0.05)


FAULT_EPOCHS = 6  # long enough that a signal sent after epoch 1 lands inside the trial, even on a loaded CI machine


def _fault_sweep(tmp_path: Path, data: Path, **extra) -> Path:
    sweep = {
        "overrides": {"train.epochs": FAULT_EPOCHS},
        "search": SEARCH,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2},
        "study": "sweep",
        "heartbeat": {"interval": 1, "grace_period": 3, "max_retry": 2},
    } | extra
    return write_sweep(tmp_path, data, sweep)


def _assert_resumed(trials, stopped_epochs: list[dict]) -> None:
    """Two budget slots, the stopped trial replaced once, the replacement's history holding every
    epoch exactly once: those of the stopped trial up to its last checkpoint (the same rows: not
    trained again), then the rest."""
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2 and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    resumed = [t for t in complete if "resumed_from" in t.user_attrs]
    assert len(resumed) == 1, [(t.number, t.state.name, t.user_attrs) for t in trials]
    t = resumed[0]
    assert t.params == next(s.params for s in trials if s.number == t.user_attrs["resumed_from"])
    rows = epoch_rows(Path(t.user_attrs["run_dir"]))
    assert [r["epoch"] for r in rows] == list(range(1, FAULT_EPOCHS + 1))
    kept = 0
    while kept < len(stopped_epochs) and rows[kept] == stopped_epochs[kept]:
        kept += 1
    # The stopped run's epochs up to its checkpoint (at most the one in flight is trained again).
    assert kept >= 1 and kept >= len(stopped_epochs) - 1, (kept, len(stopped_epochs))
    assert sorted(t.intermediate_values) == list(range(1, FAULT_EPOCHS + 1))


@pytest.mark.slow
def test_kill_9_worker_is_retried_from_checkpoint(tmp_path, tiny_data):
    """SQLite + heartbeat: the killed worker's trial goes stale, is failed and retried by the
    restarted worker, continuing from the killed trial's last checkpoint."""
    path = _fault_sweep(tmp_path, tiny_data)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    cmd = [
        sys.executable,
        "-m",
        "cvae.cli",
        "sweep",
        "run",
        str(path),
        "--storage",
        url,
        "--dir",
        str(tmp_path / "out"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env())
    run0 = tmp_path / "out" / "trials" / "0"
    _wait_for_epochs(run0, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = epoch_rows(run0)
    assert trials_of(url, "sweep")[0].state.name == "RUNNING"  # nobody told the study
    r = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert_ok(r)
    trials = trials_of(url, "sweep")
    assert trials[0].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].user_attrs["resumed_from"] == 0
    _assert_resumed(trials, killed)
    st = json.loads(cvae("sweep", "status", path, "--storage", url, "--dir", tmp_path / "out", "--json").stdout)
    assert st["replaced"] == [0] and st["states"]["COMPLETE"] == 2 and st["running"] == []


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_rerun_resumes(tmp_path, tiny_data):
    """Journal storage: Ctrl-C ends the command (exit 130) with its trial recorded as interrupted;
    the next run resumes that trial from its checkpoint, then finishes the budget."""
    path = _fault_sweep(tmp_path, tiny_data)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cvae.cli", "sweep", "run", str(path), "--dir", str(out)]
    # A shell's background job (CI runners, nohup) starts with SIGINT ignored and Python keeps it
    # ignored; a user's terminal does not. Give the worker a terminal's default.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_epochs(out / "trials" / "0", 1, proc)
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "interrupted" in text
    url = str(out / "optuna.journal")
    t0 = trials_of(url, "sweep")[0]
    assert t0.state.name == "FAIL" and t0.user_attrs["interrupted"] is True
    stopped = epoch_rows(out / "trials" / "0")
    r = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert_ok(r)
    assert "resuming stopped trial(s) 0" in r.stdout
    _assert_resumed(trials_of(url, "sweep"), stopped)


def test_journal_trial_of_a_dead_worker_is_queued_again(tmp_path):
    """No heartbeat on a journal file: a RUNNING trial whose worker process on this host is gone
    is failed (with the reason) and queued again with its values, to resume from its folder."""
    import optuna

    from cvae.sweep.study import open_storage
    from cvae.sweep.workers import count_slots, recover, this_worker

    study = optuna.create_study(storage=open_storage(str(tmp_path / "j.journal")), study_name="s")
    dead = study.ask()
    dead.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    host = this_worker().split(":")[0]
    dead.set_user_attr("worker", f"{host}:{2**22 + 17}:0")  # above the largest pid Linux hands out
    alive = study.ask()
    alive.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    alive.set_user_attr("worker", this_worker())
    assert recover(study, heartbeat=False) == [dead.number]
    trials = study.get_trials(deepcopy=False)
    assert trials[dead.number].state.name == "FAIL"
    assert trials[dead.number].user_attrs["fail_reason"] == "its worker process died"
    assert trials[alive.number].state.name == "RUNNING"
    queued = trials[-1]
    assert queued.state.name == "WAITING" and queued.user_attrs["resume_of"] == dead.number
    assert queued.system_attrs["fixed_params"] == trials[dead.number].params  # the values it will run with
    assert count_slots(trials) == {"slots": 2, "waiting": 1, "running": 1}  # the replaced trial counts once
    assert recover(study, heartbeat=False) == []  # queued once only


def test_a_ctrl_c_during_the_trials_storage_write_waits_for_the_write(tmp_path):
    """Ctrl-C landing inside Optuna's journal write (its file lock half released) once failed the trial
    with a FileNotFoundError and lost the stop: a stop now waits until the storage call has returned."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from cvae.sweep.trial import PruningCallback

    class CtrlCWhileAsked(optuna.pruners.BasePruner):
        returned = False

        def prune(self, study, trial) -> bool:
            os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, mid-way through the storage's work
            study.get_trials(deepcopy=False)  # more storage work after it
            CtrlCWhileAsked.returned = True
            return False

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    study = optuna.create_study(storage=storage, direction="maximize", pruner=CtrlCWhileAsked())
    trial = study.ask()
    # Ctrl-C as a terminal delivers it (pytest-xdist's workers ignore SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            PruningCallback(trial, "val/psnr", tmp_path, epochs=4).on_epoch_end(1, {"val/psnr": 20.0})
    finally:
        signal.signal(signal.SIGINT, previous)
    assert CtrlCWhileAsked.returned  # the pruner's storage work finished before the stop arrived
    (frozen,) = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert frozen.intermediate_values == {1: 20.0}
