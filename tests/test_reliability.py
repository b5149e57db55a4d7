"""The promises of docs/reliability.md: kills, damaged checkpoints, NaN, a full disk, bad input, secrets.

Each section names the promise it backs. Runs use cvae.synth's tiny preset and tiny widths
(conftest.tiny_overrides); the kill tests run the real CLI in a subprocess and SIGKILL it from
inside (a small wrapper script patches one function to kill its own process at a chosen point).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from helpers import Stop, StopAtEpochEnd, cvae, python, snapshot, subprocess_env, tiny_overrides, write_spec
from typer.testing import CliRunner

from cvae.errors import CheckpointError, TrainingDiverged
from cvae.spec import load_spec
from cvae.training import checkpoint
from cvae.training.loop import train

STEPS = 6  # tiny preset, data.partial 0.5: 12 clips of 4 frames, batch 2 -> 6 steps per epoch
KILL = {"train.epochs": 2, "data.partial": 0.5, "optim.milestones": [1]}  # epoch 2 crosses the LR milestone


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


def without_perf(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def epoch_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "epoch/loss" in r]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(a: Path, b: Path) -> None:
    """Two checkpoints hold bit-identical weights, optimizer and scheduler state and counters."""
    ca, cb = load_ckpt(a), load_ckpt(b)
    assert ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert ca["scheduler"] == cb["scheduler"]
    assert (ca["epoch"], ca["step"], ca["best_psnr"]) == (cb["epoch"], cb["step"], cb["best_psnr"])


def leftovers(root: Path) -> list[Path]:
    """Temporary files a write left behind."""
    return sorted(p for p in root.rglob("*") if ".tmp" in p.name and "wandb" not in p.parts)


# A wrapper around the CLI that plants one fault: `python fault.py WHERE N cvae-args...`.
FAULT_SCRIPT = r"""
import math, os, signal, sys

where, n = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
sys.argv[0] = "cvae"
calls = [0]
# "term:WHERE" sends SIGTERM (a clean stop: W&B's early termination) and "int:WHERE" SIGINT (Ctrl-C)
# at the point instead of SIGKILL.
sig, _, where = where.rpartition(":")
SIGNAL = {"term": signal.SIGTERM, "int": signal.SIGINT}.get(sig, signal.SIGKILL)
# Python ignores SIGINT in a process started with it ignored (a shell's background job): a user's
# Ctrl-C reaches a terminal's foreground job, so take it as the CLI in a terminal does.
signal.signal(signal.SIGINT, signal.default_int_handler)


def nth():
    calls[0] += 1
    return calls[0] == n


def kill_at_nth_call(module, name):
    # the signal as the n-th call of module.name begins
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        if nth():
            kill()
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


def kill():
    os.kill(os.getpid(), SIGNAL)


import cvae.data.clips
import cvae.training.checkpoint
import cvae.training.loop
import cvae.training.step

if where == "step":  # SIGKILL at the start of optimizer step n (inside an epoch)
    kill_at_nth_call(cvae.training.step, "loss_and_gradients")
elif where == "epoch_start":  # SIGKILL as epoch n begins (between epochs)
    kill_at_nth_call(cvae.data.clips, "epoch_batches")
elif where == "after_checkpoint":  # SIGKILL right after the n-th last.pt is complete
    save = cvae.training.checkpoint.save

    def save_then_kill(path, state, keep_previous=False):
        save(path, state, keep_previous)
        if path.name == "last.pt" and nth():
            kill()

    cvae.training.checkpoint.save = save_then_kill
elif where == "checkpoint_rename":  # SIGKILL inside checkpoint.save: tmp written, prev.pt kept, not renamed
    replace = os.replace

    def replace_or_kill(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)) == "last.pt" and nth():
            kill()
        return replace(src, dst, *args, **kwargs)

    os.replace = replace_or_kill
elif where == "validation":  # the n-th validation begins
    kill_at_nth_call(cvae.training.loop, "validate_model")
