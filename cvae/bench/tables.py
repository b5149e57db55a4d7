"""``cvae bench``'s tables, from the JSON object ``cvae.bench.run.run`` returns: for the terminal
(``tables``) and as the markdown docs/performance.md shows (``markdown``; ``python -m
cvae.bench.tables docs/bench/FILE.json`` prints it), every figure the run's own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def tables(result: dict[str, Any]):
    """The terminal's tables (one per group), then notes."""
    from cvae.terminal import Col, table

    def columns(*names: tuple[str, str]) -> list[Col]:
        return [Col("setting"), *(Col(name, numeric=True, short=short) for short, name in names)]

    out = []
    rates = result["matmul_flops_per_s"]
    ach = result["achieved"]
    agree = result["agreement"]["rel_loss_diff_vs_fp32"]
    secs = result["seconds"]
    x_ref, pct = (
        ("x ref", "speed over the reference"),
        ("% peak", "achieved FLOP/s as a share of the measured matmul rate"),
    )
    gflops = ("GFLOP/s", "GFLOP/s")

    ref = result["train"]["reference"]
    rows = []
    for name, fps in result["train"].items():
        a = ach["train"][name]
        rows.append([name, f"{fps:.1f}", f"{fps / ref:.2f}", f"{1000 * secs['train_step'][name]:.1f}",
                     f"{a['flops_per_s'] / 1e9:.1f}", f"{a['pct_of_matmul']:.1f}",
                     f"{100 * agree[name]:.2f}%" if name in agree else ""])  # fmt: skip
    rows += [[k.split("/", 1)[1], "skipped", "", "", "", "", ""] for k in result["skipped"] if k.startswith("train/")]
    loss = ("loss", "the first step's loss against fp32's")
    cols = columns(("frames/s", "frames/s"), x_ref, ("ms/step", "ms/step"), gflops, pct, loss)
    title = f"train: trained frames/s, batch {result['shape']['batch']} x clip {result['shape']['clip_len']}"
    out.append(table(title, cols, rows))

    tf1 = result.get("train_teacher_forced", {})
    if tf1:
        rows = [[name, f"{fps:.1f}", f"{fps / tf1['reference']:.2f}"] for name, fps in tf1.items()]
        title = "train with teacher forcing 1 (the lab's first epochs): trained frames/s"
        out.append(table(title, columns(("frames/s", "frames/s"), x_ref), rows))

    s = result["shape"]
    ref = result["rollout"]["reference"]
    roll_diff = result["agreement"].get("rollout_mean_abs_diff_vs_reference", {})
    rows = []
    for name, fps in result["rollout"].items():
        a = ach["rollout"][name]
        rows.append([name, f"{fps:.1f}", f"{fps / ref:.2f}", f"{secs['rollout'][name]:.3f}",
                     f"{a['flops_per_s'] / 1e9:.1f}", f"{a['pct_of_matmul']:.1f}",
                     f"{roll_diff[name]:.1e}" if name in roll_diff else ""])  # fmt: skip
    rows += [[k.split("/", 1)[1], "skipped", "", "", "", "", ""] for k in result["skipped"] if k.startswith("rollout/")]
    diff = ("|diff|", "mean pixel difference of the rollout's frames from the reference's")
    cols = columns(("frames/s", "frames/s"), x_ref, ("s/run", "s/run"), gflops, pct, diff)
    out.append(
        table(f"rollout: predicted frames/s, {s['rollout_videos']} videos x {s['rollout_frames']} frames", cols, rows)
    )

    ref = result["loader"]["reference"]
    rows = [[name, f"{cps:.1f}", f"{cps / ref:.1f}", f"{1000 * secs['loader_batch'][name]:.3f}"]
            for name, cps in result["loader"].items()]  # fmt: skip
    out.append(table("loader: clips/s", columns(("clips/s", "clips/s"), x_ref, ("ms/batch", "ms/batch")), rows))

    sp, fl, sup, load = result["speedup"], result["flops"], result["supports"], result["load_avg"]
    notes = [
        f"device: {result['device']}; bf16 native: {sup.get('bf16_native')}",
        f"matmul rate ({sup.get('threads', '')} threads): fp32 {rates['fp32'] / 1e9:.1f} GFLOP/s, bf16 "
        + (f"{rates['bf16'] / 1e9:.1f} GFLOP/s" if rates["bf16"] else "not measured (bf16 not timed)")
        + (f", tf32 {rates['tf32'] / 1e9:.1f} GFLOP/s" if rates.get("tf32") else ""),
        f"FLOPs: {fl['per_trained_frame'] / 1e9:.3f} GFLOP per trained frame (reference loop "
        f"{fl['per_trained_frame_reference'] / 1e9:.3f}), {fl['per_rollout_frame'] / 1e9:.3f} GFLOP per rollout frame",
        f"best train setting {sp['train_best']}: {sp['train_best_vs_reference']:.2f}x reference; rollout "
        f"{sp['rollout_best_vs_reference']:.2f}x; loader {sp['loader_in_memory_vs_reference']:.0f}x, data "
        f"{100 * sp['data_share_of_best_step']:.2f}% of the best step (PNG decode "
        f"{100 * sp['png_share_of_reference_step']:.0f}% of the reference step)",
        f"load average (1 min): {load['start']} at start, {load['end']} at end; peak RSS {result['max_rss_mb']:.0f} MB",
    ]
    notes += [f"skipped {k}: {v}" for k, v in result["skipped"].items()]
    return out, notes


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def num(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def markdown(d: dict[str, Any]) -> str:
    """The markdown tables docs/performance.md shows, from one ``cvae bench --json`` output."""
    lines: list[str] = []
    out = lines.append
    shape, secs, ach, agree = d["shape"], d["seconds"], d["achieved"], d["agreement"]
    best_train = d["speedup"]["train_best"]
    best_roll = max((k for k in d["rollout"] if k != "reference"), key=d["rollout"].get)
    fl, rates = d["flops"], d["matmul_flops_per_s"]
    load = d["load_avg"]
    out(f"device: {d['device']}; load average {load['start']:.2f} at start, {load['end']:.2f} at end")
    out(
        f"FLOPs: {fl['per_trained_frame'] / 1e9:.2f} GFLOP per trained frame (reference loop "
        f"{fl['per_trained_frame_reference'] / 1e9:.2f}), {fl['per_rollout_frame'] / 1e9:.2f} GFLOP per rollout "
        f"frame; matmul rate {rates['fp32'] / 1e9:,.0f} GFLOP/s fp32, "
        + (f"{rates['bf16'] / 1e9:,.0f} GFLOP/s bf16\n" if rates["bf16"] else "bf16 not measured\n")
    )

    def bold(name: str, best: str, text: str) -> str:
        return f"**{text}**" if name == best else text

    cols = ("frames/s", "x reference", "ms/step", "GFLOP/s", "% of matmul rate", "loss vs fp32")
    out(row("train (teacher forcing 0)", *cols))
    out(row(*["---"] * 7))
    ref = d["train"]["reference"]
    for name, fps in d["train"].items():
        a, rel = ach["train"][name], agree["rel_loss_diff_vs_fp32"].get(name)
        loss = "" if rel is None or name.startswith("reference") else f"{100 * rel:.2f}%"
        out(row(f"`{name}`", bold(name, best_train, num(fps)), bold(name, best_train, f"{fps / ref:.2f}x"),
                  f"{1000 * secs['train_step'][name]:.0f}", f"{a['flops_per_s'] / 1e9:.0f}",
                  f"{a['pct_of_matmul']:.1f}%", loss))  # fmt: skip
    out("")
    tf1 = d.get("train_teacher_forced", {})
    if tf1:
        out(row("train (teacher forcing 1)", "frames/s", "x reference"))
        out(row(*["---"] * 3))
        for name, fps in tf1.items():
            out(row(f"`{name}`", num(fps), f"{fps / tf1['reference']:.2f}x"))
        out("")
    out(row(f"rollout, {shape['rollout_videos']} videos x {shape['rollout_frames']} frames", "frames/s",
              "x reference", "s/run", "GFLOP/s", "% of matmul rate", "mean pixel diff vs reference"))  # fmt: skip
    out(row(*["---"] * 7))
    ref = d["rollout"]["reference"]
    diff = agree.get("rollout_mean_abs_diff_vs_reference", {})
    for name, fps in d["rollout"].items():
        a = ach["rollout"][name]
        out(row(f"`{name}`", bold(name, best_roll, num(fps)), bold(name, best_roll, f"{fps / ref:.2f}x"),
                  f"{secs['rollout'][name]:.2f}", f"{a['flops_per_s'] / 1e9:.0f}", f"{a['pct_of_matmul']:.1f}%",
                  f"{diff[name]:.1e}" if name in diff else ""))  # fmt: skip
    out("")
    out(row(f"loader, batch of {shape['batch']} clips x {shape['clip_len']} frames", "clips/s", "ms/batch"))
    out(row(*["---"] * 3))
    for name, cps in d["loader"].items():
        out(row(f"`{name}`", num(cps), f"{1000 * secs['loader_batch'][name]:.2f}"))
    for k, v in d["skipped"].items():
        out(f"\nskipped {k}: {v}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown(json.loads(Path(sys.argv[1]).read_text())))
