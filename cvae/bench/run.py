"""``cvae bench``: the published Lab4 loop and ours, side by side, in one process and one run.

Three groups, each with a ``reference`` entry (``cvae bench --json``, docs/performance.md):

- ``train``: trained frames/s (B clips x (T-1) predicted frames per optimizer step) of a whole
  step: data, forward, backward, grad clip, Adam. ``reference`` is the lab's loop
  (``reference_step``): fp32, default memory format, per time step one FrameEncoder call for the
  previous frame, one for the target and one PoseEncoder call, every clip decoded from its PNGs as
  the template's Dataset does (in series with the step: on a small CPU the template's loader
  workers take their time from the same cores); ``reference_in_memory`` is the same loop fed from
  memory. Ours is ``cvae.training.step.loss_and_gradients`` on clips gathered from the uint8 frame cache,
  in fp32, bf16 autocast, channels_last, torch.compile, alone and combined.
- ``rollout``: predicted frames/s of the validation rollout of several videos: ``reference`` rolls
  them out one at a time in fp32 (the lab's validation loop); ours batches them, and in the
  ``frozen`` settings runs graphs compiled with the weights as constants (``frozen_weights``).
- ``loader``: clips/s of decoding a clip's PNGs (``reference``) vs gathering it from memory.

Also: FLOPs of a trained and a rollout frame, the device's matmul rate (fp32 and bf16), achieved
FLOP/s and its share of that rate per setting; each setting's first loss from the same weights,
batch and noise (agreement with fp32); what the device supports. Every figure is a median over
repeats taken in turns across settings after a warm-up, so load from other processes on a shared
machine spreads evenly over the settings.
"""

from __future__ import annotations

import os
import resource
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cvae.bench.reference_loop import load_clips_from_png, reference_step
from cvae.bench.settings import (
    BETA,
    CUDA_GRAPHS,
    FLOP_ROLLOUT_FRAMES,
    FROZEN,
    FULL,
    GATHERS_PER_SAMPLE,
    LOADER_MIN_REPEATS,
    ROLLOUT_SETTINGS,
    SEED,
    TFR,
    TRAIN_SETTINGS,
    BenchData,
    OurStep,
    Plan,
    bench_data,
    first_loss,
    fresh_model,
    our_step,
    with_settings,
)
from cvae.bench.timing import count_flops, describe, device_info, failure, loadavg, matmul_rate, round_robin
from cvae.data.clips import gather
from cvae.device import Numerics, apply_numerics, fast_bf16, frozen_weights, has_tf32, numerics, tune_cpu_allocator
from cvae.spec import ExperimentSpec
from cvae.training.loop import build_optimizer
from cvae.training.rollout import rollout

ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"

# --------------------------------------------------------------------------- groups


def not_timed(precision: str, mode: str | None, plan: Plan, device: torch.device, bf16: bool) -> str | None:
    """Why a setting is left out of this run, or None to time it."""
    if precision == "tf32" and not has_tf32(device):
        return f"no TF32 on this {device.type} (CUDA 8.0+ only): it would run fp32"
    if mode is not None and not plan.compile:
        return "not run with --quick (compilation takes minutes)"
    if precision == "bf16" and not bf16:
        if fast_bf16(device):
            return "left out by --no-bf16"
        # Emulated bf16 is many times slower than fp32 (docs/performance.md), so the bf16 group
        # would take hours, and train.precision: auto never picks it there.
        return f"bf16 is not native on this {device.type} (train.precision auto picks fp32); --bf16 times it"
    return None


