"""``cvae bench``: the published Lab4 loop and ours, side by side, in one process and one run.

Three groups, each with a ``reference`` entry (``cvae bench --json``, docs/performance.md):

- ``train``: trained frames/s (B clips x (T-1) predicted frames per optimizer step) of a whole
  step: data, forward, backward, grad clip, Adam.
  ``reference`` is the lab's training loop (``reference_step``): fp32, default memory format,
  one FrameEncoder call for the previous frame and one for the target and one PoseEncoder call per
  time step, and every clip decoded from its PNGs (PIL, resize, to float) as the template's
  Dataset does; the decoding is counted in series with the step (on a small CPU the template's
  loader workers take their time from the same cores). ``reference_in_memory`` is the same loop
  fed from memory, to separate the two effects. Ours is ``cvae.step.train_step`` on clips
  gathered from the uint8 frame cache, in fp32, bf16 autocast, channels_last, torch.compile,
  alone and combined.
- ``rollout``: predicted frames/s of the validation rollout (z from the prior, own outputs fed
  back) of several videos: ``reference`` rolls them out one at a time in fp32 (the lab's
  validation loop); ours batches all videos in one rollout, and in the ``frozen`` settings runs
  graphs compiled with the weights as constants (inference only: ``cvae.device.frozen_weights``).
- ``loader``: clips/s of decoding a clip's PNGs (``reference``) vs gathering it from memory.

Also: FLOPs of one trained frame and one rollout frame (``torch.utils.flop_counter``), the
device's matmul rate (fp32 and bf16, n x n matmuls, median), achieved FLOP/s and the share of that
rate per setting; the loss of each setting's first step from the same weights, batch and noise
(agreement with fp32); which settings the device supports. Every figure is a median over
repeats taken round-robin across settings after a warm-up, so load from other processes on a
shared machine spreads evenly over the settings.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cvae.data import clip_starts, gather, load_split
from cvae.device import compile_model, cpu_flags, fast_bf16, frozen_weights, memory_format, tune_cpu_allocator
from cvae.lab4_layout import scan_split
from cvae.model import CVAE, build_model
from cvae.reference_loop import load_clips_from_png, reference_step
from cvae.rollout import rollout
from cvae.spec import ExperimentSpec
from cvae.step import forward_backward
from cvae.training import build_optimizer

BETA, TFR = 1.0, 0.0  # teacher forcing off: where most of a run is spent; ours then does the lab's arithmetic
SEED = 1234
ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


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


# --------------------------------------------------------------------------- timing


def failure(e: BaseException) -> str:
    """A skipped setting's reason: the exception's class and first line."""
    text = str(e).strip()
    return f"failed: {e.__class__.__name__}" + (f": {text.splitlines()[0][:200]}" if text else "")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def with_settings(spec: ExperimentSpec, precision: str, channels_last: bool) -> ExperimentSpec:
    return spec.model_copy(
        update={"train": spec.train.model_copy(update={"precision": precision, "channels_last": channels_last})}
    )


def round_robin(
    fns: dict[str, Callable[[], Any]], repeats: int, device: torch.device, progress=None
) -> dict[str, float]:
    """Median seconds of one call of each fn, timed in turns (fn1, fn2, ..., fn1, fn2, ...)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
        if progress:
            progress(r + 1, repeats)
    return {k: statistics.median(v) for k, v in times.items()}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the convolutions and matmuls fn runs, forward and backward (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul (2 n^3 FLOPs), median of ``repeats`` after a warm-up."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    t = round_robin({"mm": lambda: a @ b}, repeats, device)["mm"]
    return 2 * n**3 / t


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
        from cvae.synth import PRESETS, synthesize

        root, synthetic = tmp / "data", True
        n = max(SYNTH_CLIPS_PER_VIDEO * spec.data.clip_len, plan.rollout_frames, PRESETS["tiny"].train_frames)
        videos = max(plan.rollout_videos, math.ceil(spec.train.batch_size / (n // spec.data.clip_len)) + 1)
        synthesize(root, "tiny", seed=0, train_videos=videos, train_frames=n)
    train = load_split(root, "train", spec.data.frame_size)
    pairs = [pair for v in scan_split(root, "train") for pair in v.pairs]
    starts = clip_starts(train, spec.data.clip_len)
    n_frames = min(plan.rollout_frames, max(train.lengths))
    windows = clip_starts(train, n_frames).tolist()
    rollout_starts = [windows[(i * len(windows)) // plan.rollout_videos] for i in range(plan.rollout_videos)]
    return BenchData(
        root,
        synthetic,
        train.frames.to(device),
        train.poses.to(device),
        pairs,
        starts.to(device),
        rollout_starts,
        n_frames,
    )


def our_step(model: CVAE, opt, x: torch.Tensor, pose: torch.Tensor, spec: ExperimentSpec, beta: float, tfr: float):
    """The training loop's step (``cvae.step.forward_backward``, then Adam), without logging."""
    if x.device.type == "cuda":  # CUDA graphs (compile mode reduce-overhead): a new step's buffers
        torch.compiler.cudagraph_mark_step_begin()
    out = forward_backward(model, opt, x, pose, spec, beta, tfr)
    opt.step()
    return out["loss"]


def fresh_model(spec: ExperimentSpec, device: torch.device, channels_last: bool, compile_mode: str | None) -> CVAE:
    """Same weights for every setting (seeded), in the setting's memory format, compiled or not."""
    torch.manual_seed(spec.seed)
    model = build_model(spec).to(device, memory_format=memory_format(channels_last))
    if compile_mode is not None:
        compile_model(model, mode=None if compile_mode == FROZEN else compile_mode)
    return model


def first_loss(step: Callable[[], torch.Tensor]) -> float:
    """The loss of a step run with the bench's fixed noise (same coins and z for every setting)."""
    torch.manual_seed(SEED)
    return float(step())


# --------------------------------------------------------------------------- groups


def not_timed(precision: str, mode: str | None, plan: Plan, device: torch.device, bf16: bool) -> str | None:
    """Why a setting is left out of this run, or None to time it."""
    if mode is not None and not plan.compile:
        return "not run with --quick (compilation takes minutes)"
    if precision == "bf16" and not bf16:
        if fast_bf16(device):
            return "left out by --no-bf16"
        # Emulated bf16 is many times slower than fp32 (docs/performance.md), so the bf16 group
        # would take hours, and train.precision: auto never picks it there.
        return f"bf16 is not native on this {device.type} (train.precision auto picks fp32); --bf16 times it"
    return None


def bench_loader(spec: ExperimentSpec, data: BenchData, plan: Plan, device: torch.device) -> dict[str, float]:
    """Seconds per batch of B clips: PNG decode per clip (reference) vs gather from memory."""
    B, T, size = spec.train.batch_size, spec.data.clip_len, spec.data.frame_size
    idx = data.starts[:B]
    host_starts = idx.tolist()

    def gather_batch():
        for _ in range(GATHERS_PER_SAMPLE):
            gather(data.frames, idx, T), gather(data.poses, idx, T)

    fns = {
        "reference": lambda: load_clips_from_png(data.pairs, host_starts, T, size, device),
        "in_memory": gather_batch,
    }
    for fn in fns.values():
        fn()
    t = round_robin(fns, max(plan.repeats, LOADER_MIN_REPEATS), device)
    t["in_memory"] /= GATHERS_PER_SAMPLE
    return t


def bench_train(
    spec: ExperimentSpec,
    data: BenchData,
    plan: Plan,
    device: torch.device,
    progress=None,
    tfr: float = TFR,
    settings: dict[str, tuple[str, bool, str | None]] | None = None,
    in_memory_reference: bool = True,
    bf16: bool = True,
) -> dict:
    """Seconds per step of the reference and of each of our settings (default: all of them,
    plus CUDA graphs on CUDA), the first step's loss of each, and the settings skipped (``bf16``:
    time the bf16 settings, ``not_timed``)."""
    B, T, size = spec.train.batch_size, spec.data.clip_len, spec.data.frame_size
    g = torch.Generator().manual_seed(SEED)
    order = torch.randperm(len(data.starts), generator=g)
    n_batches = max(1, len(order) // B)
    counter = {"i": 0}

    def next_idx() -> torch.Tensor:  # clips in a fixed shuffled order, as an epoch reads them
        i = counter["i"] % n_batches
        counter["i"] += 1
        return data.starts[order[i * B : (i + 1) * B].to(device)]

    def batch_in_memory(idx):
        return gather(data.frames, idx, T), gather(data.poses, idx, T)

    def batch_from_png(idx):
        return load_clips_from_png(data.pairs, idx.tolist(), T, size, device)

    first_idx = data.starts[order[:B].to(device)]
    steps: dict[str, Callable[[], torch.Tensor]] = {}
    losses: dict[str, float] = {}
    skipped: dict[str, str] = {}
    ref_spec = with_settings(spec, "fp32", False)

    def make(name: str, fn_step, spec_s, model, batch_fn):
        opt = build_optimizer(spec_s, model)[0]
        losses[name] = first_loss(lambda: fn_step(model, opt, *batch_fn(first_idx), spec_s, BETA, tfr))
        steps[name] = lambda: fn_step(model, opt, *batch_fn(next_idx()), spec_s, BETA, tfr)

    make("reference", reference_step, ref_spec, fresh_model(spec, device, False, None), batch_from_png)
    if in_memory_reference:  # the same loop fed from memory: how much of the gap is data, how much the step
        make("reference_in_memory", reference_step, ref_spec, fresh_model(spec, device, False, None), batch_in_memory)
    if settings is None:
        settings = dict(TRAIN_SETTINGS) | (CUDA_GRAPHS if device.type == "cuda" else {})
    for name, (precision, cl, mode) in settings.items():
        if reason := not_timed(precision, mode, plan, device, bf16):
            skipped[name] = reason
            continue
        spec_s = with_settings(spec, precision, cl)
        try:
            model = fresh_model(spec, device, cl, mode)
            make(name, our_step, spec_s, model, batch_in_memory)
            for _ in range(plan.warmup):
                steps[name]()
        except Exception as e:  # e.g. torch.compile without a working C++ compiler
            steps.pop(name, None)
            losses.pop(name, None)
            skipped[name] = failure(e)
    for name in [k for k in steps if k.startswith("reference")]:
        for _ in range(plan.warmup):
            steps[name]()
    seconds = round_robin(steps, plan.repeats, device, progress)
    return {"seconds": seconds, "losses": losses, "skipped": skipped}


def bench_rollout(spec: ExperimentSpec, data: BenchData, plan: Plan, device: torch.device, bf16: bool = True) -> dict:
    L, V = data.rollout_frames, len(data.rollout_starts)
    starts = torch.tensor(data.rollout_starts, device=device)
    frames = gather(data.frames, starts, L)  # (V, L, 3, H, W) float
    poses = data.poses[starts[:, None] + torch.arange(L, device=device)]  # (V, L, 3, H, W) uint8, as validate passes
    first = frames[:, 0]
    fns: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}

    def one_by_one(model, precision, cl):
        def run_each():
            return torch.cat([rollout(model, first[v, None], poses[v, None], SEED, precision, cl) for v in range(V)])

        return run_each

    def batched(model, precision, cl):
        return lambda: rollout(model, first, poses, SEED, precision, cl)

    def frozen(fn):
        def call():
            with frozen_weights():
                return fn()

        return call

    fns["reference"] = one_by_one(fresh_model(spec, device, False, None), "fp32", False)
    outputs = {"reference": fns["reference"]()}
    for name, (is_batched, precision, cl, mode) in ROLLOUT_SETTINGS.items():
        if reason := not_timed(precision, mode, plan, device, bf16):
            skipped[name] = reason
            continue
        try:
            model = fresh_model(spec, device, cl, mode)
            fns[name] = (batched if is_batched else one_by_one)(model, precision, cl)
            if mode == FROZEN:
                fns[name] = frozen(fns[name])
            for _ in range(max(1, plan.warmup)):
                outputs[name] = fns[name]()
        except Exception as e:
            fns.pop(name, None)
            skipped[name] = failure(e)
    # Every video draws the same z alone or batched, so each setting's frames are comparable with the reference's.
    diff = {k: (v - outputs["reference"]).abs().mean().item() for k, v in outputs.items() if k != "reference"}
    seconds = round_robin(fns, plan.rollout_repeats, device)
    return {"seconds": seconds, "frames": V * (L - 1), "skipped": skipped, "mean_abs_diff": diff}


def flops_per_frame(spec: ExperimentSpec, data: BenchData, device: torch.device) -> dict[str, float]:
    """FLOPs of one trained frame (ours and the lab's loop, forward + backward) and one rollout frame."""
    B, T = spec.train.batch_size, spec.data.clip_len
    idx = data.starts[:B]
    x, p = gather(data.frames, idx, T), gather(data.poses, idx, T)
    fp32 = with_settings(spec, "fp32", False)
    model = fresh_model(spec, device, False, None)
    opt = build_optimizer(fp32, model)[0]
    ours = count_flops(lambda: our_step(model, opt, x, p, fp32, BETA, TFR)) / (B * (T - 1))
    ref = count_flops(lambda: reference_step(model, opt, x, p, fp32, BETA, TFR)) / (B * (T - 1))
    L = min(FLOP_ROLLOUT_FRAMES, data.rollout_frames)
    roll = count_flops(lambda: rollout(model, x[:, 0], p[:, :L], SEED)) / (B * (L - 1))
    return {"train_ours": ours, "train_reference": ref, "rollout": roll}


# --------------------------------------------------------------------------- the device


def device_info(device: torch.device) -> dict[str, Any]:
    """What the device is and which settings it supports."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        return {
            "name": name,
            "compute_capability": f"{major}.{minor}",
            "bf16_native": fast_bf16(device),
            "compile": True,
            "cuda_graphs": True,
        }
    flags = cpu_flags()
    model_name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    return {
        "name": model_name,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "bf16_native": fast_bf16(device),
        "cxx_compiler": shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++"),
    }


def describe(device: torch.device, info: dict[str, Any]) -> str:
    if device.type == "cuda":
        return f"{device} ({info['name']}, sm {info['compute_capability']})"
    feats = " ".join([info["cpu_capability"]] + [f for f in ("avx512_bf16", "amx_bf16") if info.get(f)])
    return f"cpu ({info['name']}, {info['threads']} threads, {feats})"


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --------------------------------------------------------------------------- the run


def run(
    spec: ExperimentSpec, device: torch.device, plan: Plan = FULL, console=None, bf16: bool | None = None
) -> dict[str, Any]:
    """All groups; returns the JSON object of ``cvae bench --json`` (docs/performance.md) with extra
    keys: ``flops``, ``matmul_flops_per_s``, ``achieved``, ``agreement``, ``seconds``, ``skipped``,
    ``supports``, ``data``, ``load_avg``, ``max_rss_mb``. ``bf16``: time the bf16 settings (None:
    where bf16 is native, ``fast_bf16``)."""
    from cvae.console import task

    load0 = loadavg()
    info = device_info(device)
    info["bf16_timed"] = bf16 = fast_bf16(device) if bf16 is None else bf16
    # As `cvae train` does: every setting, the reference too, runs with the tuned allocator.
    info["malloc_tuned"] = device.type == "cpu" and tune_cpu_allocator()
    # oneDNN keeps its compiled convolution kernels in an LRU cache of 1,024 by default; the bench's
    # many settings (shapes x precisions x layouts, forward and backward) overflow it and each
    # rollout step then rebuilds kernels, which slows the rollouts timed after the train group.
    # Read when oneDNN builds its first kernel, so this takes effect in a fresh `cvae bench`.
    info["onednn_cache_capacity"] = os.environ.setdefault(ONEDNN_CACHE_ENV, "8192")
    B, T = spec.train.batch_size, spec.data.clip_len
    with tempfile.TemporaryDirectory(prefix="cvae-bench-") as tmp:
        with task(console, "bench: data") as _:
            data = bench_data(spec, plan, Path(tmp), device)
        with task(console, "bench: matmul rate") as _:
            rates = {
                "fp32": matmul_rate(device, torch.float32, plan.matmul_n),
                # Emulated bf16 matmuls ran at 0.9 GFLOP/s on an AVX2-only CPU: minutes at n = 2048.
                "bf16": matmul_rate(device, torch.bfloat16, plan.matmul_n) if bf16 else None,
            }
        with task(console, "bench: FLOPs") as _:
            flops = flops_per_frame(spec, data, device)
        with task(console, "bench: loader") as _:
            loader_s = bench_loader(spec, data, plan, device)
        with task(console, "bench: train steps (warm-up and compilation first)", total=plan.repeats) as update:
            tr = bench_train(spec, data, plan, device, update, bf16=bf16)
        with task(console, "bench: train steps with teacher forcing 1", total=plan.repeats) as update:
            forced = {k: v for k, v in TRAIN_SETTINGS.items() if k in ("fp32", "bf16+channels_last")}
            tf1 = bench_train(spec, data, plan, device, update, 1.0, forced, in_memory_reference=False, bf16=bf16)
        with task(console, "bench: rollout") as _:
            ro = bench_rollout(spec, data, plan, device, bf16)
    frames_per_step = B * (T - 1)
    train = {k: frames_per_step / s for k, s in tr["seconds"].items()}
    roll = {k: ro["frames"] / s for k, s in ro["seconds"].items()}
    loader = {k: B / s for k, s in loader_s.items()}

    def precision_of(name: str) -> str:
        return "bf16" if "bf16" in name else "fp32"

    achieved = {"train": {}, "rollout": {}}
    for name, fps in train.items():
        per_frame = flops["train_reference"] if name.startswith("reference") else flops["train_ours"]
        achieved["train"][name] = {
            "flops_per_s": per_frame * fps,
            "pct_of_matmul": 100 * per_frame * fps / rates[precision_of(name)],
        }
    for name, fps in roll.items():
        achieved["rollout"][name] = {
            "flops_per_s": flops["rollout"] * fps,
            "pct_of_matmul": 100 * flops["rollout"] * fps / rates[precision_of(name)],
        }
    fp32_loss = tr["losses"].get("fp32")
    agreement = {k: abs(v - fp32_loss) / abs(fp32_loss) for k, v in tr["losses"].items() if fp32_loss and k != "fp32"}
    best = max((k for k in train if not k.startswith("reference")), key=train.get)
    step_s = tr["seconds"]
    return {
        "device": describe(device, info),
        "train": train,
        "rollout": roll,
        "loader": loader,
        # Extra: the same steps with teacher forcing 1 (the lab's first epochs): ours batches the clip.
        "train_teacher_forced": {k: frames_per_step / s for k, s in tf1["seconds"].items()},
        "flops": {
            "per_trained_frame": flops["train_ours"],
            "per_trained_frame_reference": flops["train_reference"],
            "per_rollout_frame": flops["rollout"],
        },  # fmt: skip
        "matmul_flops_per_s": rates,
        "achieved": achieved,
        "agreement": {
            "rel_loss_diff_vs_fp32": agreement,
            "losses": tr["losses"],
            "rollout_mean_abs_diff_vs_reference": ro["mean_abs_diff"],  # pixels in [0, 1], all frames
        },
        "seconds": {"train_step": step_s, "rollout": ro["seconds"], "loader_batch": loader_s},
        "speedup": {
            "train_best": best,
            "train_best_vs_reference": train[best] / train["reference"],
            "rollout_best_vs_reference": max(v for k, v in roll.items() if k != "reference") / roll["reference"],
            "loader_in_memory_vs_reference": loader["in_memory"] / loader["reference"],
            "data_share_of_best_step": loader_s["in_memory"] / step_s[best],
            "png_share_of_reference_step": loader_s["reference"] / step_s["reference"],
        },
        "skipped": {
            **{f"train/{k}": v for k, v in tr["skipped"].items()},
            **{f"rollout/{k}": v for k, v in ro["skipped"].items()},
        },  # fmt: skip
        "supports": info,
        "shape": {
            "batch": B,
            "clip_len": T,
            "frame_size": list(spec.data.frame_size),
            "widths": [spec.model.frame_dim, spec.model.pose_dim, spec.model.z_dim, spec.model.fusion_dim],
            "rollout_videos": len(data.rollout_starts),
            "rollout_frames": data.rollout_frames,
            "teacher_forcing": TFR,
            "repeats": plan.repeats,
            "warmup": plan.warmup,
        },  # fmt: skip
        "data": {"root": "synthetic tiny (spec data missing)" if data.synthetic else str(data.root)},
        "load_avg": {"start": load0, "end": loadavg()},
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
