"""Validation: roll every val video out from its first frame, score it, and put the score beside
what trivial predictors get on the same video.

A mean PSNR means little alone. Beside it every validation reports, on the same videos:

- ``val/psnr_repeat_first``: predict the first frame forever;
- ``val/psnr_mean_frame``: predict the mean of all the video's frames (a blur that ignores the pose);
- ``val/psnr_shifted_pose``: the same model and z draws with the poses rotated in time by a quarter
  of the video. A model that animates the dancer from the poses loses clearly here.

Shared by training (every ``train.val_every`` epochs) and ``cvae evaluate`` (cvae/runs/evaluate.py).

The test videos, where a dataset has their true frames (cvae/data/layout.py), are scored the same
way under ``test/`` keys (``score_heldout``, ``heldout_references``), as the Kaggle leaderboard scores the
lab's: the mean PSNR over every predicted frame of every test video. Nothing that chooses (the best
checkpoint, a sweep's objective and pruner, confirm's race) reads them. A run's best checkpoint is
scored on them when it ends (``tracking.test_at_end``: ``score_best``) and by ``cvae evaluate RUN
--split test``: the test videos had no part in choosing it, so its score says whether what
validation saw holds on videos nobody chose on, as the Kaggle leaderboard says it for the lab.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cvae import run_folder
from cvae.data.frames import VideoSet, load_truth
from cvae.data.layout import scan_truth, truth_folder
from cvae.history import references_of
from cvae.model import CVAE, build_model
from cvae.spec import ExperimentSpec
from cvae.training.checkpoint import load as checkpoint_load
from cvae.training.rollout import MAX_VIDEOS, batches_by_length, psnr, reference_scores, rollout, shift_poses

VAL_SEED_OFFSET = 7919  # validation z draws: seeded apart from the training noise


@dataclass
class VideoRollout:
    """One video rolled out from its first frame, with its own poses and with them shifted in time."""

    curve: torch.Tensor  # (T-1,) per-frame PSNR (frames 1..T-1)
    shifted_curve: torch.Tensor  # the same with the poses shifted
    mse: float  # mean over frames 1..T-1
    pred: torch.Tensor  # (T, 3, H, W)
    pred_shifted: torch.Tensor
    shift: int  # frames the poses were rotated by


@dataclass
class Validation:
    metrics: dict[str, float]  # val/psnr, val/mse, val/psnr_shifted_pose (means over the videos)
    curve: torch.Tensor  # (T-1,) per-frame PSNR of the first val video (frames 1..T-1)
    shifted_curve: torch.Tensor  # the same with the poses shifted
    pred: torch.Tensor  # (T, 3, H, W) rollout of the first val video
    pred_shifted: torch.Tensor
    pose_shift: int  # frames the poses of the first video were rotated by
    videos: list[VideoRollout] = field(default_factory=list)  # every video, in the set's order


def reference_metrics(val_set: VideoSet) -> dict[str, float]:
    """The trivial predictors' mean PSNR over the val videos (computed once per dataset)."""
    scores = [reference_scores(val_set.video(v)[0].float() / 255) for v in range(len(val_set.lengths))]
    return {
        "val/psnr_repeat_first": sum(s[0] for s in scores) / len(scores),
        "val/psnr_mean_frame": sum(s[1] for s in scores) / len(scores),
    }


def heldout_references(test_set: VideoSet) -> dict[str, float]:
    """The trivial predictors on the test videos, as the leaderboard pools them: the mean PSNR over all
    predicted frames of all videos (``test/psnr_repeat_first``, ``test/psnr_mean_frame``)."""
    scores = [reference_scores(test_set.video(v)[0].float() / 255) for v in range(len(test_set.lengths))]
    return {
        "test/psnr_repeat_first": pooled([s[0] for s in scores], test_set.lengths),
        "test/psnr_mean_frame": pooled([s[1] for s in scores], test_set.lengths),
    }


