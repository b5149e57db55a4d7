"""``cvae bench``'s console tables, from the JSON object ``cvae.bench.run`` returns."""

from __future__ import annotations

from typing import Any


def tables(result: dict[str, Any]):
    """rich renderables: one table per group, then notes."""
    from rich.table import Table

    def table(title: str, *columns: str) -> Table:
        """A setting column that wraps long names rather than cutting them, then figures."""
        t = Table(title=title)
        t.add_column("setting", overflow="fold", min_width=12)
        for col in columns:
            t.add_column(col, justify="right", overflow="fold")
        return t

    out = []
    rates = result["matmul_flops_per_s"]
    ach = result["achieved"]
    agree = result["agreement"]["rel_loss_diff_vs_fp32"]
    secs = result["seconds"]

    t = table(f"train: trained frames/s, batch {result['shape']['batch']} x clip {result['shape']['clip_len']}",
              "frames/s", "x ref", "ms/step", "GFLOP/s", "% peak", "loss vs fp32")  # fmt: skip
    ref = result["train"]["reference"]
    for name, fps in result["train"].items():
        a = ach["train"][name]
        t.add_row(name, f"{fps:.1f}", f"{fps / ref:.2f}", f"{1000 * secs['train_step'][name]:.1f}",
                  f"{a['flops_per_s'] / 1e9:.1f}", f"{a['pct_of_matmul']:.1f}",
                  f"{100 * agree[name]:.2f}%" if name in agree else "")  # fmt: skip
    for k in result["skipped"]:
        if k.startswith("train/"):
            t.add_row(k.split("/", 1)[1], "skipped")
    out.append(t)

    tf1 = result.get("train_teacher_forced", {})
    if tf1:
        t = table("train with teacher forcing 1 (the lab's first epochs): trained frames/s", "frames/s", "x ref")
        for name, fps in tf1.items():
            t.add_row(name, f"{fps:.1f}", f"{fps / tf1['reference']:.2f}")
        out.append(t)

    s = result["shape"]
    t = table(f"rollout: predicted frames/s, {s['rollout_videos']} videos x {s['rollout_frames']} frames",
              "frames/s", "x ref", "s/run", "GFLOP/s", "% peak", "|diff|")  # fmt: skip
    ref = result["rollout"]["reference"]
    roll_diff = result["agreement"].get("rollout_mean_abs_diff_vs_reference", {})
    for name, fps in result["rollout"].items():
        a = ach["rollout"][name]
        t.add_row(name, f"{fps:.1f}", f"{fps / ref:.2f}", f"{secs['rollout'][name]:.3f}",
                  f"{a['flops_per_s'] / 1e9:.1f}", f"{a['pct_of_matmul']:.1f}",
                  f"{roll_diff[name]:.1e}" if name in roll_diff else "")  # fmt: skip
    for k in result["skipped"]:
        if k.startswith("rollout/"):
            t.add_row(k.split("/", 1)[1], "skipped")
    out.append(t)

    t = table("loader: clips/s", "clips/s", "x ref", "ms/batch")
    ref = result["loader"]["reference"]
    for name, cps in result["loader"].items():
        t.add_row(name, f"{cps:.1f}", f"{cps / ref:.1f}", f"{1000 * secs['loader_batch'][name]:.3f}")
    out.append(t)

    sp, fl, sup, load = result["speedup"], result["flops"], result["supports"], result["load_avg"]
    notes = [
        "x ref: speed over the reference; % peak: achieved FLOP/s as a share of the measured matmul rate of the "
        "setting's precision; |diff|: mean pixel difference of the rollout's frames from the reference's",
        f"device: {result['device']}; bf16 native: {sup.get('bf16_native')}",
        f"matmul rate ({sup.get('threads', '')} threads): fp32 {rates['fp32'] / 1e9:.1f} GFLOP/s, bf16 "
        + (f"{rates['bf16'] / 1e9:.1f} GFLOP/s" if rates["bf16"] else "not measured (bf16 not timed)"),
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