def in_numerics(n: Numerics, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with the flags of ``n`` (process-wide: set again before every call, since the settings
    are timed in turns)."""

    def call():
        apply_numerics(n)
        return fn()

    return call


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
        # Each setting in its own numerics (process-wide flags, set before each of its steps): fp32 is IEEE.
        n = numerics(device, spec_s.train.precision)
        opt = build_optimizer(spec_s, model, fused=n.fused_adam)[0]
        losses[name] = first_loss(in_numerics(n, lambda: fn_step(model, opt, *batch_fn(first_idx), spec_s, BETA, tfr)))
        steps[name] = in_numerics(n, lambda: fn_step(model, opt, *batch_fn(next_idx()), spec_s, BETA, tfr))

    make("reference", reference_step, ref_spec, fresh_model(spec, device, False, None), batch_from_png)
    if in_memory_reference:  # the same loop fed from memory: how much of the gap is data, how much the step
        make("reference_in_memory", reference_step, ref_spec, fresh_model(spec, device, False, None), batch_in_memory)
    if settings is None:
        settings = dict(TRAIN_SETTINGS) | (CUDA_GRAPHS if device.type == "cuda" else {})
    for name, (precision, cl, mode) in settings.items():
        if reason := not_timed(precision, mode, plan, device, bf16):
            skipped[name] = reason
            continue
        spec_s = with_settings(spec, precision, cl, mode)  # mode: the whole step compiled (train.compile)
        try:
            model = fresh_model(spec, device, cl, None)
            make(name, OurStep(spec_s, device), spec_s, model, batch_in_memory)
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

    # The rollout runs in its model's memory format (fresh_model builds it in the setting's).
    def one_by_one(model, precision):
        def run_each():
            return torch.cat([rollout(model, first[v, None], poses[v, None], SEED, precision) for v in range(V)])

        return run_each

    def batched(model, precision):
        return lambda: rollout(model, first, poses, SEED, precision)

    def frozen(fn):
        def call():
            with frozen_weights():
                return fn()

        return call

    fns["reference"] = in_numerics(numerics(device, "fp32"), one_by_one(fresh_model(spec, device, False, None), "fp32"))
    outputs = {"reference": fns["reference"]()}
    for name, (is_batched, precision, cl, mode) in ROLLOUT_SETTINGS.items():
        if reason := not_timed(precision, mode, plan, device, bf16):
            skipped[name] = reason
            continue
        try:
            model = fresh_model(spec, device, cl, mode)
            fns[name] = (batched if is_batched else one_by_one)(model, precision)
            if mode == FROZEN:
                fns[name] = frozen(fns[name])
            fns[name] = in_numerics(numerics(device, precision), fns[name])
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


# --------------------------------------------------------------------------- the run


def run(
    spec: ExperimentSpec, device: torch.device, plan: Plan = FULL, console=None, bf16: bool | None = None
) -> dict[str, Any]:
    """All groups; returns the JSON object of ``cvae bench --json`` (docs/performance.md) with extra
    keys: ``flops``, ``matmul_flops_per_s``, ``achieved``, ``agreement``, ``seconds``, ``skipped``,
    ``supports``, ``data``, ``load_avg``, ``max_rss_mb``. ``bf16``: time the bf16 settings (None:
    where bf16 is native, ``fast_bf16``)."""
    load0 = loadavg()
    info = prepare(device, bf16)
    m = measure(spec, device, plan, console, info["bf16_timed"])
    return report(spec, device, plan, info, m, load0)


def prepare(device: torch.device, bf16: bool | None) -> dict[str, Any]:
    """Set the process up as ``cvae train`` does and say how: the device's facts, whether bf16 is timed,
    the allocator and oneDNN's kernel cache."""
    info = device_info(device)
    if device.type == "cuda":  # cuda:N the current device: what torch.cuda's calls without a device use
        torch.cuda.set_device(device)
    info["bf16_timed"] = fast_bf16(device) if bf16 is None else bf16
    # As `cvae train` does: every setting, the reference too, runs with the tuned allocator.
    info["malloc_tuned"] = device.type == "cpu" and tune_cpu_allocator()
    # oneDNN keeps its compiled convolution kernels in an LRU cache of 1,024 by default; the bench's
    # many settings (shapes x precisions x layouts, forward and backward) overflow it and each
    # rollout step then rebuilds kernels, which slows the rollouts timed after the train group.
    # Read when oneDNN builds its first kernel, so this takes effect in a fresh `cvae bench`.
    info["onednn_cache_capacity"] = os.environ.setdefault(ONEDNN_CACHE_ENV, "8192")
    return info


def measure(spec: ExperimentSpec, device: torch.device, plan: Plan, console, bf16: bool) -> dict[str, Any]:
    """Every group's measurements, each under a progress line: the data, the matmul rates, FLOPs per
    frame, the loader, the train steps (also with teacher forcing 1) and the rollouts."""
    from cvae.terminal import task

    with tempfile.TemporaryDirectory(prefix="cvae-bench-") as tmp:
        with task(console, "bench: data") as _:
            data = bench_data(spec, plan, Path(tmp), device)
        with task(console, "bench: matmul rate") as _:
            apply_numerics(numerics(device, "fp32"))  # IEEE fp32: the rate fp32 settings are measured against
            rates = {
                "fp32": matmul_rate(device, torch.float32, plan.matmul_n),
                # Emulated bf16 matmuls ran at 0.9 GFLOP/s on an AVX2-only CPU: minutes at n = 2048.
                "bf16": matmul_rate(device, torch.bfloat16, plan.matmul_n) if bf16 else None,
            }
            if has_tf32(device):
                rates["tf32"] = in_numerics(
                    numerics(device, "tf32"), lambda: matmul_rate(device, torch.float32, plan.matmul_n)
                )()
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
    return {"data": data, "rates": rates, "flops": flops, "loader_s": loader_s, "train": tr, "tf1": tf1, "rollout": ro}


def precision_of(name: str) -> str:
    """The precision a setting's name says it runs in."""
    return "bf16" if "bf16" in name else "tf32" if "tf32" in name else "fp32"


def achieved_rates(train: dict, roll: dict, flops: dict, rates: dict) -> dict[str, dict[str, dict[str, float]]]:
    """FLOP/s each setting achieved, and its share of the matmul rate of its precision."""
    achieved: dict[str, dict[str, dict[str, float]]] = {"train": {}, "rollout": {}}
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
    return achieved


def report(spec: ExperimentSpec, device: torch.device, plan: Plan, info: dict, m: dict, load0) -> dict[str, Any]:
    """The measurements as ``cvae bench --json``'s object: speeds, rates, agreement, speed-ups."""
    B, T = spec.train.batch_size, spec.data.clip_len
    data, rates, flops, loader_s, tr, tf1, ro = (
        m[k] for k in ("data", "rates", "flops", "loader_s", "train", "tf1", "rollout")
    )
    frames_per_step = B * (T - 1)
    train = {k: frames_per_step / s for k, s in tr["seconds"].items()}
    roll = {k: ro["frames"] / s for k, s in ro["seconds"].items()}
    loader = {k: B / s for k, s in loader_s.items()}
    achieved = achieved_rates(train, roll, flops, rates)
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
        # What each timed setting ran in: fp32 settings and the reference in IEEE fp32, also on GPUs
        # whose cuDNN would otherwise use TF32 (cvae/device.py).
        "numerics": {
            group: {name: numerics(device, precision_of(name)).as_dict() for name in speeds}
            for group, speeds in (("train", train), ("rollout", roll))
        },
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
