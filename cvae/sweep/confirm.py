"""``cvae sweep confirm``: retrain the sweep's best settings and its base with fresh seeds, and say
which beat the base beyond the seeds' noise.

A sweep's best trial is the largest of many noisy values, so it flatters itself (the winner's
curse): retrained with other seeds it usually scores less. Confirm trains the top K settings
(distinct complete trials, best first) and the base spec with fresh seeds, as ordinary run
folders (``<sweep folder>/confirm/<setting>/seed<k>``), ``--workers`` at a time, resumable, each a
W&B run in group ``<study>-confirm`` with the tag ``confirm`` and the setting's ``trial.params.*``.

Against the base, seed by seed: the paired differences and their interval decide the verdict
(cvae/sweep/race.py). By default confirm races: every setting first gets ``min_seeds`` seeds, then
one more seed per round while its verdict is open, up to ``max_seeds``; every setting on the same
seeds, and the base on every seed an open setting has. ``race=False`` trains every setting on all
``max_seeds`` seeds and decides once, by its 95% interval.

Where the dataset holds the test videos' true frames (the synthetic dancer), every run also scores its
best checkpoint on them when it ends (``tracking.test_at_end``): each setting then gets its held-out mean
beside its validation mean, and a held-out verdict against the base by the same paired method, on the
seeds the race trained it on and at the level of the look that settled its validation verdict. The
race decides on validation alone; the held-out verdict says whether its answer holds on videos nobody
chose on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvae import run_folder
from cvae.atomic import write_text
from cvae.errors import SpecError
from cvae.spec import validate_spec
from cvae.sweep import race as stats
from cvae.sweep.file import Sweep, trial_spec_dict
from cvae.sweep.trial import run_epoch_rows, scored_row

BASE = "base"
CONFIDENCE = 0.95
TEST_METRIC = "test/psnr"  # the held-out score of a run's best checkpoint, in its summary.json (higher is better)
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
    """``<setting>/seed<k>`` -> the spec dict of that run, for every setting on every seed."""
    return runs_of(sweep, [(s, seed) for s in settings for seed in seeds])


def runs_of(sweep: Sweep, pairs: list[tuple[Setting, int]]) -> dict[str, dict[str, Any]]:
    """``<setting>/seed<k>`` -> the spec dict of that run, for each (setting, seed)."""
    out = {}
    for s, seed in pairs:
        extra = {
            "seed": seed,
            "tracking.wandb.group": f"{sweep.study}-confirm",
            "tracking.wandb.job_type": "confirm",
            "tracking.media": "end",  # the best epoch's GIF and plot once, at the end
            "tracking.test_at_end": True,  # the held-out test videos, where the data has their truth: never raced on
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


verdict = stats.verdict


def summarize(values: dict[str, dict[int, float]], direction: str) -> list[dict[str, Any]]:
    """``{setting: {seed: value}}`` (the base first) -> one dict per setting: ``name``, ``seeds``,
    ``values``, ``mean``, ``sd``, ``ci95``; beside the base, ``vs_base`` with the paired
    differences' ``mean``, ``ci95`` and the ``verdict``: one look, at 95% (``--no-race``)."""
    base = values[BASE]
    out = []
    for name, by_seed in values.items():
        row = describe(name, by_seed)
        if name != BASE:
            paired = [by_seed[s] - base[s] for s in sorted(by_seed) if s in base]
            d_mean, _, d_ci = mean_interval(paired) if paired else (math.nan, math.nan, (math.nan, math.nan))
            row["vs_base"] = {
                "mean": d_mean,
                "ci95": list(d_ci),
                "ci": list(d_ci),
                "level": CONFIDENCE,
                "verdict": verdict(d_ci, direction),
                "paired": len(paired),
                "settled": "all seeds",
                "settled_at": len(paired),
            }
        out.append(row)
    return out


def add_heldout(rows: list[dict[str, Any]], test: dict[str, dict[int, float]]) -> None:
    """Each row's held-out scores (``test``: {setting: {seed: test/psnr}}) on the seeds it was trained on
    (``test``: their values, mean, sd and 95% interval), and beside the base ``test_vs_base``: the paired
    differences on those seeds, their interval at the level of the row's validation verdict (the same
    method, the same strictness) and its verdict (higher PSNR is better)."""
    base = test.get(BASE, {})
    for row in rows:
        mine = {k: test[row["name"]][k] for k in row["seeds"] if k in test.get(row["name"], {})}
        row["test"] = describe(row["name"], mine) if mine else None
        vs = row.get("vs_base")
        if vs is None or not mine:
            continue
        paired = [mine[k] - base[k] for k in sorted(mine) if k in base]
        level = vs.get("level", CONFIDENCE)
        d_mean, _, d_ci = stats.interval(paired, 1 - level) if paired else (math.nan, math.nan, (math.nan, math.nan))
        row["test_vs_base"] = {
            "mean": d_mean,
            "ci": list(d_ci),
            "level": level,
            "verdict": verdict(d_ci, "maximize"),
            "paired": len(paired),
        }


