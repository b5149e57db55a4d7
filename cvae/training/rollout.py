"""Autoregressive generation and PSNR, shared by validation, ``cvae evaluate`` and ``cvae predict``.

From the first real frame only, the model predicts frame t from its own frame t-1 and pose t,
with z drawn from the prior N(0, I). PSNR = 10 log10(1 / MSE) per frame (pixel values in
[0, 1]); identical frames would give infinity, so the MSE is floored at 1e-10: PSNR is capped
at 100 dB everywhere.
"""

from __future__ import annotations

import torch

from cvae.device import autocast
from cvae.model import CVAE

PSNR_CAP_DB = 100.0
MAX_VIDEOS = 16  # per batched rollout


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB of (..., 3, H, W) images in [0, 1] -> (...), capped at 100 dB."""
    mse = (pred.float() - target.float()).pow(2).mean(dim=(-3, -2, -1))
    return 10 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP_DB / 10)))


@torch.no_grad()
def rollout(
    model: CVAE,
    first: torch.Tensor,
    poses: torch.Tensor,
    seed: int,
    precision: str = "fp32",
) -> torch.Tensor:
    """Roll out B videos at once.

    first: (B, 3, H, W) float in [0, 1]; poses: (B, T, 3, H, W) uint8 or float.
    Returns (B, T, 3, H, W) float, frame 0 being ``first``. z for step t is drawn from a
    generator seeded by ``seed``, so two rollouts with the same seed share their z draws, and every
    video of the batch gets the same draw: a video rolls out the same alone or batched with others
    (up to float rounding), which is what lets validation and ``cvae predict`` batch videos.
    """
    was_training = model.training
    model.eval()
    device, (B, T) = first.device, poses.shape[:2]
    H, W = first.shape[-2:]
    fmt = model.memory_format  # frames in the model's layout
    g = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty((B, T, 3, H, W), device=device)
    out[:, 0] = first
    prev = first.contiguous(memory_format=fmt)
    with autocast(device, precision):
        f_ctx = model.frame_encoder(prev) if model.context_frame else None  # the given frame, once
        for t in range(1, T):
            pose = poses[:, t].float()
            if poses.dtype == torch.uint8:
                pose = pose / 255
            z = torch.randn((1, model.z_dim, H, W), generator=g, device=device).expand(B, -1, -1, -1)
            f = model.frame_encoder(prev)
            l = model.pose_encoder(pose.contiguous(memory_format=fmt))  # noqa: E741
            prev = model.decode(f, l, z.to(f.dtype), f_ctx).float().contiguous(memory_format=fmt)
            out[:, t] = prev
    model.train(was_training)
    return out


def reference_scores(frames: torch.Tensor) -> tuple[float, float]:
    """Trivial predictors on one video (T, 3, H, W) in [0, 1]: repeat the first frame, and the
    mean of all the video's frames (a blur that ignores the pose). Mean PSNR over frames 1..T-1."""
    frames = frames.float()
    repeat = psnr(frames[:1].expand_as(frames[1:]), frames[1:]).mean().item()
    mean = psnr(frames.mean(0, keepdim=True).expand_as(frames[1:]), frames[1:]).mean().item()
    return repeat, mean


def batches_by_length(lengths: list[int], max_videos: int = MAX_VIDEOS) -> list[list[int]]:
    """Indices of videos to roll out together: equal lengths, at most ``max_videos`` per batch
    (a bound on memory), in order of first appearance."""
    by_len: dict[int, list[int]] = {}
    for v, n in enumerate(lengths):
        by_len.setdefault(n, []).append(v)
    return [vids[i : i + max_videos] for vids in by_len.values() for i in range(0, len(vids), max_videos)]


def shift_poses(poses: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate the pose sequence (B, T, ...) in time: pose'[t] = pose[(t + k) mod T]."""
    return torch.roll(poses, shifts=-k, dims=1)