elif where == "nan_from_step":  # the clips of step n and later are NaN: a real non-finite loss
    step = cvae.training.step.loss_and_gradients

    def loss_and_gradients(model, x, *args, **kwargs):
        calls[0] += 1
        if calls[0] >= n:
            x = x * math.nan
        return step(model, x, *args, **kwargs)

    cvae.training.step.loss_and_gradients = loss_and_gradients
else:
    sys.exit(f"unknown fault {where}")

from cvae.cli import main

main()
"""


@pytest.fixture
def fault_script(tmp_path) -> Path:
    path = tmp_path / "fault.py"
    path.write_text(FAULT_SCRIPT)
    return path


@pytest.fixture
def wandb_env(tmp_path) -> dict[str, str]:
    """CLI environment with W&B offline and all its folders in tmp; no sweep agent."""
    env = subprocess_env(WANDB_MODE="offline")
    for var in (
        "WANDB_SWEEP_ID",
        "WANDB_SWEEP_PARAM_PATH",
        "WANDB_RUN_ID",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "WANDB_RESUME",
        "WANDB_NAME",
        "WANDB_DISABLED",
        "WANDB_API_KEY",
    ):
        env.pop(var, None)
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        env[var] = str(tmp_path / "wandb-home" / var.lower())
    return env


# =========================================================================== 1. SIGKILL, then --resume


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


# =========================================================================== 2. damaged checkpoints


def flip_a_weight_byte(path: Path) -> None:
    """Flip one byte inside the first tensor stored in a checkpoint (not in zip padding)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 4)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        pos = info.header_offset + 30 + name_len + extra_len + 1
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0x10]))


def test_a_flipped_weight_byte_is_an_error(tmp_path, trained_run):
    """torch.load alone would load the wrong weight; the CRC check refuses the file."""
    path = tmp_path / "last.pt"
    shutil.copy(trained_run / "checkpoints/last.pt", path)
    flip_a_weight_byte(path)
    with pytest.raises(CheckpointError, match="checksum mismatch") as e:
        checkpoint.load(path)
    assert str(path) in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "flipped-byte"])
