"""The clips an epoch trains on: the one place that counts them, orders them and gathers them.

A clip is ``data.clip_len`` consecutive frames of one video (the first one given, the rest
predicted); clips do not overlap and never cross a video, so a video of n frames holds
n // clip_len of them (the lab's rule). Each epoch takes the first ``data.partial`` of the clips
(``train.fast_partial`` while fast training), in a new seeded order every epoch with
``data.shuffle`` or in order (the template's loader), and drops the last incomplete batch (as the
lab's DataLoader does).

``steps_per_epoch_of`` counts a spec's steps from file names alone (``cvae spec show --schedule``);
it needs no torch, which only the batch-making parts import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cvae.errors import DataError

if TYPE_CHECKING:
    import torch

    from cvae.data.frames import VideoSet

EPOCH_SEED_STRIDE = 1_000_003  # a prime: the shuffle of (seed, epoch) is seeded by seed * stride + epoch


def clips_in(length: int, clip_len: int) -> int:
    """Clips in a video of ``length`` frames: consecutive, non-overlapping, inside the video."""
    return length // clip_len


def count_clips(lengths: list[int], clip_len: int) -> int:
    """Training clips in videos of these lengths."""
    return sum(clips_in(n, clip_len) for n in lengths)


def clip_starts(video_starts: list[int], lengths: list[int], clip_len: int) -> list[int]:
    """Global start index of every clip of videos that begin at ``video_starts`` (frame i of video v
    is frame ``video_starts[v] + i`` of the split)."""
    spans = zip(video_starts, lengths, strict=True)
    starts = [s + k * clip_len for s, n in spans for k in range(clips_in(n, clip_len))]
    if not starts:
        longest = max(lengths)
        raise DataError(f"no training clip fits: clip_len {clip_len} exceeds the longest video ({longest} frames)")
    return starts


def epoch_fraction(spec, epoch: int) -> float:
    """The fraction of the training clips epoch ``epoch`` (from 0) uses: ``train.fast_partial``
    during fast training, else ``data.partial``."""
    t = spec.train
    return t.fast_partial if t.fast_train and epoch < t.fast_epochs else spec.data.partial


def clips_used(n_clips: int, fraction: float) -> int:
    """Clips an epoch that uses ``fraction`` of ``n_clips`` takes: at least one."""
    return max(1, int(n_clips * fraction))


def steps_per_epoch(spec, n_clips: int) -> list[int]:
    """Optimizer steps of every epoch, given ``n_clips`` training clips."""
    return [clips_used(n_clips, epoch_fraction(spec, e)) // spec.train.batch_size for e in range(spec.train.epochs)]


def check_clips(spec, lengths: list[int]) -> None:
    """Every epoch gets at least one batch of clips from training videos of these lengths."""
    n_clips = count_clips(lengths, spec.data.clip_len)
    if n_clips == 0:
        raise DataError(
            f"{spec.data.root}: no training clip fits: data.clip_len {spec.data.clip_len} exceeds the longest "
            f"video ({max(lengths)} frames)"
        )
    if min(steps_per_epoch(spec, n_clips)) == 0:
        raise DataError(
            f"{spec.data.root}: {n_clips} training clips of data.clip_len {spec.data.clip_len} frames, too few "
            f"for one batch of train.batch_size ({spec.train.batch_size}) at the data fraction used"
        )


def steps_per_epoch_of(spec) -> tuple[list[int], str]:
    """Optimizer steps of each epoch of ``spec``, from the training clips its dataset holds, without
    decoding a frame: the file index of ``data.root`` when it exists, else the sizes of the synthetic
    preset it would generate. Returns the steps and where the clip count came from."""
    from cvae.data.layout import scan_split
    from cvae.data.synth import PRESETS

    root, clip = Path(spec.data.root), spec.data.clip_len
    if (root / "train").is_dir():
        n_clips = count_clips(scan_split(root, "train").lengths, clip)
        where = f"{n_clips} training clips in {root}"
    elif spec.data.preset is not None:
        p = PRESETS[spec.data.preset]
        n_clips = count_clips([p.train_frames] * p.train_videos, clip)
        where = f"{n_clips} training clips of the synthetic {spec.data.preset} preset ({root} not generated yet)"
    else:
        raise DataError(f"data.root {str(root)!r}: folder not found, so its training clips cannot be counted")
    return steps_per_epoch(spec, n_clips), where


def epoch_batches(
    n_clips: int, batch_size: int, fraction: float, seed: int, epoch: int, shuffle: bool = True
) -> torch.Tensor:
    """(n_batches, batch_size) clip indices for one epoch: the first ``fraction`` of the clips, in a
    shuffle seeded by (seed, epoch) or (``shuffle`` false, the template's loader) in order; the
    last incomplete batch dropped."""
    import torch

    if shuffle:
        order = torch.randperm(n_clips, generator=torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch))
    else:
        order = torch.arange(n_clips)
    order = order[: clips_used(n_clips, fraction)]
    n_batches = len(order) // batch_size
    return order[: n_batches * batch_size].view(n_batches, batch_size)


def gather(images: torch.Tensor, starts: torch.Tensor, clip_len: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 and (B,) starts -> (B, T, 3, H, W) float in [0, 1]."""
    import torch

    idx = starts[:, None] + torch.arange(clip_len, device=starts.device)  # (B, T)
    # index_select on the flat index: faster than images[idx] on the CPU (timed by cvae bench).
    return images.index_select(0, idx.flatten()).float().div_(255).unflatten(0, idx.shape)


class TrainingClips:
    """The training clips of a split in memory and the batches each epoch of ``spec`` takes."""

    def __init__(self, spec, videos: VideoSet) -> None:
        import torch

        self.spec, self.videos = spec, videos
        starts = clip_starts(videos.starts, videos.lengths, spec.data.clip_len)
        self.starts = torch.tensor(starts, dtype=torch.long, device=videos.frames.device)  # (n_clips,)
        self.steps = steps_per_epoch(spec, len(starts))  # no epoch has 0 steps (check_clips said so)

    @property
    def total_steps(self) -> int:
        return sum(self.steps)

    def batches(self, epoch: int):
        """Epoch ``epoch`` (from 0): its batches of clips x, pose, each (B, T, 3, H, W) float in [0, 1]."""
        d, t = self.spec.data, self.spec.train
        order = epoch_batches(
            len(self.starts), t.batch_size, epoch_fraction(self.spec, epoch), self.spec.seed, epoch, d.shuffle
        )
        for idx in order.to(self.starts.device):
            starts = self.starts[idx]
            yield gather(self.videos.frames, starts, d.clip_len), gather(self.videos.poses, starts, d.clip_len)
