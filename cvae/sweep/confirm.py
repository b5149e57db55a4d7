"""``cvae sweep confirm``: retrain the sweep's best settings and its base with fresh seeds, and say
which beat the base beyond the seeds' noise.

A sweep's best trial is the largest of many noisy values, so it flatters itself (the winner's
curse): retrained with other seeds it usually scores less. Confirm trains the top K settings
(distinct complete trials, best first) and the base spec with fresh seeds, as ordinary run
folders (``<sweep folder>/confirm/<setting>/seed<k>``), ``--workers`` at a time, resumable, each a
W&B run in group ``<study>-confirm`` with the tag ``confirm`` and the setting's ``trial.params.*``.

Against the base, seed by seed: the paired differences and their interval decide the verdict
(cvae/sweep/stats.py). By default confirm races: every setting first gets ``min_seeds`` seeds, then
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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvae import run_folder
from cvae.errors import SpecError
from cvae.spec import validate_spec
from cvae.sweep import stats
from cvae.sweep.confirm_report import TEST_METRIC, write_result
from cvae.sweep.file import Sweep, trial_spec_dict
from cvae.sweep.stats import BASE, CONFIDENCE
from cvae.sweep.trial import run_epoch_rows, scored_row


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


# --------------------------------------------------------------------------- the command


@dataclass
class Scores:
    """What confirm's runs scored: ``values`` (the sweep's metric, what the race decides on) and ``test``
    (held-out, never raced on), each {setting: {seed: value}}, and the trivial mean-frame references."""

    values: dict[str, dict[int, float]]
    test: dict[str, dict[int, float]]
    mean_frame: dict[tuple[str, int], float]
    test_mean_frame: list[float]


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
    scores = Scores({s.name: {} for s in settings}, {s.name: {} for s in settings}, {}, [])

    def train(pairs: list[tuple[Setting, int]]) -> None:
        from cvae.runs.queue import train_all

        _, failed = train_all(runs_of(sweep, pairs), runs_dir, workers, console, gpus)
        if failed:  # every seed of a setting is needed for its interval
            raise RuntimeError("confirm runs failed (fix or remove them, then run confirm again): " + "; ".join(failed))
        for s, seed in pairs:
            score_run(runs_dir / s.name / f"seed{seed}", s.name, seed, o, scores)

    if not race:
        train([(s, seed) for s in settings for seed in seeds])
        rows = stats.summarize(scores.values, o.direction)
    else:
        min_seeds = min(min_seeds, max_seeds)
        rows = stats.summarize_race(
            scores.values, race_settings(settings, seeds, min_seeds, train, scores, o.direction)
        )
    stats.add_heldout(rows, scores.test)
    for row, s in zip(rows, settings, strict=True):
        row |= {"params": s.params, "trial": s.trial, "sweep_value": s.sweep_value}
    trained = sum(len(v) for v in scores.values.values())
    mean_frame, test_mean_frame = scores.mean_frame, scores.test_mean_frame
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
        "heldout": any(scores.test.values()),  # false: the data has no test truth (the lab's own), or runs made before
        "settings": rows,
    }
    write_result(sweep.out_dir, result)
    return result


def score_run(run_dir: Path, name: str, seed: int, objective, scores: Scores) -> None:
    """A finished confirm run's score (the sweep's objective, as a trial is scored), its held-out score
    and their mean-frame references, into ``scores``."""
    o = objective
    row = scored_row(run_epoch_rows(run_dir), o.metric, o.direction, o.epoch)
    scores.values[name][seed] = float(row[o.metric])
    if isinstance(row.get("val/psnr_mean_frame"), int | float):
        scores.mean_frame[name, seed] = float(row["val/psnr_mean_frame"])
    summary = run_folder.read_summary(run_dir)
    if isinstance(summary.get(TEST_METRIC), int | float):
        scores.test[name][seed] = float(summary[TEST_METRIC])
        if isinstance(summary.get("test/psnr_mean_frame"), int | float):
            scores.test_mean_frame.append(float(summary["test/psnr_mean_frame"]))


def race_settings(
    settings: list[Setting],
    seeds: list[int],
    min_seeds: int,
    train: Callable[[list[tuple[Setting, int]]], None],
    scores: Scores,
    direction: str,
) -> dict[str, stats.Look]:
    """The race: every setting on the first ``min_seeds`` seeds, then one more seed per round for the
    settings still open (and the base, which every open setting pairs with), up to the last seed.
    Returns each setting's deciding look."""
    max_seeds = len(seeds)
    others = [s for s in settings if s.name != BASE]
    values = scores.values
    decisions: dict[str, stats.Look] = {}
    n, todo = min_seeds, [(s, seed) for s in settings for seed in seeds[:min_seeds]]
    while True:
        train(todo)
        for s in others:
            if s.name not in decisions or not decisions[s.name].settled:
                diffs = [values[s.name][k] - values[BASE][k] for k in seeds[:n]]
                decisions[s.name] = stats.look(diffs, min_seeds, max_seeds, direction)
        still = [s for s in others if not decisions[s.name].settled]
        if not still or n == max_seeds:
            return decisions
        todo = [(s, seeds[n]) for s in [settings[0], *still]]  # the base first: every open setting pairs with it
        n += 1
