"""What a trained run is used for: ``cvae evaluate``, ``cvae predict`` and ``cvae score``."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cvae import run_folder
from cvae.data.frames import load_split, load_test
from cvae.device import resolve_device, tune_cpu_allocator
from cvae.errors import DataError, RunDirError, UserError
from cvae.history import REFERENCE_NAMES, references_of
from cvae.model import CVAE, build_model
from cvae.spec import ExperimentSpec, load_spec
from cvae.training import checkpoint
from cvae.training.rollout import batches_by_length, rollout
from cvae.training.validation import VAL_SEED_OFFSET, reference_metrics, validate_model, write_media


def load_trained(run_dir: Path, ckpt: str, device: str | None = None) -> tuple[ExperimentSpec, CVAE, dict]:
    """The run's spec and its model with the weights of checkpoint ``best`` or ``last``, on
    ``device`` (``auto``, ``cpu``, ``cuda``...; None: the run's own ``train.device``)."""
    if ckpt not in ("best", "last"):
        raise UserError(f"--ckpt {ckpt!r}: allowed: best, last")
    if not run_folder.is_run(run_dir):
        raise RunDirError(f"{run_dir}: not a run folder ({run_folder.SPEC_FILE} missing)")
    spec = load_spec(run_dir / run_folder.SPEC_FILE)
    if device is None:
        dev = resolve_device(
            spec.train.device, f"train.device of {run_dir / run_folder.SPEC_FILE} (override: --device)"
        )
    else:
        dev = resolve_device(device, "--device")
    if dev.type == "cpu":
        tune_cpu_allocator()  # batched rollouts run faster with it (docs/performance.md)
    path = run_folder.checkpoint_path(run_dir, f"{ckpt}.pt")
    state = checkpoint.load(path, dev)
    model = build_model(spec).to(dev)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"{path}: weights do not fit the run's spec ({e})") from None
    model.eval()
    return spec, model, state


@dataclass
class Evaluation:
    """What ``cvae evaluate`` measured, and where it wrote it."""

    metrics: dict[str, float]
    pose_shift: int
    out_dir: Path

    def table(self):
        from cvae.terminal import Col, table

        m = self.metrics
        rows = [
            ["model (z from the prior)", f"{m['val/psnr']:.2f}"],
            [
                f"{REFERENCE_NAMES['val/psnr_shifted_pose']} (poses shifted by {self.pose_shift} frames)",
                f"{m['val/psnr_shifted_pose']:.2f}",
            ],
            *([name, f"{value:.2f}"] for name, value in references_of(m).items()),
        ]
        title = f"validation rollout (PSNR over frames 1..T-1, dB) -> {self.out_dir}"
        return table(title, ["predictor", Col("mean PSNR (dB)", numeric=True)], rows)


def evaluate_run(
    run_dir: Path, ckpt: str, pose_shift: int | None, console=None, device: str | None = None
) -> Evaluation:
    """Validation rollout of a checkpoint: eval/ gets metrics.json, the per-frame CSV and PNG, the GIF.
    ``device``: where to roll out (None: the run's ``train.device``)."""
    from cvae.data.root import RunData, scan_dataset
    from cvae.terminal import task

    spec, model, state = load_trained(run_dir, ckpt, device)
    recorded = RunData(run_dir, strict=False)
    _, val_files = scan_dataset(spec, console, recorded)  # a warning when the data changed since training
    with task(console, "loading val frames") as update:
        val_set = load_split(val_files, spec.data.frame_size, update).truncated(spec.data.val_len)
    val_set = val_set.to(next(model.parameters()).device)
    t = spec.train
    with task(console, "rolling out val videos"):
        val = validate_model(model, val_set, spec.seed + VAL_SEED_OFFSET, t.precision, t.channels_last, pose_shift)
    shift = val.pose_shift
    refs = reference_metrics(val_set)
    metrics = val.metrics | refs | {"epoch": state["epoch"], "pose_shift": shift}
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / "psnr_per_frame.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "psnr", "psnr_shifted_pose"])
        for i, (a, b) in enumerate(zip(val.curve.tolist(), val.shifted_curve.tolist(), strict=True), start=1):
            w.writerow([i, f"{a:.4f}", f"{b:.4f}"])
    title = f"{spec.name} ({ckpt} checkpoint, epoch {state['epoch']}): per-frame PSNR"
    write_media(out / "rollout.gif", out / "psnr_per_frame.png", val, val_set, refs, title, len(val.pred))
    return Evaluation(metrics, shift, out)