def test_cli_resume_falls_back_to_prev(request, trained_run, damage):
    """last.pt damaged: `cvae train --resume` warns, resumes from prev.pt (epoch 1), and ends where the
    undamaged run ended."""
    run = request.getfixturevalue("run_copy")
    last = run / "checkpoints/last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    else:
        flip_a_weight_byte(last)
    r = cvae("train", "--resume", run, cwd=run.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join((r.stdout + r.stderr).split())  # rich may wrap the warning
    assert f"warning: {last}" in out and f"resuming from {run / 'checkpoints/prev.pt'}" in out
    assert_same_training_state(last, trained_run / "checkpoints/last.pt")
    assert without_perf(history(run)) == without_perf(history(trained_run))
    assert leftovers(run) == []


# (The bad-input table below also covers: evaluate on a truncated last.pt, a flipped byte in best.pt,
# an empty best.pt, and resume with both last.pt and prev.pt damaged: exit 2, nothing written.)


# =========================================================================== 3. NaN / inf loss


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
    ck = load_ckpt(tmp_path / "run/checkpoints/last.pt")
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
    assert load_ckpt(tmp_path / "B/checkpoints/last.pt")["skipped_batches"] == 1
    poison(monkeypatch, bad, first_step=STEPS)  # the resumed run starts at step 7
    train(spec, tmp_path / "B", resume=True)
    assert_same_training_state(tmp_path / "A/checkpoints/last.pt", tmp_path / "B/checkpoints/last.pt")
    assert load_ckpt(tmp_path / "B/checkpoints/last.pt")["skipped_batches"] == 2
    assert without_perf(history(tmp_path / "A")) == without_perf(history(tmp_path / "B"))
    assert epoch_rows(history(tmp_path / "B"))[-1]["train/skipped_batches"] == 2


# =========================================================================== 5. disk full


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk (needs root; skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill the disk until about ``leave`` bytes are free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    path = disk / "filler"
    with open(path, "ab") as f:
        f.write(b"\0" * max(0, free - leave))
    return path


@pytest.mark.slow
def test_disk_full_at_the_first_checkpoint(tmp_path, tiny_data, trained_run, small_disk):
    size = (trained_run / "checkpoints/last.pt").stat().st_size
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data))
    fill(small_disk, size // 2)
    run = small_disk / "run"
    r = cvae("train", spec, "--run-dir", run, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    failed = [line for line in r.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "Traceback" not in r.stderr
    assert f"OSError: [Errno {errno.ENOSPC}] No space left on device" in failed[0]
    assert str(run / "checkpoints/best.pt") in failed[0]
    assert not (run / "checkpoints/last.pt").exists() and not (run / "checkpoints/best.pt").exists()
    assert leftovers(run) == []


@pytest.mark.slow
def test_disk_full_later_keeps_the_old_checkpoint_and_resume_finishes(tmp_path, tiny_data, trained_run, small_disk):
    """Epoch 1 fits, epoch 2's checkpoint does not: last.pt stays epoch 1's; free space, resume, and
    the run ends bit-identical to one that never hit the full disk."""
    size = (trained_run / "checkpoints/last.pt").stat().st_size
    spec = write_spec(tmp_path / "spec.yaml", tiny_overrides(tiny_data))
    filler = fill(small_disk, 5 * size // 2)  # two checkpoints and the media of epoch 1, not a third
    run = small_disk / "run"
    r = cvae("train", spec, "--run-dir", run, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "No space left on device" in r.stderr and str(run / "checkpoints") in r.stderr
    assert checkpoint.load(run / "checkpoints/last.pt")["epoch"] == 1
    assert leftovers(run) == []
    filler.unlink()
    r = cvae("train", "--resume", run, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_training_state(run / "checkpoints/last.pt", trained_run / "checkpoints/last.pt")
    assert without_perf(history(run)) == without_perf(history(trained_run))
    assert summary(run)["status"] == "finished"


# imageio's GIF writer, left open by the failed write, tries to flush again when collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_disk_full_while_writing_media(tmp_path, tiny_data, small_disk, monkeypatch):
    import cvae.tracking.media

    real = cvae.tracking.media.write_gif

    def write_gif_on_a_full_disk(path, frames, *args, **kwargs):
        fill(small_disk, 0)
        return real(path, frames, *args, **kwargs)

    monkeypatch.setattr(cvae.tracking.media, "write_gif", write_gif_on_a_full_disk)
    run = small_disk / "run"
    with pytest.raises(OSError) as e:
        train(load_spec(None, tiny_overrides(tiny_data, **KILL)), run)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(run / "media/val_epoch001.gif")
    assert leftovers(run) == [] and not (run / "checkpoints/last.pt").exists()
    assert checkpoint.load(run / "checkpoints/best.pt")["epoch"] == 1  # written before the media: complete


# =========================================================================== 6. bad input: exit 2, nothing written

# One table: each case makes one thing wrong in a valid workspace and gives the command line.
# `ws` holds a valid 8x12 dataset (ws/data) and spec (ws/spec.yaml) (tests/test_cli.py's
# `workspace`); `run` is a finished tiny run (test_cli's `run_copy`) for the cases that need one.
# Cases tests/test_cli.py already runs are listed in docs/reliability.md and not repeated here.
BAD_INPUT = []


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def case(name: str, *needles: str, run: bool = False, marks=()):
    """Register a bad-input case: the decorated function breaks something and returns the CLI args."""

    def register(setup):
        BAD_INPUT.append(pytest.param(setup, needles, run, id=name, marks=marks))
        return setup

    return register


def _edit(ws: Path, key: str, value) -> Path:
    """Set a dotted key of ws/spec.yaml (a section may be replaced by a scalar)."""
    data = yaml.safe_load((ws / "spec.yaml").read_text())
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    (ws / "spec.yaml").write_text(yaml.safe_dump(data))
    return ws / "spec.yaml"


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def _train(ws: Path, *args) -> list:
    return ["train", *args, "--run-dir", ws / "run"]


def _sweep(ws: Path, text: str) -> list:
    return ["sweep", "run", _write(ws / "sweep.yaml", "base: spec.yaml\n" + text), "--dir", ws / "sweep-out"]


SEARCH_LR = "search:\n  optim.lr: {type: float, low: 0.0001, high: 0.01, log: true}\nbudget: {n_trials: 2}\n"


# --- spec files
@case("spec-not-a-mapping", "list.yaml", "must be a mapping")
def _(ws, run):
    return _train(ws, _write(ws / "list.yaml", "- 1\n- 2\n"))


@case("spec-not-text", "bin.yaml", "not a text file")
def _(ws, run):
    return _train(ws, _write(ws / "bin.yaml", b"\xff\xfe\x00\x81"))


@case("spec-extends-missing", "nope.yaml", "not found")
def _(ws, run):
    return _train(ws, _write(ws / "child.yaml", "extends: nope.yaml\n"))


@case("spec-extends-loop", "a.yaml", "loops back")
def _(ws, run):
    _write(ws / "b.yaml", "extends: a.yaml\n")
    return _train(ws, _write(ws / "a.yaml", "extends: b.yaml\n"))


@case("spec-section-given-a-scalar", "spec.yaml", "`train` is a section")
def _(ws, run):
    return _train(ws, _edit(ws, "train", 3))


@case("spec-wrong-type", "spec.yaml", "train.epochs", "'three'")
def _(ws, run):
    return _train(ws, _edit(ws, "train.epochs", "three"))


@case("spec-unsafe-name", "`name`", "letters, digits", "'../../etc'")
def _(ws, run):
    return _train(ws, _edit(ws, "name", "../../etc"))


@case("spec-width-not-a-multiple", "model.frame_dim", "multiple of 8", "12")
def _(ws, run):
    return _train(ws, _edit(ws, "model.frame_dim", 12))


@case("spec-bad-device", "train.device", "auto, cpu, cuda", "'tpu'")
def _(ws, run):
    return _train(ws, _edit(ws, "train.device", "tpu"))


@case("spec-device-unavailable", "train.device", "'cuda'", "CUDA is not available", "auto, cpu", marks=NO_CUDA)
def _(ws, run):
    return _train(ws, _edit(ws, "train.device", "cuda"))


# --- overrides
@case("override-without-value", "train.epochs", "key=value")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "train.epochs")


@case("override-replaces-a-section", "override `train`", "unknown key")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "train=3")


@case("override-frame-size-3", "data.frame_size", "at least (4, 4)", "[3, 64]")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "data.frame_size=[3,64]")


@case("override-bad-choice", "kl_annealing.type", "'cyclical', 'monotonic' or 'none'", "sigmoid")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--kl_annealing.type=sigmoid")


@case("override-wandb-mode", "tracking.wandb.mode", "'offline'", "sometimes")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "tracking.wandb.mode=sometimes")


@case("override-on-nan", "train.on_nan", "'stop' or 'skip_batch'", "ignore")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "train.on_nan=ignore")


@case("override-negative-skip-limit", "train.max_skipped_batches", "greater than or equal to 0")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--train.max_skipped_batches=-1")


@case("override-not-a-list", "optim.milestones", "'abc'")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "optim.milestones=abc")


