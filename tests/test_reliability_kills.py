"""docs/reliability.md, promises 1 and 1b: a training run killed at any point (SIGKILL) resumes
with `cvae train --resume` to the same weights, history and W&B run as a run never stopped; SIGTERM
(W&B's early termination) and Ctrl-C stop it cleanly, and it resumes.

The kill tests run the real CLI in a subprocess and signal it from inside: conftest's
``fault_script`` (helpers.FAULT_SCRIPT) patches one function to signal its own process at a chosen
point. Runs use cvae.synth's tiny preset and tiny widths (helpers.tiny_overrides).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import (
    KILL,
    STEPS,
    assert_same_training_state,
    cvae,
    history,
    leftovers,
    python,
    summary,
    tiny_overrides,
    without_perf,
    write_spec,
)

from cvae.history import epoch_rows
from cvae.spec import load_spec
from cvae.training import checkpoint
from cvae.training.loop import train


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_data) -> Path:
    """The reference: the same spec trained in one go (in-process, W&B off)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(load_spec(None, tiny_overrides(tiny_data, **KILL)), run)
    return run


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, n",
    [
        ("step", STEPS + 3),  # inside epoch 2
        ("epoch_start", 2),  # between epochs 1 and 2
        ("after_checkpoint", 1),  # last.pt of epoch 1 written, its summary not yet
        ("checkpoint_rename", 2),  # inside the write of epoch 2's last.pt
        ("after_checkpoint", 2),  # the last epoch's checkpoint written, the run not yet closed
    ],
    ids=["mid-epoch", "between-epochs", "after-checkpoint", "inside-checkpoint-write", "before-finish"],
)
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    tmp_path, tiny_data, uninterrupted, fault_script, wandb_env, where, n
):
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data, **KILL, **{"tracking.wandb.mode": "offline"}))
    run = tmp_path / "run"
    killed = python(fault_script, where, n, "train", spec, "--run-dir", run, env=wandb_env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_id = (run / "wandb_run_id.txt").read_text().strip()
    if where == "checkpoint_rename":
        assert (run / "checkpoints/last.pt.tmp").exists()  # the kill landed inside checkpoint.save
        assert checkpoint.load(run / "checkpoints/last.pt")["epoch"] == 1  # last.pt: the old, complete one

    resumed = cvae("train", "--resume", run, env=wandb_env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    # Weights, optimizer, scheduler, counters: bit-identical to the uninterrupted run.
    assert_same_training_state(run / "checkpoints/last.pt", uninterrupted / "checkpoints/last.pt")
    assert_same_training_state(run / "checkpoints/best.pt", uninterrupted / "checkpoints/best.pt")
    # The local history: every step and every epoch exactly once, the same values.
    assert without_perf(history(run)) == without_perf(history(uninterrupted))
    assert [r["epoch"] for r in epoch_rows(history(run))] == [1, 2]
    assert summary(run) == summary(uninterrupted) and summary(run)["status"] == "finished"
    assert leftovers(run) == []

    # W&B: one run id across both starts; its history ends with every epoch once, steps increasing.
    from wandb_offline import read_offline_run

    assert (run / "wandb_run_id.txt").read_text().strip() == run_id
    wb = read_offline_run(run)
    assert wb["run_id"] == run_id and {p.stem for p in wb["segments"]} == {f"run-{run_id}"}
    assert len(wb["segments"]) == 2 and wb["state"] == "finished"
    steps = [row["_step"] for row in wb["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * STEPS
    assert [row["epoch"] for row in wb["history"] if "epoch/loss" in row] == [1, 2]
    assert wb["summary"]["status"] == "finished" and wb["summary"]["epochs_done"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, n, code",
    [
        ("term:step", 3, 143),  # inside epoch 1: no epoch checkpoint yet
        ("term:validation", 1, 143),  # epoch 1 trained, validating
        ("term:checkpoint_rename", 2, 143),  # inside the write of epoch 2's last.pt
        ("int:step", STEPS + 3, 130),  # Ctrl-C inside epoch 2
    ],
    ids=["sigterm-epoch-1", "sigterm-validation", "sigterm-checkpoint-write", "ctrl-c"],
)
def test_sigterm_and_ctrl_c_stop_cleanly_and_the_run_resumes(
    tmp_path, tiny_data, uninterrupted, fault_script, wandb_env, where, n, code
):
    """SIGTERM (W&B's early termination, its stop button) and Ctrl-C end a run as `stopped`: the
    summary and the W&B run say so, the W&B run is closed (finished, not crashed), no half-written
    file is left, and `cvae train --resume` ends where an uninterrupted run ends."""
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data, **KILL, **{"tracking.wandb.mode": "offline"}))
    run = tmp_path / "run"
    stopped = python(fault_script, where, n, "train", spec, "--run-dir", run, env=wandb_env)
    assert stopped.returncode == code, stopped.stdout + stopped.stderr
    how = "SIGTERM" if where.startswith("term") else "Ctrl-C"
    assert f"stopped ({how})" in stopped.stderr and "Traceback" not in stopped.stderr
    s = summary(run)
    assert s["status"] == "stopped" and s["stop_reason"].startswith(how) and "failure_reason" not in s
    assert leftovers(run) == []
    from wandb_offline import read_offline_run

    wb = read_offline_run(run)
    assert wb["state"] == "finished" and wb["summary"]["status"] == "stopped"  # closed, not crashed
    resumed = cvae("train", "--resume", run, env=wandb_env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_same_training_state(run / "checkpoints/last.pt", uninterrupted / "checkpoints/last.pt")
    assert without_perf(history(run)) == without_perf(history(uninterrupted))
    assert summary(run)["status"] == "finished" and "stop_reason" not in summary(run)
    after = read_offline_run(run)
    assert after["state"] == "finished" and after["preempting"] is (how == "SIGTERM")  # a W&B sweep may requeue
    # one W&B run, even when it was stopped before its first checkpoint and trained again from the start
    assert len({p.stem for p in (run / "wandb").glob("*/run-*.wandb")}) == 1
