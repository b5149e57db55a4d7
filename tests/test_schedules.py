"""cvae.schedules against values worked out by hand from Fu et al. 2019 and the lab's trainer."""

from __future__ import annotations

from itertools import pairwise

import pytest

from cvae.spec import KLAnnealingSpec, TeacherForcingSpec
from cvae.training.schedules import epoch_coin, kl_beta, teacher_forced_epoch, teacher_forcing_ratio


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


def frange_cycle_linear(n_iter: int, start: float = 0.0, stop: float = 1.0, n_cycle: int = 4, ratio: float = 0.5):
    """Fu et al.'s reference schedule (github.com/haofuml/cyclical_annealing), written out here from
    the paper's code as an independent oracle: cycle c fills positions int(i + c * period), i = 0, 1,
    ..., with start + i * step while the value stays <= stop; every other position holds stop."""
    values = [stop] * n_iter
    period = n_iter / n_cycle
    step = (stop - start) / (period * ratio)
    for c in range(n_cycle):
        v, i = start, 0
        while v <= stop and int(i + c * period) < n_iter:
            values[int(i + c * period)] = v
            v += step
            i += 1
    return values


def test_cycle_starts_are_whole_units_as_in_fus_reference_code():
    """10 epochs, 3 cycles, ratio 0.5: cycles start at epochs 0, 3 and 6 (floor of 10/3 and 20/3),
    each restarting at 0. A float cycle length would put the second start at 3.33 and miss it."""
    got = betas(10, type="cyclical", cycles=3, ratio=0.5)
    assert got == pytest.approx([0, 0.6, 1, 0, 0.6, 1, 0, 0.6, 1, 1])
    assert got == pytest.approx(frange_cycle_linear(10, n_cycle=3, ratio=0.5))


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_beta_equals_fus_frange_cycle_linear(unit):
    """Every (T, M, R) tried, T divisible by M or not, cycles shorter than a unit included; the same
    function serves epoch and step units (the trainer passes the position and total of each)."""
    totals = (1, 2, 3, 7, 10, 16, 20, 33, 70, 97) if unit == "epoch" else (60, 97, 120, 240, 644)
    tried = 0
    for total in totals:
        for cycles in (1, 2, 3, 4, 6, 7, 10, 13):
            for ratio in (0.1, 0.25, 1 / 3, 0.5, 0.8, 1.0):
                kl = KLAnnealingSpec(type="cyclical", cycles=cycles, ratio=ratio, unit=unit)
                got = [kl_beta(kl, p, total) for p in range(total)]
                # The oracle's running sum can land a hair above 1 where the exact value is 1.
                want = frange_cycle_linear(total, n_cycle=cycles, ratio=ratio)
                assert got == pytest.approx(want, abs=1e-9), (total, cycles, ratio)
                tried += 1
    assert tried >= 240


def test_monotonic_equals_frange_with_one_cycle():
    for total in (7, 10, 70, 240):
        for ratio in (0.1, 1 / 7, 0.5, 1.0):
            kl = KLAnnealingSpec(type="monotonic", ratio=ratio)
            want = frange_cycle_linear(total, n_cycle=1, ratio=ratio)
            assert [kl_beta(kl, p, total) for p in range(total)] == pytest.approx(want, abs=1e-9)


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


# --------------------------------------------------------------------------- the lab's epoch coin


def test_epoch_coin_is_a_pure_function_of_seed_and_epoch():
    assert epoch_coin(3, 7) == epoch_coin(3, 7)
    coins = {epoch_coin(s, e) for s in range(5) for e in range(20)}
    assert len(coins) == 100 and all(0 <= c < 1 for c in coins)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_epoch_coin_forces_an_epoch_with_the_ratios_probability(ratio):
    """Over 2,000 (seed, epoch) pairs the share of forced epochs is the ratio, within 4 standard
    errors (a binomial's sd of the share is sqrt(r (1 - r) / n))."""
    n = 2000
    forced = sum(teacher_forced_epoch(seed, epoch, ratio) for seed in range(40) for epoch in range(n // 40))
    assert abs(forced / n - ratio) < 4 * (ratio * (1 - ratio) / n) ** 0.5
    assert not any(teacher_forced_epoch(s, e, 0.0) for s in range(10) for e in range(10))
    assert all(teacher_forced_epoch(s, e, 1.0) for s in range(10) for e in range(10))


def test_step_tfr_in_epoch_mode_is_the_coin_for_the_whole_epoch():
    from cvae.spec import ExperimentSpec
    from cvae.training.schedules import step_tfr

    spec = ExperimentSpec.model_validate({"seed": 5, "teacher_forcing": {"mode": "epoch", "ratio": 0.5}})
    for epoch in range(30):
        want = 1.0 if epoch_coin(5, epoch) < 0.5 else 0.0
        assert {step_tfr(spec, epoch, 0.5) for _ in range(4)} == {want}  # every step of the epoch
    per_clip = ExperimentSpec.model_validate({"teacher_forcing": {"mode": "sequence"}})
    assert step_tfr(per_clip, 3, 0.37) == 0.37  # the other modes toss their coins in the step


# --------------------------------------------------------------------------- the report's schedules


def test_report_specs_give_the_reports_beta_per_epoch():
    """The report's code: cyclical beta = (epoch mod 10) / 10, monotonic min(1, epoch / 10), none 1."""
    from pathlib import Path

    from cvae.spec import load_spec

    experiments = Path(__file__).parent.parent / "experiments"
    formulas = {
        "report_kl_cyclical": lambda e: (e % 10) / 10,
        "report_kl_monotonic": lambda e: min(1.0, e / 10),
        "report_kl_none": lambda e: 1.0,
    }
    for name, formula in formulas.items():
        spec = load_spec(experiments / f"{name}.yaml")
        assert spec.train.epochs == 70
        got = [kl_beta(spec.kl_annealing, e, 70) for e in range(70)]
        assert got == pytest.approx([formula(e) for e in range(70)], abs=1e-12), name
    cyc = [kl_beta(load_spec(experiments / "report_kl_cyclical.yaml").kl_annealing, e, 70) for e in range(70)]
    assert max(cyc) == pytest.approx(0.9)