@case("stray-argument", "'extra'", "--key=value")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "extra")


# --- dataset folders
@case("data-missing-split", "data/val/val_img", "folder missing")
def _(ws, run):
    shutil.rmtree(ws / "data/val")
    return _train(ws, ws / "spec.yaml")


@case("data-missing-pose-folder", "data/val/val_label", "pose folder missing")
def _(ws, run):
    shutil.rmtree(ws / "data/val/val_label")
    return _train(ws, ws / "spec.yaml")


@case("data-empty-folder", "data/val/val_img", "no PNG frames")
def _(ws, run):
    for png in (ws / "data/val").rglob("*.png"):
        png.unlink()
    return _train(ws, ws / "spec.yaml")


@case("data-files-beside-video-folders", "data/train/train_img", "both PNG files and video subfolders")
def _(ws, run):
    shutil.copy(ws / "data/train/train_img/a/frame0.png", ws / "data/train/train_img/frame0.png")
    return _train(ws, ws / "spec.yaml")


@case("data-root-is-a-file", "f/train/train_img", "folder missing")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", f"data.root={_write(ws / 'f', 'x')}")


@case("data-mistyped-root-with-a-preset", "data.root", "dta", "did you mean", "cvae data synth", "--preset small")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", f"data.root={ws / 'dta'}", "--set", "data.synth_seed=1")


