"""What a benchmark runs: its plans (full or quick), the settings of ours it compares with the
reference, the data it runs on (the spec's training split, or a small synthetic one), the same
seeded model for every setting, and our training step without its logging.

Shared by ``cvae bench`` (cvae/bench/run.py) and the measurement scripts of this folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cvae.data.clips import clip_starts
from cvae.data.frames import load_split
from cvae.data.layout import scan_split
from cvae.device import compile_model, memory_format
from cvae.model import CVAE, build_model
from cvae.spec import ExperimentSpec
from cvae.training.step import StepGradients

BETA, TFR = 1.0, 0.0  # teacher forcing off: where most of a run is spent; ours then does the lab's arithmetic
SEED = 1234


@dataclass(frozen=True)
class Plan:
    warmup: int  # untimed steps per setting (compilation happens here)
    repeats: int  # timed steps per setting (the median is reported)
    rollout_repeats: int  # timed rollouts per setting (each is many steps long)
    rollout_frames: int  # frames per rolled-out video (frame 0 given)
    rollout_videos: int
    matmul_n: int
    compile: bool


FULL = Plan(warmup=2, repeats=7, rollout_repeats=3, rollout_frames=64, rollout_videos=4, matmul_n=2048, compile=True)
QUICK = Plan(warmup=1, repeats=2, rollout_repeats=2, rollout_frames=8, rollout_videos=4, matmul_n=256, compile=False)
LOADER_MIN_REPEATS = 3  # PNG decoding is fast and noisy: at least this many samples
GATHERS_PER_SAMPLE = 20  # a gather takes microseconds: time several per sample
FLOP_ROLLOUT_FRAMES = 8  # a short rollout is enough to count the FLOPs of one rollout frame
SYNTH_CLIPS_PER_VIDEO = 3  # the synthetic stand-in's videos hold at least this many clips

# Our settings: name -> (precision, channels_last, compile mode or None).
TRAIN_SETTINGS: dict[str, tuple[str, bool, str | None]] = {
    "fp32": ("fp32", False, None),
    "bf16": ("bf16", False, None),
    "channels_last": ("fp32", True, None),
    "bf16+channels_last": ("bf16", True, None),
    "tf32+channels_last": ("tf32", True, None),  # CUDA 8.0+ only
    "compile": ("fp32", False, "default"),
    "compile+bf16+channels_last": ("bf16", True, "default"),
}
CUDA_GRAPHS = {"compile+bf16+channels_last+cudagraphs": ("bf16", True, "reduce-overhead")}
FROZEN = "frozen"  # torch.compile (default mode) under inductor freezing: inference only (cvae.device.frozen_weights)
ROLLOUT_SETTINGS: dict[str, tuple[bool, str, bool, str | None]] = {  # name -> (batched, precision, cl, compile)
    "one_video_bf16+channels_last": (False, "bf16", True, None),
    "batched_fp32": (True, "fp32", False, None),
    "batched_fp32+channels_last": (True, "fp32", True, None),
    "batched_bf16+channels_last": (True, "bf16", True, None),
    "batched_compile+bf16+channels_last": (True, "bf16", True, "default"),
    "batched_frozen+fp32+channels_last": (True, "fp32", True, FROZEN),
    "batched_frozen+bf16+channels_last": (True, "bf16", True, FROZEN),
}


# --------------------------------------------------------------------------- settings


def with_settings(
    spec: ExperimentSpec, precision: str, channels_last: bool, compile_mode: str | None = None
) -> ExperimentSpec:
    """``spec`` with a setting's precision, memory format and ``train.compile`` (None: off)."""
    update = {"precision": precision, "channels_last": channels_last, "compile": compile_mode or False}
    return spec.model_copy(update={"train": spec.train.model_copy(update=update)})


# --------------------------------------------------------------------------- data


@dataclass
class BenchData:
    root: Path
    synthetic: bool  # generated here because the spec's data folder is missing
    frames: torch.Tensor  # (N, 3, H, W) uint8 on the device
    poses: torch.Tensor
    pairs: list[tuple[Path, Path]]  # PNG files of frame i of ``frames``
    starts: torch.Tensor  # (n_clips,) clip starts, on the device
    rollout_starts: list[int]  # one window of rollout_frames per rolled-out video
    rollout_frames: int


def bench_data(spec: ExperimentSpec, plan: Plan, tmp: Path, device: torch.device) -> BenchData:
    """The spec's training split, or a small synthetic one in ``tmp`` when it is not there."""
    root, synthetic = Path(spec.data.root), False
    if not (root / "train").is_dir():
        from cvae.data.synth import PRESETS, synthesize

        root, synthetic = tmp / "data", True
        n = max(SYNTH_CLIPS_PER_VIDEO * spec.data.clip_len, plan.rollout_frames, PRESETS["tiny"].train_frames)
        videos = max(plan.rollout_videos, math.ceil(spec.train.batch_size / (n // spec.data.clip_len)) + 1)
        synthesize(root, "tiny", seed=0, train_videos=videos, train_frames=n)
    files = scan_split(root, "train")
    train = load_split(files, spec.data.frame_size)
    starts = torch.tensor(clip_starts(train.starts, train.lengths, spec.data.clip_len))
    n_frames = min(plan.rollout_frames, max(train.lengths))
    windows = clip_starts(train.starts, train.lengths, n_frames)
    rollout_starts = [windows[(i * len(windows)) // plan.rollout_videos] for i in range(plan.rollout_videos)]
    return BenchData(
        root,
        synthetic,
        train.frames.to(device),
        train.poses.to(device),
        files.pairs,
        starts.to(device),
        rollout_starts,
        n_frames,
    )


class OurStep:
    """The training loop's step (``cvae.training.step.StepGradients``: forward, backward, grad clip, compiled
    whole when the spec's ``train.compile`` says), then Adam, without logging. One per setting: a
    compiled step keeps its graphs."""

    def __init__(self, spec: ExperimentSpec, device: torch.device) -> None:
        self.step = StepGradients(spec, device)

    def __call__(self, model: CVAE, opt, x: torch.Tensor, pose: torch.Tensor, spec, beta: float, tfr: float):
        out = self.step(model, opt, x, pose, beta, tfr)
        opt.step()
        return out["loss"]


def our_step(model: CVAE, opt, x: torch.Tensor, pose: torch.Tensor, spec: ExperimentSpec, beta: float, tfr: float):
    """One eager step of ours (``OurStep``); the loss."""
    return OurStep(spec, x.device)(model, opt, x, pose, spec, beta, tfr)


def fresh_model(spec: ExperimentSpec, device: torch.device, channels_last: bool, compile_mode: str | None) -> CVAE:
    """Same weights for every setting (seeded), in the setting's memory format, its modules compiled or
    not (the rollout's settings; a training setting compiles its whole step: ``OurStep``)."""
    torch.manual_seed(spec.seed)
    model = build_model(spec).to(device, memory_format=memory_format(channels_last))
    if compile_mode is not None:
        compile_model(model, mode=None if compile_mode == FROZEN else compile_mode)
    return model


def first_loss(step: Callable[[], torch.Tensor]) -> float:
    """The loss of a step run with the bench's fixed noise (same coins and z for every setting)."""
    torch.manual_seed(SEED)
    return float(step())
