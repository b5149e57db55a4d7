"""``cvae sweep confirm``: retrain the sweep's best settings and its base with fresh seeds, and say
which beat the base beyond the seeds' noise.

A sweep's best trial is the largest of many noisy values, so it flatters itself (the winner's
curse): retrained with other seeds it usually scores less. Confirm trains the top K settings
(distinct complete trials, best first) and the base spec with N fresh seeds each, as ordinary run
folders (``<sweep folder>/confirm/<setting>/seed<k>``), ``--workers`` at a time, resumable, each a
W&B run in group ``<study>-confirm`` with the tag ``confirm`` and the setting's ``trial.params.*``.

Per setting: the values (the sweep's objective of each seed's run), their mean, the sample
standard deviation and the 95% interval of the mean (Student's t, n - 1 degrees of freedom).
Against the base, seed by seed (the same seed: the same initial weights and data order, so the
noise they share cancels): the differences' mean and 95% interval (a paired t interval). The
verdict follows the interval, not the mean: ``better`` when it lies wholly on the improving side of
0, ``worse`` when wholly on the other, else ``no evidence``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvae.errors import SpecError
from cvae.spec import validate_spec
from cvae.sweep.file import Sweep, trial_spec_dict
from cvae.sweep.trial import run_epoch_rows, scored_row

BASE = "base"
CONFIDENCE = 0.95
RESULT_FILE = "confirm.json"
PLOT_FILE = "confirm.png"


@dataclass
class Setting:
    name: str  # "base" or "trial-<n>"
    params: dict[str, Any]  # the searched keys' values; {} for the base
    trial: int | None = None
    sweep_value: float | None = None  # what the trial scored in the sweep (the flattering one)


def pick_settings(study, sweep: Sweep, top: int) -> list[Setting]:
    """The base, then the ``top`` best complete trials whose specs differ from the base's and from
    each other's (an enqueued copy of the base is the base)."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise SpecError(f"study {study.study_name!r} has no complete trial yet: run the sweep first")
    best_first = sorted(complete, key=lambda t: t.value, reverse=sweep.spec.objective.direction == "maximize")
    seen = [_resolved(sweep, {})]
    out = [Setting(BASE, {})]
    for t in best_first:
        spec = _resolved(sweep, t.params)
        if spec in seen:
            continue
        seen.append(spec)
        out.append(Setting(f"trial-{t.number}", dict(t.params), t.number, t.value))
        if len(out) > top:
            break
    return out


def _resolved(sweep: Sweep, params: dict[str, Any]) -> dict[str, Any]:
    return validate_spec(trial_spec_dict(sweep, params)).to_dict()


def fresh_seeds(sweep: Sweep, n: int) -> list[int]:
    """Seeds the sweep's trials did not train with: the base spec's seed + 1, + 2, ..."""
    base_seed = sweep.base_spec().seed
    return [base_seed + 1 + i for i in range(n)]


def confirm_specs(sweep: Sweep, settings: list[Setting], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """``<setting>/seed<k>`` -> the spec dict of that run."""
    out = {}
    for s in settings:
        for seed in seeds:
            extra = {
                "seed": seed,
                "tracking.wandb.group": f"{sweep.study}-confirm",
                "tracking.wandb.job_type": "confirm",
                "tracking.wandb.tags": ["confirm", sweep.study],
                "tracking.wandb.name": f"{sweep.study}-{s.name}-s{seed}",
                "tracking.wandb.config": {
                    "trial": {"study": sweep.study, "setting": s.name, "number": s.trial, "params": s.params}
                },
            }
            data = trial_spec_dict(sweep, s.params, extra)
            data["name"] = f"{data.get('name', 'experiment')}-{s.name}-s{seed}"
            out[f"{s.name}/seed{seed}"] = validate_spec(data, f"confirm run {s.name}, seed {seed}").to_dict()
    return out


# --------------------------------------------------------------------------- statistics


def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, df))


def mean_interval(values: list[float]) -> tuple[float, float, tuple[float, float]]:
    """(mean, sample standard deviation, 95% interval of the mean); one value: no interval (nan)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, (math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return mean, sd, (mean - half, mean + half)


def verdict(interval: tuple[float, float], direction: str) -> str:
    low, high = interval
    if math.isnan(low):
        return "no evidence"
    better, worse = (low > 0, high < 0) if direction == "maximize" else (high < 0, low > 0)
    return "better" if better else "worse" if worse else "no evidence"


def summarize(values: dict[str, dict[int, float]], direction: str) -> list[dict[str, Any]]:
    """``{setting: {seed: value}}`` (the base first) -> one dict per setting: ``name``, ``seeds``,
    ``values``, ``mean``, ``sd``, ``ci95``; beside the base, ``vs_base`` with the paired
    differences' ``mean``, ``ci95`` and the ``verdict``."""
    base = values[BASE]
    out = []
    for name, by_seed in values.items():
        seeds = sorted(by_seed)
        vals = [by_seed[s] for s in seeds]
        mean, sd, ci = mean_interval(vals)
        row: dict[str, Any] = {"name": name, "seeds": seeds, "values": vals, "mean": mean, "sd": sd, "ci95": list(ci)}
        if name != BASE:
            paired = [by_seed[s] - base[s] for s in seeds if s in base]
            d_mean, _, d_ci = mean_interval(paired) if paired else (math.nan, math.nan, (math.nan, math.nan))
            row["vs_base"] = {
                "mean": d_mean,
                "ci95": list(d_ci),
                "verdict": verdict(d_ci, direction),
                "paired": len(paired),
            }
        out.append(row)
    return out