@case("data-preset-from-the-file-root-from-the-flag", "data.root", "folder not found", "--set", "--preset tiny")
def _(ws, run):
    _edit(ws, "data.preset", "tiny")  # the spec names a preset; the root comes from the command line
    return _train(ws, ws / "spec.yaml", "--set", f"data.root={ws / 'elsewhere'}")


@case("data-root-above-the-dataset", "not a Lab4 dataset", "found data/", "did you mean")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", f"data.root={ws}")


@case("data-unpaired-val-frame", "data/val/val_img/frame99.png", "no pose image")
def _(ws, run):
    shutil.copy(ws / "data/val/val_img/frame0.png", ws / "data/val/val_img/frame99.png")
    return _train(ws, ws / "spec.yaml")


@case("data-corrupt-pose-png", "data/train/train_label/b/frame3.png", "not a readable PNG")
def _(ws, run):
    _write(ws / "data/train/train_label/b/frame3.png", b"\x89PNG\r\n\x1a\n garbage")
    return _train(ws, ws / "spec.yaml")


@case("data-truncated-png", "data/train/train_img/a/frame5.png", "not a readable PNG")
def _(ws, run):
    _truncate(ws / "data/train/train_img/a/frame5.png", 0.6)
    return _train(ws, ws / "spec.yaml")


@case("data-clips-longer-than-videos", "data.clip_len 50", "longest video (12 frames)")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "data.clip_len=50")


@case("data-fewer-clips-than-a-batch", "4 training clips", "data.clip_len 6", "train.batch_size (8)")
def _(ws, run):
    return _train(ws, ws / "spec.yaml", "--set", "data.clip_len=6", "--set", "train.batch_size=8")


@case("predict-without-test-split", "data/test/test_img", "folder missing", run=True)
def _(ws, run):
    shutil.rmtree(ws / "data/test")
    return ["predict", run, "--data", ws / "data", "--out", ws / "pred"]


# --- checkpoints and run folders
@case("evaluate-ckpt-middle", "--ckpt 'middle'", "best, last", run=True)
def _(ws, run):
    return ["evaluate", run, "--ckpt", "middle"]


@case("evaluate-device-unavailable", "--device", "'cuda:1'", "CUDA is not available", run=True, marks=NO_CUDA)
def _(ws, run):
    return ["evaluate", run, "--device", "cuda:1"]


@case("predict-not-a-device", "--device", "'gpu0'", "not a device", "cpu, cuda", run=True)
def _(ws, run):
    return ["predict", run, "--data", ws / "data", "--out", ws / "pred", "--device", "gpu0"]


@case("evaluate-run-trained-on-cuda", "spec.yaml", "train.device", "'cuda'", "--device", run=True, marks=NO_CUDA)
def _(ws, run):
    text = (run / "spec.yaml").read_text()
    (run / "spec.yaml").write_text(text.replace("device: auto", "device: cuda").replace("device: cpu", "device: cuda"))
    return ["evaluate", run]


@case("evaluate-truncated-last", "checkpoints/last.pt", "not a readable cvae checkpoint", run=True)
def _(ws, run):
    _truncate(run / "checkpoints/last.pt")
    return ["evaluate", run, "--ckpt", "last"]


@case("evaluate-flipped-weight-byte", "checkpoints/best.pt", "checksum mismatch", run=True)
def _(ws, run):
    flip_a_weight_byte(run / "checkpoints/best.pt")
    return ["evaluate", run]


