"""cvae.training: what a run writes, exact resume, determinism, divergence, the step itself.

All runs use cvae.synth's tiny preset and tiny widths (conftest.tiny_overrides): 24 training
clips of 4 frames, batch 2 -> 12 optimizer steps per epoch, 12-frame validation rollouts.
"""

from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import (
    STEPS_PER_EPOCH,
    Stop,
    StopAtEpochEnd,
    assert_same_state,
    history,
    poison_generator,
    summary,
    tiny_overrides,
    without_perf,
)

from cvae.data.frames import load_split
from cvae.data.layout import scan_split
from cvae.errors import CheckpointError, DataError, RunDirError, TrainingDiverged
from cvae.history import epoch_rows
from cvae.model import build_model
from cvae.run_folder import prepare as prepare_run_dir
from cvae.spec import dump_yaml, load_spec
from cvae.tracking.media import GIF_SCALE, LABEL_HEIGHT
from cvae.training import checkpoint
from cvae.training.loop import train
from cvae.training.rollout import reference_scores
from cvae.training.schedules import kl_beta, teacher_forcing_ratio
from cvae.training.step import loss_and_gradients


def step_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "train/loss" in r]


# --------------------------------------------------------------------------- what a run writes


def test_run_folder_files(trained_run, tiny_spec):
    head, rest = (trained_run / "spec.yaml").read_text().split("\n", 1)
    assert head.startswith("# data: synthetic dancer (preset tiny, seed 0") and rest == dump_yaml(tiny_spec)
    assert load_spec(trained_run / "spec.yaml") == tiny_spec
    files = ["history.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"]
    files += ["media/val_epoch001.gif", "media/val_epoch002.gif", "plots/val_psnr.png", "plots/curves.png"]
    for rel in files:
        assert (trained_run / rel).is_file(), rel
    assert not list(trained_run.rglob("*.tmp*"))  # atomic writes leave no temp files


def test_history_rows(trained_run, tiny_spec):
    rows = history(trained_run)
    steps = step_rows(rows)
    assert [r["step"] for r in steps] == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # every step once
    for r in steps:
        for key in ("train/loss", "train/mse", "train/kl", "train/beta", "train/tfr", "train/teacher_forced", "epoch"):
            assert key in r, key
        assert r["epoch"] == (r["step"] - 1) // STEPS_PER_EPOCH + 1  # epochs count from 1
        e = r["epoch"] - 1  # the schedules' position
        # the logged schedules are the schedule functions' values (monotonic over 2 epochs: 0, 1/2)
        assert r["train/beta"] == kl_beta(tiny_spec.kl_annealing, e, tiny_spec.train.epochs) == [0.0, 0.5][e]
        assert r["train/tfr"] == pytest.approx(teacher_forcing_ratio(tiny_spec.teacher_forcing, e))
        assert r["train/tfr"] == pytest.approx([0.5, 0.3][e])
        assert r["train/lr"] == pytest.approx(1e-3)  # multistep [2, 5]: unchanged in epochs 0-1
        assert r["train/mse"] >= 0 and r["train/kl"] >= 0
        assert r["train/loss"] == pytest.approx(r["train/mse"] + r["train/beta"] * r["train/kl"], rel=1e-4)
    epochs = epoch_rows(rows)
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [r["step"] for r in epochs] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    for r in epochs:
        for key in ("val/psnr", "val/psnr_repeat_first", "val/psnr_mean_frame", "val/psnr_shifted_pose"):
            assert isinstance(r[key], float) and 0 < r[key] <= 100, key
        assert r["perf/frames_per_s"] > 0
    # steps never go backwards (W&B drops such rows)
    assert all(a["step"] <= b["step"] for a, b in pairwise(rows))


def test_reference_psnrs_match_the_val_video(trained_run, tiny_spec):
    val = load_split(scan_split(tiny_spec.data.root, "val"), tiny_spec.data.frame_size).truncated(
        tiny_spec.data.val_len
    )
    frames = val.video(0)[0].float() / 255
    assert frames.shape[0] == 12
    repeat, mean = reference_scores(frames)
    last = epoch_rows(history(trained_run))[-1]
    assert last["val/psnr_repeat_first"] == pytest.approx(repeat)
    assert last["val/psnr_mean_frame"] == pytest.approx(mean)


