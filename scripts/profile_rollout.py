"""Where the batched validation rollout spends its time: torch.profiler's table of ATen ops.

Usage: python scripts/profile_rollout.py SPEC [--frames N] [--precision fp32|bf16] [--channels-last]

Rolls out the bench's 4 videos (cvae.bench.bench_data: the spec's training split) for N frames
with the spec's widths and prints the ops by self CPU time (docs/performance.md, "Why the
rollout is far from the FLOP limit").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
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
    rollout(model, first, poses[:, : min(8, n)], 0, args.precision, args.channels_last)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rollout(model, first, poses, 0, args.precision, args.channels_last)
    print(f"{args.spec}: {len(starts)} videos x {n} frames, {args.precision}, channels_last {args.channels_last}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=32))


if __name__ == "__main__":
    main()
