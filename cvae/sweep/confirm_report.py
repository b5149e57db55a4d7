"""What ``cvae sweep confirm`` writes and shows: confirm.json, confirm.png and the table, from the
result ``cvae.sweep.confirm.run_confirm`` computes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cvae.atomic import write_text
from cvae.sweep.stats import BASE

TEST_METRIC = "test/psnr"  # the held-out score of a run's best checkpoint, in its summary.json (higher is better)
RESULT_FILE = "confirm.json"
PLOT_FILE = "confirm.png"


def write_result(out_dir: Path, result: dict[str, Any]) -> None:
    """confirm.json and confirm.png in the sweep folder."""
    write_text(out_dir / RESULT_FILE, to_json(result) + "\n")
    plot_confirm(out_dir / PLOT_FILE, result)


def to_json(result: dict[str, Any]) -> str:
    """confirm.json's text: valid JSON (an interval of one seed, nan, is null)."""

    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(result), indent=2)


def plot_confirm(path: Path, result: dict[str, Any]) -> Path:
    """One dot per seed for each setting, its mean and 95% interval, the base's mean dashed, the mean
    frame's PSNR dotted: on the validation video (what the race decided on) and, where the runs have them,
    beside it on the held-out test videos, each setting under its verdict there."""
    from cvae.tracking.media import pyplot, save_figure

    plt = pyplot()
    rows = result["settings"]
    panels = [(f"{result['metric']}: validation (the race decides here)", lambda r: r, "vs_base", "mean_frame")]
    if result.get("heldout"):
        panels.append(
            (f"{result.get('test_metric', TEST_METRIC)}: held-out test videos (never chosen on)",
             lambda r: r.get("test"), "test_vs_base", "test_mean_frame")
        )  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=((1.6 * len(rows) + 2) * len(panels), 3.8), dpi=110, squeeze=False)
    for ax, (what, scores_of, vs_key, frame_key) in zip(axes[0], panels, strict=True):
        for i, row in enumerate(rows):
            scores = scores_of(row)
            if not scores:
                continue
            n = len(scores["values"])
            xs = [i + 0.12 * (k - (n - 1) / 2) / max(1, n - 1) for k in range(n)]
            ax.scatter(xs, scores["values"], s=18, color="tab:blue" if row["name"] == BASE else "tab:orange", zorder=3)
            low, high = scores["ci95"]
            if low is not None and not math.isnan(low):
                ax.errorbar(i + 0.25, scores["mean"], yerr=[[scores["mean"] - low], [high - scores["mean"]]],
                            fmt="_k", capsize=4)  # fmt: skip
        base = scores_of(rows[0])
        if base:
            ax.axhline(base["mean"], ls="--", lw=1, color="tab:blue", label=f"base mean {base['mean']:.2f}")
        if result.get(frame_key) is not None:
            ax.axhline(result[frame_key], ls=":", lw=1, color="tab:gray", label=f"mean frame {result[frame_key]:.2f}")
        labels = [r["name"] + (f"\n{r[vs_key]['verdict']}" if r.get(vs_key) else "") for r in rows]
        if result.get("race"):  # how many seeds each setting got before its verdict settled
            labels = [label + f"\n{len(r['values'])} seeds" for label, r in zip(labels, rows, strict=True)]
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_title(what, fontsize=9)
        ax.set(ylabel="PSNR (dB)" if "psnr" in result["metric"] else result["metric"])
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="best")
    raced = f", raced: {result['runs']} runs, {result['runs_saved']} saved" if result.get("race") else ""
    fig.suptitle(f"{result['study']}: confirmed over seeds {result['seeds']} (mean, 95% interval){raced}", fontsize=10)
    return save_figure(fig, path)


