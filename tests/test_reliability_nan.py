"""docs/reliability.md, promise 3: a NaN or infinite loss stops the run at once (exit 1), naming
the step and the last values, and the last good checkpoint stays loadable; with
``train.on_nan: skip_batch`` the batch is dropped instead. Runs use cvae.synth's tiny preset and
tiny widths (helpers.tiny_overrides).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    KILL,
    STEPS,
    Stop,
    StopAtEpochEnd,
    assert_same_training_state,
    history,
    leftovers,
    python,
    summary,
    tiny_overrides,
    without_perf,
    write_spec,
)

from cvae.errors import TrainingDiverged
from cvae.history import epoch_rows
from cvae.spec import load_spec
from cvae.training import checkpoint
from cvae.training.loop import train


@pytest.mark.slow
def test_cli_nan_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data, fault_script):
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data, **KILL))
    run = tmp_path / "run"
    r = python(fault_script, "nan_from_step", STEPS + 3, "train", spec, "--run-dir", run)
    assert r.returncode == 1, r.stdout + r.stderr
    failed = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "Traceback" not in r.stderr
    # The step, then the last values of loss, KL, beta and lr.
    for needle in (
        f"TrainingDiverged: non-finite loss at step {STEPS + 3}:",
        "loss nan",
        "kl nan",
        "beta 0.5",
        "lr 0.0001",
    ):
        assert needle in failed[0], failed[0]
    s = summary(run)
    assert s["status"] == "failed" and s["failure_reason"] == failed[0].removeprefix("failed: ")
    assert max(row["step"] for row in history(run)) == STEPS + 2  # the NaN step itself is not logged
    # The last good checkpoint (epoch 1) still loads, as evaluate loads it.
    from cvae.runs.evaluate import load_trained

    for name in ("last", "best"):
        trained = load_trained(run, name)
        assert trained.epoch == 1 and all(torch.isfinite(p).all() for p in trained.model.parameters())
    assert leftovers(run) == []


def poison(monkeypatch, bad_steps, first_step: int = 0) -> dict:
    """Make the clips of the given optimizer steps NaN (counted from ``first_step``)."""
    import cvae.training.step

    real = getattr(cvae.training.step.loss_and_gradients, "unpoisoned", cvae.training.step.loss_and_gradients)
    count = {"step": first_step}

    def loss_and_gradients(model, x, *args, **kwargs):
        count["step"] += 1
        if bad_steps(count["step"]):
            x = x * math.nan
        return real(model, x, *args, **kwargs)

    loss_and_gradients.unpoisoned = real
    monkeypatch.setattr(cvae.training.step, "loss_and_gradients", loss_and_gradients)
    return count


def test_skip_batch_drops_the_update(tmp_path, tiny_data, monkeypatch):
    """Every batch NaN, the limit above them all: not one weight and no optimizer state changes."""
    from cvae.model import build_model

    spec = load_spec(
        None,
        tiny_overrides(
            tiny_data, **{**KILL, "train.epochs": 1, "train.on_nan": "skip_batch", "train.max_skipped_batches": 100}
        ),
    )
    poison(monkeypatch, lambda step: True)
    train(spec, tmp_path / "run")
    torch.manual_seed(spec.seed)
    initial = dict(build_model(spec).named_parameters())
    ck = checkpoint.load(tmp_path / "run/checkpoints/last.pt")
    for name, p in initial.items():
        assert torch.equal(ck["model"][name], p.detach()), name
    assert ck["optimizer"]["state"] == {} and ck["skipped_batches"] == STEPS
    rows = [r for r in history(tmp_path / "run") if "epoch/loss" not in r]
    assert [r["train/skipped_batches"] for r in rows] == list(range(1, STEPS + 1))
    assert not any("train/loss" in r for r in rows)  # no NaN in the history


def test_skip_batch_stops_past_the_limit(tmp_path, tiny_data, monkeypatch):
    spec = load_spec(
        None, tiny_overrides(tiny_data, **KILL, **{"train.on_nan": "skip_batch", "train.max_skipped_batches": 2})
    )
    poison(monkeypatch, lambda step: step >= 2)
    with pytest.raises(
        TrainingDiverged,
        match=r"non-finite loss at step 4: .*beta 0, lr 0.001; 3 batches skipped, "
        r"more than train.max_skipped_batches \(2\)",
    ):
        train(spec, tmp_path / "run")
    s = summary(tmp_path / "run")
    assert s["status"] == "failed" and "train.max_skipped_batches" in s["failure_reason"]
    assert [r["train/skipped_batches"] for r in history(tmp_path / "run")] == [0, 1, 2]


@pytest.mark.slow
def test_skip_batch_resume_is_exact(tmp_path, tiny_data, monkeypatch):
    """Two NaN batches (one per epoch), skipped: a run stopped after epoch 1 and resumed ends
    bit-identical to one that was never stopped, with the skip count carried over."""

    spec = load_spec(None, tiny_overrides(tiny_data, **KILL, **{"train.on_nan": "skip_batch"}))
    bad = {3, STEPS + 2}.__contains__
    poison(monkeypatch, bad)
    train(spec, tmp_path / "A")
    poison(monkeypatch, bad)
    with pytest.raises(Stop):
        train(spec, tmp_path / "B", callbacks=[StopAtEpochEnd(1)])
    assert checkpoint.load(tmp_path / "B/checkpoints/last.pt")["skipped_batches"] == 1
    poison(monkeypatch, bad, first_step=STEPS)  # the resumed run starts at step 7
    train(spec, tmp_path / "B", resume=True)
    assert_same_training_state(tmp_path / "A/checkpoints/last.pt", tmp_path / "B/checkpoints/last.pt")
    assert checkpoint.load(tmp_path / "B/checkpoints/last.pt")["skipped_batches"] == 2
    assert without_perf(history(tmp_path / "A")) == without_perf(history(tmp_path / "B"))
    assert epoch_rows(history(tmp_path / "B"))[-1]["train/skipped_batches"] == 2