def describe(name: str, by_seed: dict[int, float]) -> dict[str, Any]:
    seeds = sorted(by_seed)
    vals = [by_seed[s] for s in seeds]
    mean, sd, ci = mean_interval(vals)
    return {"name": name, "seeds": seeds, "values": vals, "mean": mean, "sd": sd, "ci95": list(ci)}


def summarize_race(
    values: dict[str, dict[int, float]], decisions: dict[str, stats.Look], direction: str
) -> list[dict[str, Any]]:
    """As ``summarize``, each setting against the base at the look that settled it (or its last)."""
    out = []
    for name, by_seed in values.items():
        row = describe(name, by_seed)
        if name in decisions:
            d = decisions[name]
            row["vs_base"] = {
                "mean": d.mean,
                "ci": list(d.ci),
                "level": 1 - d.alpha,
                "verdict": d.verdict,
                "paired": d.n,
                "settled": d.settled or "open",
                "settled_at": d.n,
            }
        out.append(row)
    return out


# --------------------------------------------------------------------------- the command


def run_confirm(
    sweep: Sweep,
    study,
    top: int,
    max_seeds: int,
    workers: int,
    console=None,
    min_seeds: int = 3,
    race: bool = True,
    gpus: list[str] = (),
) -> dict[str, Any]:
    """Train the settings' seeds (skipping finished runs, resuming stopped ones; ``workers`` at a time,
    the i-th on ``gpus[i]``) and score them, in a race or (``race`` false) all at once: the content of
    confirm.json, written to the sweep folder with its plot."""
    settings = pick_settings(study, sweep, top)
    seeds = fresh_seeds(sweep, max_seeds)
    runs_dir = sweep.out_dir / "confirm"
    o = sweep.spec.objective
    values: dict[str, dict[int, float]] = {s.name: {} for s in settings}
    test: dict[str, dict[int, float]] = {s.name: {} for s in settings}  # held-out scores, never raced on
    mean_frame: dict[tuple[str, int], float] = {}
    test_mean_frame: list[float] = []

    def train(pairs: list[tuple[Setting, int]]) -> None:
        from cvae.runs.queue import train_all

        _, failed = train_all(runs_of(sweep, pairs), runs_dir, workers, console, gpus)
        if failed:  # every seed of a setting is needed for its interval
            raise RuntimeError("confirm runs failed (fix or remove them, then run confirm again): " + "; ".join(failed))
        for s, seed in pairs:
            row = scored_row(run_epoch_rows(runs_dir / s.name / f"seed{seed}"), o.metric, o.direction, o.epoch)
            values[s.name][seed] = float(row[o.metric])
            if isinstance(row.get("val/psnr_mean_frame"), int | float):
                mean_frame[s.name, seed] = float(row["val/psnr_mean_frame"])
            summary = run_folder.read_summary(runs_dir / s.name / f"seed{seed}")
            if isinstance(summary.get(TEST_METRIC), int | float):
                test[s.name][seed] = float(summary[TEST_METRIC])
                if isinstance(summary.get("test/psnr_mean_frame"), int | float):
                    test_mean_frame.append(float(summary["test/psnr_mean_frame"]))

    if not race:
        train([(s, seed) for s in settings for seed in seeds])
        rows = summarize(values, o.direction)
    else:
        min_seeds = min(min_seeds, max_seeds)
        others = [s for s in settings if s.name != BASE]
        decisions: dict[str, stats.Look] = {}
        n, todo = min_seeds, [(s, seed) for s in settings for seed in seeds[:min_seeds]]
        while True:
            train(todo)
            for s in others:
                if s.name not in decisions or not decisions[s.name].settled:
                    diffs = [values[s.name][k] - values[BASE][k] for k in seeds[:n]]
                    decisions[s.name] = stats.look(diffs, min_seeds, max_seeds, o.direction)
            still = [s for s in others if not decisions[s.name].settled]
            if not still or n == max_seeds:
                break
            todo = [(s, seeds[n]) for s in [settings[0], *still]]  # the base first: every open setting pairs with it
            n += 1
        rows = summarize_race(values, decisions, o.direction)
    add_heldout(rows, test)
    for row, s in zip(rows, settings, strict=True):
        row |= {"params": s.params, "trial": s.trial, "sweep_value": s.sweep_value}
    trained = sum(len(v) for v in values.values())
    result = {
        "study": sweep.study,
        "metric": o.metric,
        "direction": o.direction,
        "seeds": seeds,
        "race": race,
        "min_seeds": min_seeds if race else max_seeds,
        "max_seeds": max_seeds,
        "method": stats.METHOD if race else "paired t intervals at 95%, one look after every seed",
        "confidence": CONFIDENCE,
        "runs": trained,
        "runs_saved": len(settings) * max_seeds - trained,
        "mean_frame": sum(mean_frame.values()) / len(mean_frame) if mean_frame else None,
        "test_metric": TEST_METRIC,
        "test_mean_frame": sum(test_mean_frame) / len(test_mean_frame) if test_mean_frame else None,
        "heldout": any(test.values()),  # false: the data has no test truth (the lab's own), or runs made before
        "settings": rows,
    }
    write_text(sweep.out_dir / RESULT_FILE, to_json(result) + "\n")
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
    from cvae.sweep.study import params_text
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
