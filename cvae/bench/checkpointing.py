"""Time one training step with and without ``train.activation_checkpointing`` (docs/performance.md).

Usage: python -m cvae.bench.checkpointing SPEC TFR [--set KEY=VALUE ...]

Both models start from the same seeded weights and train on the same first batch of the spec's
training split; steps alternate between the two settings (2 warm-up rounds, then 5 timed), and
the median seconds per step are printed. ``train.precision`` / ``channels_last`` resolve for the
CPU as ``cvae train`` would. The peak memory of a whole run is measured with the CLI instead:
``/usr/bin/time -v cvae train SPEC --set train.activation_checkpointing=true ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cvae.bench.timing import round_robin
from cvae.data.clips import clip_starts, gather
from cvae.data.frames import load_split
from cvae.data.layout import scan_split
from cvae.data.root import ensure_data
from cvae.device import resolve_spec, tune_cpu_allocator
from cvae.model import build_model
from cvae.spec import load_spec
from cvae.training.loop import build_optimizer
from cvae.training.step import loss_and_gradients

WARMUP, REPEATS = 2, 5  # untimed steps per setting, then timed steps taken in turns (the median)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("tfr", type=float, help="teacher-forcing ratio of the timed steps (0: none, 1: all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    cpu = torch.device("cpu")
    tune_cpu_allocator()  # as `cvae train` does on the CPU
    specs = {
        on: resolve_spec(load_spec(args.spec, [*args.overrides, f"train.activation_checkpointing={on}"]), cpu)
        for on in ("false", "true")
    }
    spec = specs["false"]
    train_set = load_split(scan_split(ensure_data(spec), "train"), spec.data.frame_size)
    B, T = spec.train.batch_size, spec.data.clip_len
    idx = torch.tensor(clip_starts(train_set.starts, train_set.lengths, T)[:B])
    x, p = gather(train_set.frames, idx, T), gather(train_set.poses, idx, T)
    models = {}
    for on, s in specs.items():
        torch.manual_seed(s.seed)
        model = build_model(s, cpu)
        models[on] = (model, build_optimizer(s, model)[0])

    def step(on: str) -> None:
        model, opt = models[on]
        opt.zero_grad(set_to_none=True)
        loss_and_gradients(model, x, p, specs[on], 1.0, args.tfr)
        opt.step()

    fns = {on: (lambda on=on: step(on)) for on in specs}
    for _ in range(WARMUP):
        for fn in fns.values():
            fn()
    seconds = round_robin(fns, REPEATS, cpu)
    plain, ckpt = seconds["false"], seconds["true"]
    print(
        f"{args.spec} tfr {args.tfr}: {spec.train.precision}, channels_last {spec.train.channels_last}, "
        f"batch {B} x {T - 1} frames: {plain:.3f} s/step plain, {ckpt:.3f} s/step checkpointed "
        f"({100 * (ckpt / plain - 1):+.0f}%)"
    )


if __name__ == "__main__":
    main()