@case("evaluate-empty-checkpoint", "checkpoints/best.pt", "not a readable cvae checkpoint", run=True)
def _(ws, run):
    _write(run / "checkpoints/best.pt", b"")
    return ["evaluate", run]


@case("evaluate-weights-of-another-spec", "checkpoints/best.pt", "its widths differ", run=True)
def _(ws, run):
    _edit(run, "model.frame_dim", 32)
    return ["evaluate", run]


@case("resume-without-a-run", "data", "no run to resume")
def _(ws, run):
    return ["train", "--resume", ws / "data"]


@case("resume-without-checkpoints", "checkpoints/last.pt", "checkpoint not found", run=True)
def _(ws, run):
    shutil.rmtree(run / "checkpoints")
    return ["train", "--resume", run]


@case("resume-both-checkpoints-damaged", "checkpoints/last.pt", "checkpoints/prev.pt", "not a readable", run=True)
def _(ws, run):
    _truncate(run / "checkpoints/last.pt")
    _truncate(run / "checkpoints/prev.pt")
    return ["train", "--resume", run]


@case("resume-edited-spec", "spec.yaml", "train.epochs", "greater than or equal to 1", run=True)
def _(ws, run):
    _edit(run, "train.epochs", 0)
    return ["train", "--resume", run]


@case("resume-with-overrides", "--resume", "no SPEC or overrides", run=True)
def _(ws, run):
    return ["train", "--resume", run, "--set", "train.epochs=3"]


# --- CLI flags
@case("train-without-spec", "missing SPEC", "--resume")
def _(ws, run):
    return ["train"]


@case("score-frame-size-3", "--frame-size '3'", "HxW")
def _(ws, run):
    from cvae.cli import app

    if "score" not in {c.name or c.callback.__name__ for c in app.registered_commands}:
        pytest.skip("this checkout has no `cvae score` command")
    return ["score", _write(ws / "s.csv", "id\n"), "--data", ws / "data", "--frame-size", "3"]


@case("synth-preset-huge", "preset 'huge'", "tiny, small, lab4")
def _(ws, run):
    return ["data", "synth", ws / "new", "--preset", "huge"]


@case("synth-bad-layout", "layout 'plaid'", "videos, flat")
def _(ws, run):
    return ["data", "synth", ws / "new", "--preset", "tiny", "--layout", "plaid"]


@case("evaluate-split-train", "--split 'train'", "val, test", run=True)
def _(ws, run):
    return ["evaluate", run, "--split", "train"]


@case("synth-bad-appearance", "appearance 'plaid'", "same, varied")
def _(ws, run):
    return ["data", "synth", ws / "new", "--appearance", "plaid"]


@case("unknown-option", "No such option: --bogus")
def _(ws, run):
    return ["evaluate", ws, "--bogus"]


@case("option-not-an-integer", "'--pose-shift'", "valid integer")
def _(ws, run):
    return ["evaluate", ws, "--pose-shift", "abc"]


# --- sweep files (the rest: tests/test_sweep.py)
@case("sweep-unknown-key", "sweep.yaml", "sampler.n_startup")
def _(ws, run):
    return _sweep(ws, SEARCH_LR + "sampler: {type: tpe, n_startup: 3}\n")


@case("sweep-searches-a-non-key", "sweep.yaml", "`optim.lrr` is not a key", "did you mean `optim.lr`")
def _(ws, run):
    return _sweep(ws, "search:\n  optim.lrr: {type: float, low: 0.1, high: 0.2}\nbudget: {n_trials: 2}\n")


@case("sweep-bound-gives-a-bad-spec", "sweep.yaml", "search.optim.lr", "2.0")
def _(ws, run):
    return _sweep(ws, "search:\n  optim.lr: {type: float, low: 0.5, high: 2.0}\nbudget: {n_trials: 2}\n")