def test_summary_and_best(trained_run):
    s = summary(trained_run)
    psnrs = [r["val/psnr"] for r in epoch_rows(history(trained_run))]
    assert s["status"] == "finished"
    assert (s["epochs_done"], s["steps"]) == (2, 2 * STEPS_PER_EPOCH)
    assert s["best/val_psnr"] == max(psnrs)
    assert s["best/epoch"] == psnrs.index(max(psnrs)) + 1  # epochs count from 1
    assert s["final/psnr"] == psnrs[-1]


def test_checkpoints_are_plain_state(trained_run, tiny_spec):
    last = checkpoint.load(trained_run / "checkpoints/last.pt")  # weights_only=True: no pickled objects
    best = checkpoint.load(trained_run / "checkpoints/best.pt")
    assert last["format"] == checkpoint.FORMAT == best["format"]
    assert (last["epoch"], last["step"]) == (2, 2 * STEPS_PER_EPOCH)
    assert last["spec"] == tiny_spec.to_dict()
    assert best["best_epoch"] == summary(trained_run)["best/epoch"] == best["epoch"]
    assert best["best_psnr"] == summary(trained_run)["best/val_psnr"]
    for ck in (last, best):
        model = build_model(tiny_spec)
        model.load_state_dict(ck["model"])  # strict: every key fits the spec's widths
        assert {"optimizer", "scheduler", "rng"} <= ck.keys()
    assert checkpoint.load(trained_run / "checkpoints/last.pt")["step"] == last["step"]


def test_gif_and_plots_decode(trained_run, tiny_spec):
    H, W = tiny_spec.data.frame_size
    n = min(tiny_spec.tracking.gif_frames, tiny_spec.data.val_len)  # 10
    for epoch in (1, 2):
        gif = iio.imread(trained_run / f"media/val_epoch{epoch:03d}.gif")
        # ground truth | prediction | pose, upscaled 4x (white gaps of 8 pixels), under a label strip
        s, top = GIF_SCALE, LABEL_HEIGHT
        assert gif.shape[:3] == (n, top + s * H, s * (3 * W + 2 * 2))
        assert (gif[:, top:, s * W : s * (W + 2), :3] == 255).all()
        assert (gif[:, :top].min() < 128) and (gif[:, :top] == 255).mean() > 0.8  # black names on white
        # upscaled by nearest neighbour: every s x s block of a panel is one pixel of the frame
        pred = gif[0, top:, s * (W + 2) : s * (2 * W + 2), :3].astype(int)
        assert (pred == np.repeat(np.repeat(pred[::s, ::s], s, 0), s, 1)).all()
    for name in ("val_psnr.png", "curves.png"):
        img = iio.imread(trained_run / "plots" / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0


def test_curves_png_titles_its_panels_with_what_they_show_and_their_unit(run_copy, monkeypatch):
    """plots/curves.png: readable titles with units (they were the raw history keys), drawn and decoded."""
    import cvae.tracking.media
    from cvae.training.loop import plot_curves

    titles = {}
    real = cvae.tracking.media.save_figure

    def spy(fig, path):
        titles[path.name] = [ax.get_title() for ax in fig.axes]
        return real(fig, path)

    monkeypatch.setattr(cvae.tracking.media, "save_figure", spy)
    (run_copy / "plots" / "curves.png").unlink()
    plot_curves(run_copy, "sum")
    assert titles["curves.png"] == [
        "train loss (MSE + β·KL)",
        "train MSE (per pixel)",
        "train KL (nats, sum over z)",
        "β, the KL weight",
        "teacher-forcing ratio",
        "val PSNR (dB)",
    ]
    image = iio.imread(run_copy / "plots" / "curves.png")
    assert image.ndim == 3 and image.std() > 0


def test_gif_frames_decode_close_to_what_was_written(tmp_path, tiny_data):
    """The dancer's frames beside their poses, written with one shared palette: every frame
    comes back, the white gaps exactly, the rest within a level or two on average."""
    from cvae.tracking.media import side_by_side, write_gif

    frames, poses = load_split(scan_split(tiny_data, "val"), (32, 64)).video(0)
    video = side_by_side(frames, poses)  # (T, 32, 130, 3), a white gap between
    back = iio.imread(write_gif(tmp_path / "v.gif", video), index=None)[..., :3].astype(int)
    assert back.shape == video.shape
    assert (back[:, :, 64:66] == 255).all()
    assert abs(back - video).mean() < 2  # 0.86 levels in 255 (0.16 with a palette per frame)


# --------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_epoch_mode_forces_whole_epochs_and_a_resume_tosses_the_same_coins(tmp_path, tiny_data):
    """``teacher_forcing.mode: epoch`` (the lab's trainer): every step of an epoch is teacher-forced
    or none is, as the epoch's coin says; ``train/teacher_forced`` shows it; a run stopped after
    epoch 2 and resumed logs the same coins and values as one never stopped."""
    from cvae.training.schedules import epoch_coin

    epochs, ratio = 4, 0.5
    seed = next(s for s in range(100) if len({epoch_coin(s, e) < ratio for e in range(epochs)}) == 2)
    over = {"seed": seed, "train.epochs": epochs, "teacher_forcing.mode": "epoch", "teacher_forcing.ratio": ratio}
    over |= {"teacher_forcing.decay_step": 0.0, "tracking.log_every": 1}
    spec = load_spec(None, tiny_overrides(tiny_data, **over))
    train(spec, tmp_path / "A")
    rows = history(tmp_path / "A")
    for e in range(1, epochs + 1):
        shares = {r["train/teacher_forced"] for r in step_rows(rows) if r["epoch"] == e}
        assert shares == {1.0 if epoch_coin(seed, e - 1) < ratio else 0.0}, e
        assert {r["train/tfr"] for r in step_rows(rows) if r["epoch"] == e} == {ratio}
    with pytest.raises(Stop):
        train(spec, tmp_path / "B", callbacks=[StopAtEpochEnd(2)])
    train(spec, tmp_path / "B", resume=True)
    assert without_perf(history(tmp_path / "B")) == without_perf(rows)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_data) -> Path:
    """Run A: 3 epochs, never stopped (epoch 2 crosses the LR milestone)."""
    run = tmp_path_factory.mktemp("resume") / "A"
    train(load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 3})), run)
    return run