def confirm_table(result: dict[str, Any]):
    """The table of ``cvae sweep confirm``: each setting's validation scores and verdict and, where the runs
    have them, its held-out test scores and verdict beside them."""
    from cvae.sweep.text import params_text
    from cvae.terminal import Col, table

    heldout = bool(result.get("heldout"))
    columns = [
        Col("setting"),
        Col("validation scores, one per seed", short="val values"),
        Col("validation mean", numeric=True, short="val mean"),
        Col("sd", numeric=True),
        Col("95% interval", numeric=True, short="95% CI"),
        Col("the paired difference from the base on validation and its 95% interval", numeric=True, short="vs base"),
        Col("verdict on validation", short="val verdict"),
    ]
    if heldout:
        columns += [
            Col("held-out test mean (never chosen on)", numeric=True, short="test mean"),
            Col(
                "the paired difference from the base on the held-out test videos, its interval and level",
                numeric=True,
                short="test vs base",
            ),  # fmt: skip
            Col("verdict on the held-out test videos", short="test verdict"),
        ]
    columns.append(Col("parameters", short="params"))
    rows = []
    for row in result["settings"]:
        low, high = row["ci95"]
        vs = row.get("vs_base")
        ci = None if vs is None else vs.get("ci", vs.get("ci95"))  # confirm.json files before racing: ci95
        vs_text = "" if vs is None else f"{vs['mean']:+.2f}\n[{ci[0]:+.2f}, {ci[1]:+.2f}]"
        verdict_text = "" if vs is None else vs["verdict"]
        if vs is not None and result.get("race"):
            vs_text += f"\n({100 * vs['level']:.2f}%)"
            how = {"verdict": "", "futility": "futility, ", "all seeds": "", "open": "open, "}[vs["settled"]]
            verdict_text += f"\n({how}{vs['settled_at']} seeds)"
        cells = [
            row["name"] + (f" (sweep: {row['sweep_value']:.2f})" if row.get("sweep_value") is not None else ""),
            " ".join(f"{v:.2f}" for v in row["values"]),
            f"{row['mean']:.2f}",
            f"{row['sd']:.2f}",
            f"[{low:.2f},\n{high:.2f}]",
            vs_text,
            verdict_text,
        ]
        if heldout:
            cells += heldout_cells(row)
        rows.append([*cells, params_text(row["params"]) or "(the base spec)"])
    title = f"{result['study']}: {result['metric']} over seeds {result['seeds']} (95% intervals)"
    notes = []
    if result.get("race"):
        title = (
            f"{result['study']}: {result['metric']}, raced over {result['min_seeds']} to {result['max_seeds']} seeds "
            f"({result['runs']} runs, {result['runs_saved']} saved)"
        )
        notes.append(
            "vs base: the paired interval at the look that settled the setting, at that look's level "
            "(5% spent over the looks: a wrong verdict at no true difference at most 5% of the time)."
        )
        columns[5] = Col(
            "the paired difference from the base on validation, its interval and level", numeric=True, short="vs base"
        )
    if heldout:
        notes.append(
            f"test: {result.get('test_metric', TEST_METRIC)} of each run's best checkpoint on the held-out test "
            "videos, which chose nothing (not the checkpoint, not the race); paired on the seeds the setting trained, "
            "at its validation verdict's level."
        )
    else:
        notes.append("No held-out scores: the runs' data has no test truth (the lab's test frames are Kaggle's).")
    return table(title, columns, rows, notes)


def heldout_cells(row: dict[str, Any]) -> list[str]:
    """A row's held-out mean, its paired difference from the base (interval, level) and verdict."""
    test, vs = row.get("test"), row.get("test_vs_base")
    mean = "-" if not test else f"{test['mean']:.2f}"
    if vs is None:
        return [mean, "", ""]
    low, high = vs["ci"]
    ci = "" if low is None or math.isnan(low) else f"\n[{low:+.2f}, {high:+.2f}]"
    return [mean, f"{vs['mean']:+.2f}{ci}\n({100 * vs['level']:.2f}%)", f"{vs['verdict']}\n({vs['paired']} seeds)"]