def assert_refused(exit_code: int, stderr: str, needles: tuple[str, ...]) -> None:
    """Exit 2; one message (`error: ...`, or click's `Error: ...` for a malformed command line)."""
    assert exit_code == 2, stderr
    assert "Traceback" not in stderr
    messages = [line for line in stderr.splitlines() if line.lower().startswith("error:")]
    assert len(messages) == 1, stderr
    for needle in needles:
        assert needle in messages[0], f"{needle!r} not in {messages[0]!r}"


@pytest.mark.parametrize("setup, needles, needs_run", BAD_INPUT)
def test_bad_input_exits_2_and_writes_nothing(setup, needles, needs_run, tmp_path, request, monkeypatch):
    """In-process (typer's CliRunner) for speed; tests/test_cli.py runs the same handler in subprocesses."""
    from cvae.cli import app

    ws = request.getfixturevalue("workspace")
    run = request.getfixturevalue("run_copy") if needs_run else None
    monkeypatch.chdir(ws)  # a default output folder would land in the snapshot
    args = [str(a) for a in setup(ws, run)]
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert_refused(result.exit_code, result.stderr, needles)
    assert snapshot(tmp_path) == before  # nothing written, nothing overwritten


def test_the_bad_input_table_is_large_enough():
    assert len(BAD_INPUT) >= 25 and len({c.id for c in BAD_INPUT}) == len(BAD_INPUT)


# =========================================================================== 7. secrets


API_KEY = "local-" + "5ec7e7" * 6 + "abcd"  # a fake W&B key (46 characters, as W&B's local keys)
DB_PASSWORD = "Pw-0f-Alice-77"


@pytest.mark.slow
def test_secrets_stay_out_of_every_file_and_the_console(tmp_path, tiny_data, wandb_env):
    url = f"postgresql://alice:{DB_PASSWORD}@db.example.org:5432/optuna"
    secret_in = tmp_path / "secret-in"  # the only place the secrets may be written (by this test)
    spec = write_spec(
        secret_in / "spec.yaml",
        tiny_overrides(
            tiny_data,
            **{
                "train.epochs": 1,
                "data.partial": 0.5,
                "tracking.wandb.mode": "offline",
                "tracking.wandb.notes": f"study in {url}",
                "tracking.wandb.tags": [url],
            },
        ),
    )
    run = tmp_path / "run"
    env = {**wandb_env, "WANDB_API_KEY": API_KEY}
    r = cvae("train", spec, "--run-dir", run, "--set", f"tracking.wandb.group={url}", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    shown = cvae("spec", "show", spec, env=env)
    bad = cvae("spec", "show", spec, "--set", f"tracking.wandb.mode={url}", env=env)
    assert bad.returncode == 2 and "alice:***@db.example.org" in bad.stderr

    for text in (r.stdout, r.stderr, shown.stdout, shown.stderr, bad.stdout, bad.stderr):
        assert DB_PASSWORD not in text and API_KEY not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file() and secret_in not in p.parents]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "last.pt" for p in files)
    for p in files:  # spec.yaml, history, summary, checkpoints, W&B's logs and records, everything
        data = p.read_bytes()
        assert DB_PASSWORD.encode() not in data and API_KEY.encode() not in data, p
    saved = load_spec(run / "spec.yaml")
    assert saved.tracking.wandb.notes == "study in postgresql://alice:***@db.example.org:5432/optuna"
    assert yaml.safe_load(shown.stdout)["tracking"]["wandb"]["tags"] == [
        "postgresql://alice:***@db.example.org:5432/optuna"
    ]

    from wandb_offline import read_offline_run

    config = read_offline_run(run)["config"]
    assert config["tracking.wandb.group"] == "postgresql://alice:***@db.example.org:5432/optuna"


def test_checkpoints_load_weights_only(trained_run, monkeypatch):
    """Every checkpoint load goes through torch.load(weights_only=True) (the crafted-pickle refusal
    itself: tests/test_cli.py::test_evaluate_crafted_pickle_does_not_run)."""
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    from cvae.runs.evaluate import load_trained

    load_trained(trained_run, "best")
    checkpoint.load(trained_run / "checkpoints/last.pt")
    assert calls == [True, True]
