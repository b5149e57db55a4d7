"""Validation: roll every val video out from its first frame, score it, and put the score beside
what trivial predictors get on the same video.

A mean PSNR means little alone. Beside it every validation reports, on the same videos:

- ``val/psnr_repeat_first``: predict the first frame forever;
- ``val/psnr_mean_frame``: predict the mean of all the video's frames (a blur that ignores the pose);
- ``val/psnr_shifted_pose``: the same model and z draws with the poses rotated in time by a quarter
  of the video. A model that animates the dancer from the poses loses clearly here.

Shared by training (every ``train.val_every`` epochs) and ``cvae evaluate`` (cvae/runs/evaluate.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cvae.data.frames import VideoSet
from cvae.history import references_of
from cvae.model import CVAE
from cvae.training.rollout import MAX_VIDEOS, batches_by_length, psnr, reference_scores, rollout, shift_poses

VAL_SEED_OFFSET = 7919  # validation z draws: seeded apart from the training noise


@dataclass
class Validation:
    metrics: dict[str, float]  # val/psnr, val/mse, val/psnr_shifted_pose (means over the videos)
    curve: torch.Tensor  # (T-1,) per-frame PSNR of the first val video (frames 1..T-1)
    shifted_curve: torch.Tensor  # the same with the poses shifted
    pred: torch.Tensor  # (T, 3, H, W) rollout of the first val video
    pred_shifted: torch.Tensor
    pose_shift: int  # frames the poses of the first video were rotated by


def reference_metrics(val_set: VideoSet) -> dict[str, float]:
    """The trivial predictors' mean PSNR over the val videos (computed once per dataset)."""
    scores = [reference_scores(val_set.video(v)[0].float() / 255) for v in range(len(val_set.lengths))]
    return {
        "val/psnr_repeat_first": sum(s[0] for s in scores) / len(scores),
        "val/psnr_mean_frame": sum(s[1] for s in scores) / len(scores),
    }


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
    channels_last: bool = False,
    pose_shift: int | None = None,
) -> Validation:
    """Roll every val video out from its first frame, z from the prior; videos of equal length are
    batched. The same rollout with the poses rotated in time (by ``pose_shift`` frames, default a
    quarter of the video; same z draws) shows whether the model uses the pose."""
    kw = {"precision": precision, "channels_last": channels_last}
    results: dict[int, tuple] = {}
    for vids in batches_by_length(val_set.lengths, MAX_VIDEOS // 2):
        n, b = val_set.lengths[vids[0]], len(vids)
        frames = torch.stack([val_set.video(v)[0][:n] for v in vids]).float() / 255  # (B, T, 3, H, W)
        poses = torch.stack([val_set.video(v)[1][:n] for v in vids])
        shift = n // 4 if pose_shift is None else pose_shift
        # Both rollouts in one batch of 2B videos: the same z draws for every video (rollout's rule), so
        # the same frames as two calls (tested), in one pass through the model instead of two.
        both = rollout(
            model, frames[:, 0].repeat(2, 1, 1, 1), torch.cat([poses, shift_poses(poses, shift)]), seed, **kw
        )
        pred, pred_shift = both[:b], both[b:]
        for i, v in enumerate(vids):
            curve, mse = frame_scores(pred[i], frames[i])
            shifted, _ = frame_scores(pred_shift[i], frames[i])
            results[v] = (curve, shifted, mse, pred[i].cpu(), pred_shift[i].cpu(), shift)
    vids = sorted(results)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    metrics = {
        "val/psnr": mean([results[v][0].mean().item() for v in vids]),
        "val/mse": mean([results[v][2] for v in vids]),
        "val/psnr_shifted_pose": mean([results[v][1].mean().item() for v in vids]),
    }
    curve, shifted, _, pred, pred_shifted, shift = results[vids[0]]
    return Validation(metrics, curve, shifted, pred, pred_shifted, shift)


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
