"""Where the validation rollout's time goes, against the device's matmul rate (docs/performance.md,
"Why the rollout is far from the FLOP limit").

    python -m cvae.bench.rollout_time SPEC [--frames N] [--precision fp32|bf16] [--channels-last] [--ops]
    python -m cvae.bench.rollout_time SPEC --step MODE [--videos N] [--precision fp32|bf16]

The first rolls out the bench's 4 videos (``cvae.bench.settings.bench_data``: the spec's training split)
for N frames with the spec's widths and prints torch.profiler's ops by self CPU time (precision
bf16 unless given); ``--ops`` instead times each op around its own call (``OpTimes``: no profiler
overhead) and sets the rollout's FLOPs against the matmul rate of its precision: the share the
rollout reaches, and the most it could reach if everything but its convolutions took no time.

``--step MODE`` times one rollout step alone (FrameEncoder, PoseEncoder, decoder; channels_last;
precision fp32 unless given): ``eager``; ``modules`` (the five modules compiled, as
``train.compile`` does); ``frozen`` (the same under inductor freezing, as the bench's frozen
settings); ``whole-frozen`` (the whole step as one graph under freezing). It leaves out what the
rollout loop adds around the step (the noise draw, pose conversion, frame copies), so it bounds
what the loop can reach.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from cvae.bench import settings as bench
from cvae.bench.timing import OpTimes, count_flops, matmul_rate
from cvae.data.clips import gather
from cvae.device import compile_model, frozen_weights, tune_cpu_allocator
from cvae.model import build_model
from cvae.spec import load_spec
from cvae.training.rollout import rollout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default=None)
    ap.add_argument("--frames", type=int, default=32, help="the whole rollout: frames per video")
    ap.add_argument("--channels-last", action="store_true", help="the whole rollout: channels_last")
    ap.add_argument("--ops", action="store_true", help="the whole rollout: time each op; shares of the matmul rate")
    ap.add_argument("--step", choices=["eager", "modules", "frozen", "whole-frozen"], help="one step alone")
    ap.add_argument("--videos", type=int, default=4, help="--step: videos in the batch")
    args = ap.parse_args()
    tune_cpu_allocator()
    step_rate(args) if args.step else profile_rollout(args)


def profile_rollout(args) -> None:
    """The whole batched rollout: torch.profiler's table, or (``--ops``) each op's own time."""
    cpu, precision = torch.device("cpu"), args.precision or "bf16"
    spec = load_spec(args.spec)
    with tempfile.TemporaryDirectory() as tmp:
        data = bench.bench_data(spec, bench.FULL, Path(tmp), cpu)
    n = min(args.frames, data.rollout_frames)
    starts = torch.tensor(data.rollout_starts)
    first = gather(data.frames, starts, 1)[:, 0]
    poses = data.poses[starts[:, None] + torch.arange(n)]
    model = bench.fresh_model(spec, cpu, args.channels_last, None)
    run = lambda: rollout(model, first, poses, 0, precision)  # noqa: E731
    rollout(model, first, poses[:, : min(8, n)], 0, precision)  # warm-up
    print(f"{args.spec}: {len(starts)} videos x {n} frames, {precision}, channels_last {args.channels_last}")
    if args.ops:
        print_op_shares(run, len(starts) * (n - 1), precision)
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=32))


def print_op_shares(run, frames: int, precision: str) -> None:
    """The rollout's ops by own time, and its FLOP/s as a share of the matmul rate."""
    cpu = torch.device("cpu")
    flops = count_flops(run)
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    with OpTimes() as ops:
        run()
    wall = time.perf_counter() - t0  # under the timer: a little slower than the rollout alone
    for name, sec in sorted(ops.seconds.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {name:32s} {1000 * sec:8,.0f} ms  {100 * sec / wall:5.1f}%")
    conv = ops.convolutions() / wall * seconds  # the convolutions' share, applied to the rollout alone
    rate = matmul_rate(cpu, torch.bfloat16 if precision == "bf16" else torch.float32, 2048)
    print(f"rollout: {seconds:.2f} s, {frames / seconds:.1f} frames/s, {flops / frames / 1e9:.2f} GFLOP per frame; "
          f"{precision} matmul rate {rate / 1e9:.0f} GFLOP/s")  # fmt: skip
    print(f"the rollout reaches {100 * flops / seconds / rate:.1f}% of the matmul rate; its convolutions take "
          f"{conv:.2f} s ({100 * conv / seconds:.0f}%): with nothing else it could reach at most "
          f"{100 * flops / conv / rate:.1f}%")  # fmt: skip


def step_rate(args) -> None:
    """One rollout step alone, eager or compiled (``--step MODE``), against the matmul rate."""
    torch.manual_seed(0)
    precision, mode = args.precision or "fp32", args.step
    spec = load_spec(args.spec)
    cl = torch.channels_last
    model = build_model(spec).eval().to(memory_format=cl)
    (H, W), B = spec.data.frame_size, args.videos
    prev, pose = (torch.rand(B, 3, H, W).contiguous(memory_format=cl) for _ in range(2))
    z = torch.randn(B, spec.model.z_dim, H, W).contiguous(memory_format=cl)
    bf16 = precision == "bf16"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        f_ctx = model.frame_encoder(prev) if model.context_frame else None  # once per rollout, as rollout() does

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.decode(model.frame_encoder(prev), model.pose_encoder(pose), z, f_ctx).float()

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    fn = step
    if mode in ("modules", "frozen"):
        compile_model(model)
    elif mode == "whole-frozen":
        fn = torch.compile(step)
    freeze = mode in ("frozen", "whole-frozen")
    with torch.no_grad(), frozen_weights() if freeze else contextlib.nullcontext():
        t0 = time.perf_counter()
        for _ in range(3):  # compilation happens here
            fn()
        warm = time.perf_counter() - t0
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            times.append((time.perf_counter() - t0) / 20)
    s = statistics.median(times)
    rate = matmul_rate(torch.device("cpu"), torch.bfloat16 if precision == "bf16" else torch.float32, 2048)
    print(
        f"{args.spec.name}, {B} videos, {precision}, {mode}: {1000 * s:.2f} ms/step, "
        f"{flops / s / 1e9:.0f} GFLOP/s = {100 * flops / s / rate:.1f}% of the {precision} matmul rate "
        f"({rate / 1e9:.0f} GFLOP/s); warm-up {warm:.0f} s"
    )


if __name__ == "__main__":
    main()
