"""The statistics of ``cvae sweep confirm``: each setting against the base, seed by seed, and when its
verdict is settled.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05  # the chance of a wrong verdict at no true difference, per setting, over all its looks
INTERIM_SHARE = 0.1  # of ALPHA, spent over the interim looks; the rest at the last
FUTILITY = 0.1  # stop a setting when the chance of any verdict at the last look falls below this
METHOD = (
    "paired t intervals; alpha 0.05 spent over the looks (10% split evenly over the interim looks, 90% at the "
    "last; Bonferroni's bound); futility by stochastic curtailment (conditional power below 10%)"
)


def t_quantile(p: float, df: int) -> float:
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


def verdict(ci: tuple[float, float], direction: str) -> str:
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