# --------------------------------------------------------------------------- the command


def run_confirm(sweep: Sweep, study, top: int, n_seeds: int, workers: int, console=None) -> dict[str, Any]:
    """Train the settings' seeds (skipping finished runs, resuming stopped ones), then score them:
    the content of confirm.json, also written to the sweep folder with its plot."""
    from cvae.runs.queue import train_all

    settings = pick_settings(study, sweep, top)
    seeds = fresh_seeds(sweep, n_seeds)
    runs_dir = sweep.out_dir / "confirm"
    _, failed = train_all(confirm_specs(sweep, settings, seeds), runs_dir, workers, console)
    if failed:  # every seed of every setting is needed for the intervals
        raise RuntimeError("confirm runs failed (fix or remove them, then run confirm again): " + "; ".join(failed))
    o = sweep.spec.objective
    values: dict[str, dict[int, float]] = {}
    mean_frame: list[float] = []
    for s in settings:
        values[s.name] = {}
        for seed in seeds:
            row = scored_row(run_epoch_rows(runs_dir / s.name / f"seed{seed}"), o.metric, o.direction, o.epoch)
            values[s.name][seed] = float(row[o.metric])
            if isinstance(row.get("val/psnr_mean_frame"), int | float):
                mean_frame.append(float(row["val/psnr_mean_frame"]))
    rows = summarize(values, o.direction)
    for row, s in zip(rows, settings, strict=True):
        row |= {"params": s.params, "trial": s.trial, "sweep_value": s.sweep_value}
    result = {
        "study": sweep.study,
        "metric": o.metric,
        "direction": o.direction,
        "seeds": seeds,
        "confidence": CONFIDENCE,
        "mean_frame": sum(mean_frame) / len(mean_frame) if mean_frame else None,
        "settings": rows,
    }
    path = sweep.out_dir / RESULT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_json(result) + "\n")
    tmp.replace(path)
    plot_confirm(sweep.out_dir / PLOT_FILE, result)
    return result


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
    frame's PSNR dotted."""
    from cvae.tracking.media import pyplot, save_figure

    plt = pyplot()
    rows = result["settings"]
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 3.6), dpi=110)
    for i, row in enumerate(rows):
        n = len(row["values"])
        xs = [i + 0.12 * (k - (n - 1) / 2) / max(1, n - 1) for k in range(n)]
        ax.scatter(xs, row["values"], s=18, color="tab:blue" if row["name"] == BASE else "tab:orange", zorder=3)
        low, high = row["ci95"]
        if not math.isnan(low):
            ax.errorbar(i + 0.25, row["mean"], yerr=[[row["mean"] - low], [high - row["mean"]]], fmt="_k", capsize=4)
    ax.axhline(rows[0]["mean"], ls="--", lw=1, color="tab:blue", label=f"base mean {rows[0]['mean']:.2f}")
    if result.get("mean_frame") is not None:
        ax.axhline(result["mean_frame"], ls=":", lw=1, color="tab:gray", label=f"mean frame {result['mean_frame']:.2f}")
    labels = [r["name"] + (f"\n{r['vs_base']['verdict']}" if "vs_base" in r else "") for r in rows]
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set(
        ylabel=result["metric"], title=f"{result['study']}: confirmed over seeds {result['seeds']} (mean, 95% interval)"
    )
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def confirm_table(result: dict[str, Any]):
    """The table of ``cvae sweep confirm``."""
    from cvae.sweep.study import params_text
    from cvae.terminal import Col, table

    columns = [
        Col("setting"),
        Col("values"),
        Col("mean", numeric=True),
        Col("sd", numeric=True),
        Col("95% interval", numeric=True, short="95% CI"),
        Col("the paired difference from the base and its 95% interval", numeric=True, short="vs base"),
        Col("verdict"),
        Col("parameters", short="params"),
    ]
    rows = []
    for row in result["settings"]:
        low, high = row["ci95"]
        vs = row.get("vs_base")
        vs_text = "" if vs is None else f"{vs['mean']:+.2f}\n[{vs['ci95'][0]:+.2f}, {vs['ci95'][1]:+.2f}]"
        rows.append(
            [
                row["name"] + (f" (sweep: {row['sweep_value']:.2f})" if row.get("sweep_value") is not None else ""),
                " ".join(f"{v:.2f}" for v in row["values"]),
                f"{row['mean']:.2f}",
                f"{row['sd']:.2f}",
                f"[{low:.2f},\n{high:.2f}]",
                vs_text,
                "" if vs is None else vs["verdict"],
                params_text(row["params"]) or "(the base spec)",
            ]
        )
    title = f"{result['study']}: {result['metric']} over seeds {result['seeds']} (95% intervals)"
    return table(title, columns, rows)