@pytest.mark.slow
def test_resume_after_an_epoch_is_exact(tmp_path, tiny_data, uninterrupted):
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 3}))
    run = tmp_path / "B"
    with pytest.raises(Stop):
        train(spec, run, callbacks=[StopAtEpochEnd(1)])
    s = summary(run)
    assert s["status"] == "failed" and "Stop" in s["failure_reason"]
    assert checkpoint.load(run / "checkpoints/last.pt")["epoch"] == 1
    assert [r["epoch"] for r in epoch_rows(history(run))] == [1]

    result = train(spec, run, resume=True)

    a, b = checkpoint.load(uninterrupted / "checkpoints/last.pt"), checkpoint.load(run / "checkpoints/last.pt")
    assert_same_state(a["model"], b["model"])
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 3 * STEPS_PER_EPOCH)
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert_same_state(pa, pb)
    assert a["scheduler"] == b["scheduler"]
    assert without_perf(history(run)) == without_perf(history(uninterrupted))
    lrs = {r["epoch"]: r["train/lr"] for r in step_rows(history(run))}
    assert lrs == pytest.approx({1: 1e-3, 2: 1e-3, 3: 1e-4})  # the restored scheduler crossed milestone 2
    assert summary(run) == summary(uninterrupted)
    assert summary(run)["status"] == "finished" and "failure_reason" not in summary(run)
    assert result["best/val_psnr"] == summary(uninterrupted)["best/val_psnr"]


