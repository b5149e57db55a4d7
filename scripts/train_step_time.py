"""Seconds per training step of a spec at one precision and memory format, optionally profiled.

Usage: python scripts/train_step_time.py SPEC [--precision fp32|bf16] [--channels-last] [--seconds S] [--profile]

The step is the bench's (``cvae.bench.our_step``: ``train_step``, grad clip, Adam; teacher forcing
0, beta 1) on a random batch of the spec's shape, with the tuned CPU allocator. It times whole
steps for at least S seconds after 3 warm-up steps; ``--profile`` then prints torch.profiler's
table of 3 more. For one setting in isolation; ``cvae bench`` compares settings side by side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cvae.bench import fresh_model, our_step, with_settings
from cvae.device import tune_cpu_allocator
from cvae.spec import load_spec
from cvae.training import build_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    tune_cpu_allocator()
    spec = with_settings(load_spec(args.spec), args.precision, args.channels_last)
    B, T, (H, W) = spec.train.batch_size, spec.data.clip_len, spec.data.frame_size
    torch.manual_seed(0)
    x, pose = torch.rand(B, T, 3, H, W), torch.rand(B, T, 3, H, W)
    model = fresh_model(spec, torch.device("cpu"), args.channels_last, None)
    opt = build_optimizer(spec, model)[0]

    def step():
        return our_step(model, opt, x, pose, spec, 1.0, 0.0)

    for _ in range(3):
        step()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.seconds:
        step()
        n += 1
    s = (time.perf_counter() - t0) / n
    layout = "channels_last" if args.channels_last else "default layout"
    print(f"{args.spec.name}, {args.precision}, {layout}: {1000 * s:,.0f} ms/step over {n} steps, "
          f"{B * (T - 1) / s:.1f} trained frames/s")  # fmt: skip
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(3):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        print_conv_kinds(prof, steps=3)


def print_conv_kinds(prof, steps: int) -> None:
    """Self CPU time per step of the convolutions, forward and backward, by kernel kind."""
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / steps
    kinds: dict[tuple[str, str], float] = {}
    # oneDNN's kernels run inside mkldnn_convolution and convolution_backward; torch sends some
    # convolutions (1x1 ones with one thread, for one) to its own _slow_conv2d kernels instead.
    forward = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward")
    backward = ("aten::convolution_backward", "aten::_slow_conv2d_backward")
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key not in forward + backward or not e.input_shapes:
            continue
        w = e.input_shapes[1] if e.key in forward else e.input_shapes[2]  # the weight
        kind = "depthwise" if len(w) == 4 and w[1] == 1 and w[0] > 1 else f"{w[2]}x{w[3]}" if len(w) == 4 else "?"
        key = ("forward" if e.key in forward else "backward", kind)
        kinds[key] = kinds.get(key, 0.0) + e.self_cpu_time_total / steps
    print("convolutions by kind (self CPU time per step, share of all self time):")
    for (direction, kind), us in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {direction:8s} {kind:9s} {us / 1000:8,.0f} ms  {100 * us / total:5.1f}%")


if __name__ == "__main__":
    main()
