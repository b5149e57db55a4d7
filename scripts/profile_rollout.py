"""Where the batched validation rollout spends its time: torch.profiler's table of ATen ops.

Usage: python scripts/profile_rollout.py SPEC [--frames N] [--precision fp32|bf16] [--channels-last] [--ops]

Rolls out the bench's 4 videos (cvae.bench.bench_data: the spec's training split) for N frames
with the spec's widths and prints the ops by self CPU time (docs/performance.md, "Why the
rollout is far from the FLOP limit").

``--ops`` instead times each op around its own call (``scripts/op_times.py``: no profiler
overhead) and sets the rollout's FLOPs against the measured matmul rate of its precision: the
share the rollout reaches, and the share it could reach at most if everything but its
convolutions took no time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from op_times import OpTimes
from torch.profiler import ProfilerActivity, profile

from cvae import bench
from cvae.data import gather
from cvae.device import tune_cpu_allocator
from cvae.rollout import rollout
from cvae.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--ops", action="store_true", help="time each op; shares of the matmul rate")
    args = ap.parse_args()
    tune_cpu_allocator()
    cpu = torch.device("cpu")
    spec = load_spec(args.spec)
    with tempfile.TemporaryDirectory() as tmp:
        data = bench.bench_data(spec, bench.FULL, Path(tmp), cpu)
    n = min(args.frames, data.rollout_frames)
    starts = torch.tensor(data.rollout_starts)
    first = gather(data.frames, starts, 1)[:, 0]
    poses = data.poses[starts[:, None] + torch.arange(n)]
    model = bench.fresh_model(spec, cpu, args.channels_last, None)
    run = lambda: rollout(model, first, poses, 0, args.precision, args.channels_last)  # noqa: E731
    rollout(model, first, poses[:, : min(8, n)], 0, args.precision, args.channels_last)  # warm-up
    print(f"{args.spec}: {len(starts)} videos x {n} frames, {args.precision}, channels_last {args.channels_last}")
    if args.ops:
        print_op_shares(run, len(starts) * (n - 1), args.precision)
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=32))


def print_op_shares(run, frames: int, precision: str) -> None:
    """The rollout's ops by own time, and its FLOP/s as a share of the matmul rate."""
    cpu = torch.device("cpu")
    flops = bench.count_flops(run)
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
    rate = bench.matmul_rate(cpu, torch.bfloat16 if precision == "bf16" else torch.float32, 2048)
    print(f"rollout: {seconds:.2f} s, {frames / seconds:.1f} frames/s, {flops / frames / 1e9:.2f} GFLOP per frame; "
          f"{precision} matmul rate {rate / 1e9:.0f} GFLOP/s")  # fmt: skip
    print(f"the rollout reaches {100 * flops / seconds / rate:.1f}% of the matmul rate; its convolutions take "
          f"{conv:.2f} s ({100 * conv / seconds:.0f}%): with nothing else it could reach at most "
          f"{100 * flops / conv / rate:.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
