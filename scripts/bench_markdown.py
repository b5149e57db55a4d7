"""Markdown tables of one ``cvae bench --json`` output, as docs/performance.md shows them.

Usage: python scripts/bench_markdown.py docs/bench/quickstart-cpu.json

Every figure comes from the JSON file, so the tables in the docs are the run's own numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def num(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def main(path: Path) -> None:
    d = json.loads(path.read_text())
    shape, secs, ach, agree = d["shape"], d["seconds"], d["achieved"], d["agreement"]
    best_train = d["speedup"]["train_best"]
    best_roll = max((k for k in d["rollout"] if k != "reference"), key=d["rollout"].get)
    fl, rates = d["flops"], d["matmul_flops_per_s"]
    load = d["load_avg"]
    print(f"device: {d['device']}; load average {load['start']:.2f} at start, {load['end']:.2f} at end")
    print(
        f"FLOPs: {fl['per_trained_frame'] / 1e9:.2f} GFLOP per trained frame (reference loop "
        f"{fl['per_trained_frame_reference'] / 1e9:.2f}), {fl['per_rollout_frame'] / 1e9:.2f} GFLOP per rollout "
        f"frame; matmul rate {rates['fp32'] / 1e9:,.0f} GFLOP/s fp32, "
        + (f"{rates['bf16'] / 1e9:,.0f} GFLOP/s bf16\n" if rates["bf16"] else "bf16 not measured\n")
    )

    def bold(name: str, best: str, text: str) -> str:
        return f"**{text}**" if name == best else text

    cols = ("frames/s", "x reference", "ms/step", "GFLOP/s", "% of matmul rate", "loss vs fp32")
    print(row("train (teacher forcing 0)", *cols))
    print(row(*["---"] * 7))
    ref = d["train"]["reference"]
    for name, fps in d["train"].items():
        a, rel = ach["train"][name], agree["rel_loss_diff_vs_fp32"].get(name)
        loss = "" if rel is None or name.startswith("reference") else f"{100 * rel:.2f}%"
        print(row(f"`{name}`", bold(name, best_train, num(fps)), bold(name, best_train, f"{fps / ref:.2f}x"),
                  f"{1000 * secs['train_step'][name]:.0f}", f"{a['flops_per_s'] / 1e9:.0f}",
                  f"{a['pct_of_matmul']:.1f}%", loss))  # fmt: skip
    print()
    tf1 = d.get("train_teacher_forced", {})
    if tf1:
        print(row("train (teacher forcing 1)", "frames/s", "x reference"))
        print(row(*["---"] * 3))
        for name, fps in tf1.items():
            print(row(f"`{name}`", num(fps), f"{fps / tf1['reference']:.2f}x"))
        print()
    print(row(f"rollout, {shape['rollout_videos']} videos x {shape['rollout_frames']} frames", "frames/s",
              "x reference", "s/run", "GFLOP/s", "% of matmul rate", "mean pixel diff vs reference"))  # fmt: skip
    print(row(*["---"] * 7))
    ref = d["rollout"]["reference"]
    diff = agree.get("rollout_mean_abs_diff_vs_reference", {})
    for name, fps in d["rollout"].items():
        a = ach["rollout"][name]
        print(row(f"`{name}`", bold(name, best_roll, num(fps)), bold(name, best_roll, f"{fps / ref:.2f}x"),
                  f"{secs['rollout'][name]:.2f}", f"{a['flops_per_s'] / 1e9:.0f}", f"{a['pct_of_matmul']:.1f}%",
                  f"{diff[name]:.1e}" if name in diff else ""))  # fmt: skip
    print()
    print(row(f"loader, batch of {shape['batch']} clips x {shape['clip_len']} frames", "clips/s", "ms/batch"))
    print(row(*["---"] * 3))
    for name, cps in d["loader"].items():
        print(row(f"`{name}`", num(cps), f"{1000 * secs['loader_batch'][name]:.2f}"))
    for k, v in d["skipped"].items():
        print(f"\nskipped {k}: {v}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