def predict_run(
    run_dir: Path, data: Path, out: Path, ckpt: str, overwrite: bool, console=None, device: str | None = None
) -> list[Path]:
    """Roll out each test video from its first frame and poses: ``<k>.gif`` (prediction | pose)
    and ``submission.csv`` (column ``id`` = ``<k>_<frame>``, then 3*H*W integers 0..255 in C, H, W
    order; one row per frame, frame 0 being the given first frame). ``device``: as ``evaluate_run``."""
    from cvae.terminal import task
    from cvae.tracking.media import labelled_panels, write_gif

    if (out / "submission.csv").exists() and not overwrite:
        raise RunDirError(f"{out / 'submission.csv'}: exists; pass --overwrite to replace it")
    spec, model, _ = load_trained(run_dir, ckpt, device)
    dev = next(model.parameters()).device
    videos = load_test(data, spec.data.frame_size)
    out.mkdir(parents=True, exist_ok=True)
    preds: dict[int, torch.Tensor] = {}
    with task(console, "rolling out test videos", total=len(videos)) as update:
        for vids in batches_by_length([len(v.poses) for v in videos]):  # a video rolls out the same in any batch
            pred = rollout(
                model,
                torch.stack([videos[i].first_frame for i in vids]).to(dev).float() / 255,
                torch.stack([videos[i].poses for i in vids]).to(dev),
                spec.seed + VAL_SEED_OFFSET,
                spec.train.precision,
                spec.train.channels_last,
            )
            preds |= dict(zip(vids, pred.cpu(), strict=True))
            update(len(preds))
    written, rows = [], []
    with task(console, "writing GIFs", total=len(videos)) as update:
        for i, v in enumerate(videos):
            written.append(write_gif(out / f"{v.name}.gif", labelled_panels({"prediction": preds[i], "pose": v.poses})))
            flat = (preds[i].clamp(0, 1) * 255).round().to(torch.uint8).flatten(1).numpy()  # (T, 3*H*W)
            rows.append((v.name, flat))
            update(i + 1)
    tmp = out / "submission.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", *range(rows[0][1].shape[1])])
        for name, flat in rows:
            for t, values in enumerate(flat):
                w.writerow([f"{name}_{t}", *values.tolist()])
    os.replace(tmp, out / "submission.csv")
    return written


def read_submission(path: Path, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """submission.csv -> {video: (T, 3, H, W) float in [0, 1]} (to score predictions)."""
    videos: dict[str, list[np.ndarray]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            name = row[0].rsplit("_", 1)[0]
            videos.setdefault(name, []).append(np.asarray(row[1:], dtype=np.uint8))
    return {k: torch.from_numpy(np.stack(v)).view(len(v), 3, *size).float() / 255 for k, v in videos.items()}


def score_submission(submission: Path, root: Path, size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """Score a submission.csv made from ``val_as_test`` output against the real val frames.

    Returns {video name: {"psnr", "repeat_first", "mean_frame"}} (mean over frames 1..T-1).
    """
    from cvae.data.layout import scan_split
    from cvae.training.rollout import psnr, reference_scores

    if not submission.is_file():
        raise DataError(f"{submission}: submission file not found")
    val_set = load_split(scan_split(root, "val"), size)
    scores = {}
    for name, pred in read_submission(submission, size).items():
        index = name.removesuffix("_shifted")
        if not index.isdigit() or int(index) >= len(val_set.lengths):
            raise DataError(f"{submission}: video id {name!r} is not a val video of {root} (see cvae data val-as-test)")
        frames = val_set.video(int(index))[0].float() / 255
        if len(pred) != len(frames):
            raise DataError(f"{submission}: video {name!r} has {len(pred)} frames, the val video {len(frames)}")
        repeat, mean = reference_scores(frames)
        scores[name] = {"psnr": psnr(pred[1:], frames[1:]).mean().item(), "repeat_first": repeat, "mean_frame": mean}
    return scores


def score_table(scores: dict[str, dict[str, float]], submission: Path, root: Path):
    """The table of ``cvae score``."""
    from cvae.terminal import Col, table

    title = f"{submission} against the val frames of {root} (mean PSNR over frames 1..T-1, dB)"
    columns = [Col("video"), *(Col(c, numeric=True) for c in ("prediction", "repeat first frame", "mean frame"))]
    rows = [
        [name, f"{s['psnr']:.2f}", f"{s['repeat_first']:.2f}", f"{s['mean_frame']:.2f}"] for name, s in scores.items()
    ]
    return table(title, columns, rows)
