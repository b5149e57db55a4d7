"""FLOP rate of one rollout step alone (FrameEncoder, PoseEncoder, decoder), against the matmul rate.

Usage: python scripts/rollout_step_rate.py SPEC [--videos N] [--precision fp32|bf16] [--mode M]

M: ``eager``; ``modules`` (the five modules compiled, as ``train.compile`` does); ``frozen``
(the same under inductor freezing, as the bench's frozen settings); ``whole-frozen`` (the whole
step compiled as one graph under freezing). channels_last throughout. The step leaves out what
the rollout loop adds around it (the noise draw, pose conversion, frame copies), so it bounds
what the loop can reach; docs/performance.md, "Why the rollout is far from the FLOP limit".
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cvae.bench import matmul_rate
from cvae.device import compile_model, frozen_weights, tune_cpu_allocator
from cvae.model import build_model
from cvae.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--mode", choices=["eager", "modules", "frozen", "whole-frozen"], default="eager")
    args = ap.parse_args()
    tune_cpu_allocator()
    torch.manual_seed(0)
    spec = load_spec(args.spec)
    cl = torch.channels_last
    model = build_model(spec).eval().to(memory_format=cl)
    (H, W), B = spec.data.frame_size, args.videos
    prev, pose = (torch.rand(B, 3, H, W).contiguous(memory_format=cl) for _ in range(2))
    z = torch.randn(B, spec.model.z_dim, H, W).contiguous(memory_format=cl)
    bf16 = args.precision == "bf16"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        f_ctx = model.frame_encoder(prev) if model.context_frame else None  # once per rollout, as rollout() does

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.decode(model.frame_encoder(prev), model.pose_encoder(pose), z, f_ctx).float()

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    fn = step
    if args.mode in ("modules", "frozen"):
        compile_model(model)
    elif args.mode == "whole-frozen":
        fn = torch.compile(step)
    freeze = args.mode in ("frozen", "whole-frozen")
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
    rate = matmul_rate(torch.device("cpu"), torch.bfloat16 if args.precision == "bf16" else torch.float32, 2048)
    print(
        f"{args.spec.name}, {B} videos, {args.precision}, {args.mode}: {1000 * s:.2f} ms/step, "
        f"{flops / s / 1e9:.0f} GFLOP/s = {100 * flops / s / rate:.1f}% of the {args.precision} matmul rate "
        f"({rate / 1e9:.0f} GFLOP/s); warm-up {warm:.0f} s"
    )


if __name__ == "__main__":
    main()