def pooled(video_means: list[float], lengths: list[int]) -> float:
    """The mean over every predicted frame (1..T-1) of every video, from each video's mean."""
    return sum(m * (n - 1) for m, n in zip(video_means, lengths, strict=True)) / sum(n - 1 for n in lengths)


def frame_scores(pred: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-frame PSNR (T-1,) and mean MSE of a rollout ``pred`` against the video ``frames``, both
    (T, 3, H, W) in [0, 1], over frames 1..T-1 (frame 0 is given, not predicted)."""
    truth = frames[1:].float()
    return psnr(pred[1:], truth).cpu(), (pred[1:].float() - truth).pow(2).mean().item()


def validate_model(
    model: CVAE,
    val_set: VideoSet,
    seed: int,
    precision: str = "fp32",
    pose_shift: int | None = None,
) -> Validation:
    """Roll every val video out from its first frame, z from the prior; videos of equal length are
    batched. The same rollout with the poses rotated in time (by ``pose_shift`` frames, default a
    quarter of the video; same z draws) shows whether the model uses the pose."""
    videos = roll_videos(model, val_set, seed, precision, pose_shift)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    metrics = {
        "val/psnr": mean([r.curve.mean().item() for r in videos]),
        "val/mse": mean([r.mse for r in videos]),
        "val/psnr_shifted_pose": mean([r.shifted_curve.mean().item() for r in videos]),
    }
    return first_video(metrics, videos)


def score_heldout(
    model: CVAE,
    test_set: VideoSet,
    seed: int,
    precision: str = "fp32",
    pose_shift: int | None = None,
) -> Validation:
    """``validate_model`` on the test videos with their true frames (cvae/data/frames.py, ``load_truth``),
    scored as the leaderboard scores them: ``test/psnr`` and ``test/psnr_shifted_pose`` are means over
    every predicted frame of every video, ``test/mse`` too; ``test/videos`` and ``test/frames`` count
    what was scored."""
    videos = roll_videos(model, test_set, seed, precision, pose_shift)
    n = test_set.lengths
    metrics = {
        "test/psnr": pooled([r.curve.mean().item() for r in videos], n),
        "test/mse": pooled([r.mse for r in videos], n),
        "test/psnr_shifted_pose": pooled([r.shifted_curve.mean().item() for r in videos], n),
        "test/videos": len(n),
        "test/frames": sum(k - 1 for k in n),
    }
    return first_video(metrics, videos)


def first_video(metrics: dict[str, float], videos: list[VideoRollout]) -> Validation:
    r = videos[0]
    return Validation(metrics, r.curve, r.shifted_curve, r.pred, r.pred_shifted, r.shift, videos)


def roll_videos(
    model: CVAE,
    video_set: VideoSet,
    seed: int,
    precision: str = "fp32",
    pose_shift: int | None = None,
) -> list[VideoRollout]:
    """Every video of the set rolled out from its first frame with its poses and with them rotated in
    time (``pose_shift`` frames, default a quarter of the video), scored against its frames; videos of
    equal length in one batch."""
    results: dict[int, VideoRollout] = {}
    for vids in batches_by_length(video_set.lengths, MAX_VIDEOS // 2):
        n, b = video_set.lengths[vids[0]], len(vids)
        frames = torch.stack([video_set.video(v)[0][:n] for v in vids]).float() / 255  # (B, T, 3, H, W)
        poses = torch.stack([video_set.video(v)[1][:n] for v in vids])
        shift = n // 4 if pose_shift is None else pose_shift
        # Both rollouts in one batch of 2B videos: the same z draws for every video (rollout's rule), so
        # the same frames as two calls (tested), in one pass through the model instead of two.
        both = rollout(
            model, frames[:, 0].repeat(2, 1, 1, 1), torch.cat([poses, shift_poses(poses, shift)]), seed, precision
        )
        pred, pred_shift = both[:b], both[b:]
        for i, v in enumerate(vids):
            curve, mse = frame_scores(pred[i], frames[i])
            shifted, _ = frame_scores(pred_shift[i], frames[i])
            results[v] = VideoRollout(curve, shifted, mse, pred[i].cpu(), pred_shift[i].cpu(), shift)
    return [results[v] for v in sorted(results)]


def write_media(
    gif: Path, plot: Path, val: Validation, val_set: VideoSet, refs: dict[str, float], title: str, gif_frames: int
) -> tuple[Path, Path]:
    """The first val video's rollout as a GIF (truth | prediction | pose, upscaled and labelled, the
    first ``gif_frames`` frames) and its per-frame PSNR plot, with the shifted-pose curve and the
    trivial references."""
    from cvae.tracking.media import labelled_panels, plot_psnr, write_gif, writing

    n = min(gif_frames, len(val.pred))
    frames, poses = val_set.video(0)
    with writing(gif):
        write_gif(
            gif, labelled_panels({"truth": frames[:n].cpu(), "prediction": val.pred[:n], "pose": poses[:n].cpu()})
        )
    with writing(plot):
        plot_psnr(
            plot,
            {"prediction": val.curve.tolist(), f"poses shifted by {val.pose_shift}": val.shifted_curve.tolist()},
            references_of(refs),
            title,
        )
    return gif, plot


# --------------------------------------------------------------------------- the held-out test at the end of a run


def best_weights(run_dir: Path, spec: ExperimentSpec, device: torch.device) -> CVAE:
    """The model of ``RUN/checkpoints/best.pt`` on ``device``, as it trained (memory format included)."""
    model = build_model(spec, device)
    model.load_state_dict(checkpoint_load(run_folder.checkpoint_path(run_dir, run_folder.BEST))["model"])
    return model


def check_truth(spec: ExperimentSpec) -> None:
    """With ``tracking.test_at_end``, a test truth that does not match the test split is bad input before
    training starts (file names and counts only), not a failure after it."""
    if spec.tracking.test_at_end and truth_folder(Path(spec.data.root)) is not None:
        scan_truth(Path(spec.data.root))


def score_best(run_dir: Path, spec: ExperimentSpec, device: torch.device, best_epoch: int) -> dict[str, Any]:
    """``test/*`` scores of a finished run's best checkpoint (epoch ``best_epoch``) and the trivial
    references on the same videos, ``perf/test_s`` the seconds it took; {} where the data has no truth.
    A run resumed after it finished, its best checkpoint the one already scored, keeps its scores."""
    root = Path(spec.data.root)
    if truth_folder(root) is None:
        return {}
    before = run_folder.read_summary(run_dir)
    if before.get("test/epoch") == best_epoch and "test/psnr" in before:
        return {k: v for k, v in before.items() if k.startswith("test/") or k == "perf/test_s"}
    t0 = time.perf_counter()
    test_set = load_truth(root, spec.data.frame_size).to(device)
    model = best_weights(run_dir, spec, device)
    held = score_heldout(model, test_set, spec.seed + VAL_SEED_OFFSET, spec.train.precision)
    out = held.metrics | heldout_references(test_set) | {"test/epoch": best_epoch}
    return out | {"perf/test_s": time.perf_counter() - t0}


def heldout_line(summary: dict[str, Any]) -> str | None:
    """One line of a run's held-out score beside its references, or None when it has none."""
    if "test/psnr" not in summary:
        return None
    refs = ", ".join(
        f"{name} {summary[key]:.2f}"
        for key, name in (
            ("test/psnr_repeat_first", "repeat-first"),
            ("test/psnr_mean_frame", "mean-frame"),
            ("test/psnr_shifted_pose", "shifted-pose"),
        )
        if key in summary
    )
    return (
        f"held-out test videos ({summary.get('test/videos')} videos, {summary.get('test/frames')} predicted frames, "
        f"never chosen on): PSNR {summary['test/psnr']:.2f} dB ({refs}) at epoch {summary.get('test/epoch')}"
    )