class CrashAtStep:
    """A tracker that dies while logging step ``step``, like a kill in the middle of an epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def __getattr__(self, name):
        return lambda *args, **kwargs: None

    def log(self, metrics, step):
        if step == self.step:
            raise Stop(f"killed at step {step}")


@pytest.mark.slow
def test_resume_after_a_crash_mid_epoch_is_exact(tmp_path, tiny_data, uninterrupted):
    """History rows logged after the checkpoint (the unfinished epoch) are dropped, then redone."""
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 3}))
    run = tmp_path / "C"
    crash = STEPS_PER_EPOCH + 5
    with pytest.raises(Stop):
        train(spec, run, trackers=[CrashAtStep(crash)])
    assert max(r["step"] for r in history(run)) == crash  # the local history got ahead of last.pt
    train(spec, run, resume=True)
    a, c = checkpoint.load(uninterrupted / "checkpoints/last.pt"), checkpoint.load(run / "checkpoints/last.pt")
    assert_same_state(a["model"], c["model"])
    assert without_perf(history(run)) == without_perf(history(uninterrupted))


def test_resume_of_a_finished_run_is_a_no_op(tmp_path, trained_run):
    run = tmp_path / "done"
    shutil.copytree(trained_run, run)
    spec = load_spec(run / "spec.yaml")
    before = {p: (run / p).read_bytes() for p in ("history.jsonl", "checkpoints/last.pt", "checkpoints/best.pt")}
    result = train(spec, run, resume=True)
    assert {p: (run / p).read_bytes() for p in before} == before
    assert result["epochs_done"] == 2 and result["best/val_psnr"] == summary(trained_run)["best/val_psnr"]
    assert summary(run) == summary(trained_run)


def test_resume_from_prev_when_last_is_damaged(tmp_path, trained_run):
    run = tmp_path / "damaged"
    shutil.copytree(trained_run, run)
    last = run / "checkpoints/last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated by a crash
    with pytest.raises(CheckpointError):
        checkpoint.load(last)
    spec = load_spec(run / "spec.yaml")
    train(spec, run, resume=True)  # falls back to prev.pt (epoch 1) and redoes epoch 2
    resumed, reference = (
        checkpoint.load(run / "checkpoints/last.pt"),
        checkpoint.load(trained_run / "checkpoints/last.pt"),
    )
    assert_same_state(resumed["model"], reference["model"])
    assert without_perf(history(run)) == without_perf(history(trained_run))


# --------------------------------------------------------------------------- determinism


@pytest.mark.slow
def test_same_seed_same_weights(tmp_path, tiny_data):
    def run(name: str, seed: int) -> dict:
        spec = load_spec(None, tiny_overrides(tiny_data, seed=seed, **{"train.epochs": 1, "data.partial": 0.5}))
        train(spec, tmp_path / name)
        return checkpoint.load(tmp_path / name / "checkpoints/last.pt")["model"]

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert_same_state(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert without_perf(history(tmp_path / "a")) == without_perf(history(tmp_path / "b"))


# --------------------------------------------------------------------------- divergence


def test_nan_loss_raises_and_marks_the_run_failed(tmp_path, tiny_data, monkeypatch):
    spec = load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 1}))
    poison_generator(monkeypatch, from_step=3, frames_per_step=3)
    with pytest.raises(TrainingDiverged, match="step 3"):
        train(spec, tmp_path / "nan")
    s = summary(tmp_path / "nan")
    assert s["status"] == "failed"
    assert "TrainingDiverged" in s["failure_reason"] and "step 3" in s["failure_reason"]
    assert [r["step"] for r in step_rows(history(tmp_path / "nan"))] == [1, 2]  # the NaN step is not logged
    assert not (tmp_path / "nan" / "checkpoints" / "last.pt").exists()


# --------------------------------------------------------------------------- the step


@pytest.mark.parametrize("posterior", ["previous", "target"])
def test_train_step_posterior_and_frame_teacher_forcing(posterior):
    spec = load_spec(None, tiny_overrides("unused", **{
        "model.posterior": posterior, "teacher_forcing.mode": "frame", "loss.kl_reduction": "mean"}))  # fmt: skip
    torch.manual_seed(0)
    model = build_model(spec)
    g = torch.Generator().manual_seed(0)
    x, pose = torch.rand(2, 4, 3, 16, 16, generator=g), torch.rand(2, 4, 3, 16, 16, generator=g)

    def step(x):
        model.zero_grad()
        torch.manual_seed(1)  # same teacher-forcing coins and z noise
        return loss_and_gradients(model, x, pose, spec, beta=0.3, tfr=0.5)

    out = step(x)
    assert set(out) >= {"loss", "mse", "kl"}
    assert out["kl"] >= 0 and out["mse"] >= 0
    assert out["loss"].item() == pytest.approx(out["mse"].item() + 0.3 * out["kl"].item(), rel=1e-5)
    assert all(p.grad is not None for p in model.posterior.parameters())
    assert all(p.grad is not None for p in model.generator.parameters())
    # Which frame the posterior encodes: with `previous` the KL never sees the last target frame.
    x2 = x.clone()
    x2[:, -1] = torch.rand(2, 3, 16, 16, generator=g)
    changed = step(x2)
    if posterior == "previous":
        assert torch.equal(changed["kl"], out["kl"])
    else:
        assert not torch.equal(changed["kl"], out["kl"])
    assert not torch.equal(changed["mse"], out["mse"])


def test_teacher_forcing_ratio_one_and_zero_differ():
    spec = load_spec(None, tiny_overrides("unused"))
    torch.manual_seed(0)
    model = build_model(spec)
    x, pose = torch.rand(2, 4, 3, 8, 8), torch.rand(2, 4, 3, 8, 8)
    results = []
    for tfr in (1.0, 0.0):
        torch.manual_seed(1)
        results.append(loss_and_gradients(model, x, pose, spec, beta=0.0, tfr=tfr)["mse"])
    assert not torch.equal(*results)  # frames 2.. come from the model's own outputs with tfr 0


def test_detach_feedback_cuts_only_the_gradient_through_the_fed_back_frame():
    """train.detach_feedback: the same forward pass and loss; the gradient no longer flows back through the
    model's own output into the steps that made it. Where nothing is fed back (every step teacher-forced, or
    a clip of one predicted frame) the gradients are the same to the bit."""

    def grads(detach: bool, tfr: float, clip_len: int = 4):
        spec = load_spec(None, tiny_overrides("unused", **{"train.detach_feedback": detach}))
        torch.manual_seed(0)
        model = build_model(spec)
        g = torch.Generator().manual_seed(0)
        x, pose = torch.rand(2, clip_len, 3, 8, 8, generator=g), torch.rand(2, clip_len, 3, 8, 8, generator=g)
        torch.manual_seed(1)  # the same coins and z noise
        loss = loss_and_gradients(model, x, pose, spec, beta=0.1, tfr=tfr)["loss"]
        return loss, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    (loss, kept), (loss_cut, cut) = grads(False, 0.0), grads(True, 0.0)
    assert torch.equal(loss, loss_cut) and not torch.allclose(kept, cut)
    for tfr, clip_len in ((1.0, 4), (0.0, 2)):
        assert torch.equal(grads(False, tfr, clip_len)[1], grads(True, tfr, clip_len)[1])


# --------------------------------------------------------------------------- run folder and bad data


def test_bad_data_leaves_no_run_folder(tmp_path):
    spec = load_spec(None, tiny_overrides(tmp_path / "missing"))
    with pytest.raises(DataError, match="data.preset is null"):
        train(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_clip_longer_than_videos_leaves_no_run_folder(tmp_path, tiny_data):
    spec = load_spec(None, tiny_overrides(tiny_data, **{"data.clip_len": 25}))
    with pytest.raises(DataError, match="clip_len 25"):
        train(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_prepare_run_dir(tmp_path):
    run = tmp_path / "run"
    prepare_run_dir(run, resume=False, overwrite=False)  # a new folder is fine
    with pytest.raises(RunDirError, match="no run to resume"):
        prepare_run_dir(run, resume=True, overwrite=False)
    run.mkdir()
    (run / "spec.yaml").write_text("name: x\n")
    with pytest.raises(RunDirError, match="already holds a run"):
        prepare_run_dir(run, resume=False, overwrite=False)
    assert (run / "spec.yaml").read_text() == "name: x\n"
    prepare_run_dir(run, resume=True, overwrite=False)
    prepare_run_dir(run, resume=False, overwrite=True)
    assert not run.exists()


def test_media_at_the_end_writes_the_best_epochs_gif_once(tmp_path, tiny_data):
    """tracking.media end (sweep trials, confirm runs): no GIF or plot while training; once the run ends,
    the best epoch's GIF and per-frame plot, the same files an `every` run writes for that epoch."""
    every, end = tmp_path / "every", tmp_path / "end"
    train(load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 3})), every)
    train(load_spec(None, tiny_overrides(tiny_data, **{"train.epochs": 3, "tracking.media": "end"})), end)
    best = json.loads((end / "summary.json").read_text())["best/epoch"]
    assert sorted(p.name for p in (every / "media").iterdir()) == [f"val_epoch00{e}.gif" for e in (1, 2, 3)]
    assert sorted(p.name for p in (end / "media").iterdir()) == [f"val_epoch{best:03d}.gif"]
    same = f"media/val_epoch{best:03d}.gif"
    assert (end / same).read_bytes() == (every / same).read_bytes()
    assert (end / "plots" / "val_psnr.png").is_file() and (end / "plots" / "curves.png").is_file()
    assert without_perf(history(end)) == without_perf(history(every))  # the same training and scores
