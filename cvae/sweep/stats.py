"""The statistics of ``cvae sweep confirm``, all of them: each setting against the base, seed by seed,
when its verdict is settled, and the rows confirm.json keeps.

Paired differences: on seed k, setting minus base (the same seed gives the same initial weights and
data order, so the noise they share cancels). A verdict comes from an interval of the differences'
mean (Student's t, n - 1 degrees of freedom): ``better`` when it lies wholly on the improving side of
0, ``worse`` when wholly on the other, else ``no evidence``.

**A race** (the idea of F-Race and irace: stop spending runs on what is settled) looks at the
differences after every round of seeds from ``min_seeds`` to ``max_seeds``. Looking more than once
would let chance produce a verdict more often than the 5% a single look allows, so the 5% is spent
over the looks (alpha spending; its bound is Bonferroni's, which holds whatever the looks' correlation):
``INTERIM_SHARE`` of it split evenly over the interim looks, the rest at the last, so an interim
verdict needs a very clear difference and the last look is nearly as sharp as a single one. A
setting also stops, with ``no evidence``, when the last look can hardly end in a verdict any more
(stochastic curtailment: under its current mean and spread, the chance that the final interval
clears 0 on either side is below ``FUTILITY``). Stopping early for futility never makes a
``better`` or ``worse`` verdict more likely, so at no true difference the share of wrong verdicts
stays at or under 5% per setting (tests/test_confirm.py simulates it).

``--no-race`` looks once, after every seed, at 95% (``summarize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BASE = "base"  # the setting every other is paired with
CONFIDENCE = 0.95  # of a single look (--no-race) and of each setting's own interval
ALPHA = 0.05  # the chance of a wrong verdict at no true difference, per setting, over all its looks
INTERIM_SHARE = 0.1  # of ALPHA, spent over the interim looks; the rest at the last
FUTILITY = 0.1  # stop a setting when the chance of any verdict at the last look falls below this
METHOD = (
    "paired t intervals; alpha 0.05 spent over the looks (10% split evenly over the interim looks, 90% at the "
    "last; Bonferroni's bound); futility by stochastic curtailment (conditional power below 10%)"
)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def look_alpha(n: int, min_seeds: int, max_seeds: int) -> float:
    """The two-sided level of the look after ``n`` seeds."""
    looks = max_seeds - min_seeds + 1
    if looks == 1:
        return ALPHA
    if n == max_seeds:
        return ALPHA * (1 - INTERIM_SHARE)
    return ALPHA * INTERIM_SHARE / (looks - 1)


def interval(values: list[float], alpha: float) -> tuple[float, float, tuple[float, float]]:
    """(mean, sample sd, the 1 - alpha interval of the mean); fewer than two values: no interval (nan)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, (math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(1 - alpha / 2, n - 1) * sd / math.sqrt(n)
    return mean, sd, (mean - half, mean + half)


def mean_interval(values: list[float]) -> tuple[float, float, tuple[float, float]]:
    """(mean, sample sd, 95% interval of the mean); one value: no interval (nan)."""
    return interval(values, 1 - CONFIDENCE)


def verdict(ci: tuple[float, float], direction: str) -> str:
    """``better`` when the interval of (setting - base) lies wholly on the improving side of 0, ``worse``
    when wholly on the other, else ``no evidence`` (also when there is no interval)."""
    low, high = ci
    if math.isnan(low):
        return "no evidence"
    better, worse = (low > 0, high < 0) if direction == "maximize" else (high < 0, low > 0)
    return "better" if better else "worse" if worse else "no evidence"


def final_chance(diffs: list[float], max_seeds: int, alpha_last: float) -> float:
    """The chance that the last look's interval clears 0 on either side, if the remaining seeds' differences
    follow the current mean and spread (normal; the spread taken as known)."""
    n, m = len(diffs), max_seeds - len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if m <= 0:
        return 0.0
    if sd == 0:
        return 1.0 if mean != 0 else 0.0
    c = t_quantile(1 - alpha_last / 2, max_seeds - 1)
    # final mean = (n mean + S) / N with S ~ N(m mean, m sd^2); a verdict when |final mean| > c sd / sqrt(N)
    phi = _normal_cdf
    spread, need, total = sd * math.sqrt(m), c * sd * math.sqrt(max_seeds), max_seeds * mean
    return phi((total - need) / spread) + phi((-total - need) / spread)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@dataclass
class Look:
    """A setting's state after a look: its verdict, and whether it needs more seeds."""

    n: int
    mean: float
    ci: tuple[float, float]
    alpha: float
    verdict: str
    settled: str | None  # None: open; "verdict", "futility" or "all seeds"


def look(diffs: list[float], min_seeds: int, max_seeds: int, direction: str) -> Look:
    """The decision after ``len(diffs)`` paired seeds (at least ``min_seeds``)."""
    n = len(diffs)
    a = look_alpha(n, min_seeds, max_seeds)
    mean, _, ci = interval(diffs, a)
    v = verdict(ci, direction)
    if v != "no evidence":
        return Look(n, mean, ci, a, v, "verdict")
    if n >= max_seeds:
        return Look(n, mean, ci, a, v, "all seeds")
    if final_chance(diffs, max_seeds, look_alpha(max_seeds, min_seeds, max_seeds)) < FUTILITY:
        return Look(n, mean, ci, a, v, "futility")
    return Look(n, mean, ci, a, v, None)


def race(diffs: list[float], min_seeds: int, max_seeds: int, direction: str) -> Look:
    """Replay a setting's looks over its first seeds (``min_seeds``, ``min_seeds`` + 1, ...): the first
    that settles, or the look after the last seed given (still open when fewer than ``max_seeds``)."""
    for n in range(min_seeds, len(diffs) + 1):
        decision = look(diffs[:n], min_seeds, max_seeds, direction)
        if decision.settled:
            return decision
    return decision


# --------------------------------------------------------------------------- confirm.json's rows


def describe(name: str, by_seed: dict[int, float]) -> dict[str, Any]:
    """A setting's scores ``{seed: value}``: its seeds, values, mean, sd and 95% interval."""
    seeds = sorted(by_seed)
    vals = [by_seed[s] for s in seeds]
    mean, sd, ci = mean_interval(vals)
    return {"name": name, "seeds": seeds, "values": vals, "mean": mean, "sd": sd, "ci95": list(ci)}


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


def summarize_race(values: dict[str, dict[int, float]], decisions: dict[str, Look]) -> list[dict[str, Any]]:
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
        d_mean, _, d_ci = interval(paired, 1 - level) if paired else (math.nan, math.nan, (math.nan, math.nan))
        row["test_vs_base"] = {
            "mean": d_mean,
            "ci": list(d_ci),
            "level": level,
            "verdict": verdict(d_ci, "maximize"),
            "paired": len(paired),
        }
