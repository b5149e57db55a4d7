"""cvae.schedules against values worked out by hand from Fu et al. 2019 and the lab's trainer."""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise

import pytest

from cvae.schedules import kl_beta, teacher_forcing_ratio
from cvae.spec import KLAnnealingSpec, TeacherForcingSpec


def betas(total: int, **kw) -> list[float]:
    kl = KLAnnealingSpec(**kw)
    return [kl_beta(kl, e, total) for e in range(total)]


# --------------------------------------------------------------------------- KL annealing (beta)


def test_cyclical_four_cycles_half_ratio():
    # 16 epochs, M = 4: cycle length 4, tau = 0, 1/4, 1/2, 3/4; beta = tau / 0.5 capped at 1.
    assert betas(16, type="cyclical", cycles=4, ratio=0.5) == pytest.approx([0, 0.5, 1, 1] * 4)


def test_cyclical_ratio_one_is_a_sawtooth():
    # 12 epochs, M = 3: tau = 0, 1/4, 1/2, 3/4 per cycle, beta = tau (R = 1).
    assert betas(12, type="cyclical", cycles=3, ratio=1.0) == pytest.approx([0, 0.25, 0.5, 0.75] * 3)


def test_monotonic_is_one_cycle():
    # 10 epochs, R = 0.5: tau = e / 10, beta = min(1, tau / 0.5) = min(1, e / 5).
    expected = [0, 0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 1]
    assert betas(10, type="monotonic", ratio=0.5) == pytest.approx(expected)
    # the `cycles` setting does not matter for monotonic
    assert betas(10, type="monotonic", ratio=0.5, cycles=7) == pytest.approx(expected)


def test_none_is_max_beta():
    assert betas(5, type="none") == [1.0] * 5
    assert betas(5, type="none", max_beta=0.25) == [0.25] * 5


def test_max_beta_scales_the_schedule():
    assert betas(4, type="monotonic", ratio=0.5, max_beta=2.0) == pytest.approx([0, 1, 2, 2])


def test_step_unit_counts_steps():
    # The trainer passes the step and the total steps when unit = step: 4 cycles over 40 steps.
    kl = KLAnnealingSpec(type="cyclical", cycles=4, ratio=0.5, unit="step")
    got = [kl_beta(kl, s, 40) for s in range(40)]
    per_cycle = [min(1.0, (i / 10) / 0.5) for i in range(10)]  # 0, .2, .4, .6, .8, 1, 1, 1, 1, 1
    assert got == pytest.approx(per_cycle * 4)


def test_lab_pitfall_never_reaches_one():
    """The lab's M = 10, R = 1 over 70 epochs: cycles of 7 epochs, tau in {0, 1/7, ..., 6/7}."""
    got = betas(70, type="cyclical", cycles=10, ratio=1.0)
    assert max(got) == pytest.approx(6 / 7)
    assert all(b < 1 for b in got)
    assert got[:7] == pytest.approx([k / 7 for k in range(7)])
    assert got == pytest.approx(got[:7] * 10)


def test_cycle_starts_are_exact_when_the_cycle_length_is_not_a_float():
    """20 epochs, M = 6: cycles start at 0, 10/3, 20/3, 10, 40/3, 50/3. Epoch 10 starts a cycle,
    so beta(10) = 0 (a float modulo 10 % 3.333... gives 3.333... and beta ~1 there)."""
    got = betas(20, type="cyclical", cycles=6, ratio=1.0)
    # tau = frac(e * M / total) = frac(3e / 10), exactly
    expected = [float(Fraction(3 * e, 10) % 1) for e in range(20)]
    assert got == pytest.approx(expected, abs=1e-12)
    assert got[10] == 0.0


@pytest.mark.parametrize("kind", ["cyclical", "monotonic", "none"])
@pytest.mark.parametrize("ratio", [0.1, 0.5, 1.0])
def test_beta_bounded(kind, ratio):
    for total in (1, 7, 70, 333):
        for b in betas(total, type=kind, cycles=4, ratio=ratio, max_beta=0.5):
            assert 0.0 <= b <= 0.5


# --------------------------------------------------------------------------- teacher forcing


def tfrs(n: int, **kw) -> list[float]:
    tf = TeacherForcingSpec(**kw)
    return [teacher_forcing_ratio(tf, e) for e in range(n)]


def test_lab_teacher_forcing_example():
    got = tfrs(30, ratio=1.0, decay_start=10, decay_step=0.1)
    assert got[:10] == [1.0] * 10
    assert got[10] == pytest.approx(0.9)
    assert got[11] == pytest.approx(0.8)
    assert got[19] == pytest.approx(0.0, abs=1e-12)
    assert got[20:] == [0.0] * 10  # clamped at the floor, never negative


def test_floor_is_respected():
    got = tfrs(40, ratio=0.9, decay_start=2, decay_step=0.25, floor=0.3)
    assert got[:2] == [0.9, 0.9]
    assert got[2:4] == pytest.approx([0.65, 0.4])
    assert got[4:] == [0.3] * 36
    assert min(got) == 0.3


@pytest.mark.parametrize("kw", [
    {"ratio": 1.0, "decay_start": 10, "decay_step": 0.1},
    {"ratio": 0.5, "decay_start": 0, "decay_step": 0.05, "floor": 0.1},
    {"ratio": 0.7, "decay_start": 3, "decay_step": 0.0},
    {"ratio": 0.0, "decay_start": 30, "decay_step": 0.0},
])  # fmt: skip
def test_monotone_non_increasing_within_bounds(kw):
    got = tfrs(100, **kw)
    assert all(a >= b for a, b in pairwise(got))
    assert got[0] == kw["ratio"]
    assert all(kw.get("floor", 0.0) <= r <= kw["ratio"] for r in got)


def test_decay_start_zero_is_the_labs_update_after_epoch():
    """The lab lowers the ratio after each epoch, so its first epoch always uses the initial ratio."""
    got = tfrs(5, ratio=1.0, decay_start=0, decay_step=0.1)
    assert got == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6])
    assert got == tfrs(5, ratio=1.0, decay_start=1, decay_step=0.1)


def test_zero_step_keeps_the_ratio():
    assert tfrs(50, ratio=0.1, decay_start=30, decay_step=0.0) == [0.1] * 50
