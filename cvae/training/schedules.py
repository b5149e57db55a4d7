"""KL-annealing and teacher-forcing schedules: pure functions of the position in training.

Positions count from 0: epoch e in [0, epochs) or optimizer step s in [0, total_steps),
as set by each schedule's ``unit``. Nothing here holds state: a resume needs only the epoch and
step counters, and ``cvae spec show --schedule`` prints a run's schedule without training.
"""

from __future__ import annotations

import numpy as np

from cvae.spec import KLAnnealingSpec, TeacherForcingSpec

COIN_STREAM = 0x7F  # tells the epoch coins' random stream from any other drawn from (seed, epoch)


def kl_beta(kl: KLAnnealingSpec, position: int, total: int) -> float:
    """Beta at ``position`` of ``total`` units (Fu et al. 2019, "Cyclical Annealing Schedule").

    The run is split into M = ``cycles`` cycles; as in the paper's reference code
    (``frange_cycle_linear``), cycle c starts at unit floor(c * T / M), a whole unit, so every cycle
    restarts at beta 0 even where T / M is not a whole number. Within a cycle beta rises by
    M / (T R) per unit from 0 and stays at 1 (times ``max_beta``) once it gets there: the first
    R of the cycle is the ramp. ``monotonic`` is one cycle; ``none`` is beta = max_beta throughout.

    Pitfall (the lab's defaults): with M = 10, R = 1 and 70 epochs a cycle is 7 epochs and beta
    takes the values 0, 1/7, ..., 6/7: it never reaches 1.
    """
    if kl.type == "none":
        return kl.max_beta
    cycles = 1 if kl.type == "monotonic" else kl.cycles
    # The last cycle c with floor(c T / M) <= position, in integers: c T < (position + 1) M.
    c = ((position + 1) * cycles - 1) // total
    units_into_cycle = position - (c * total) // cycles
    return kl.max_beta * min(1.0, units_into_cycle * cycles / (total * kl.ratio))


def teacher_forcing_ratio(tf: TeacherForcingSpec, position: int) -> float:
    """The probability of feeding the real previous frame at ``position``.

    As in the lab's trainer, which lowers the ratio after each epoch once ``decay_start`` epochs are
    done: the ratio stays at ``ratio`` for the first ``decay_start`` units (at least the first
    one), then drops by ``decay_step`` per unit, never below ``floor``.
    Example (lab): ratio 1, decay_start 10, step 0.1 -> epochs 0-9 use 1.0, epoch 10 uses 0.9.
    """
    drops = max(0, position - max(tf.decay_start, 1) + 1)
    return max(tf.floor, tf.ratio - tf.decay_step * drops)


def epoch_coin(seed: int, epoch: int) -> float:
    """The teacher-forcing coin of epoch ``epoch`` (from 0) in ``teacher_forcing.mode: epoch``: a
    uniform number in [0, 1) drawn once per epoch, as the lab's trainer draws
    ``random.random()`` before its batch loop. The epoch is teacher-forced where the coin falls
    below the ratio. A pure function of (seed, epoch): a resumed run tosses the same coins, and
    the schedule can be printed before training."""
    return float(np.random.default_rng((seed, epoch, COIN_STREAM)).random())


def teacher_forced_epoch(seed: int, epoch: int, ratio: float) -> bool:
    """``mode: epoch``: whether the steps of epoch ``epoch`` whose ratio is ``ratio`` are forced."""
    return epoch_coin(seed, epoch) < ratio


def schedule_values(spec, epoch: int, step: int, total_steps: int) -> tuple[float, float]:
    """(beta, teacher-forcing ratio) of ``spec`` for the step ``step`` (from 0) of epoch ``epoch``
    (from 0), ``total_steps`` in the run; each schedule counts its own unit."""
    kl, tf = spec.kl_annealing, spec.teacher_forcing
    b = kl_beta(kl, step, total_steps) if kl.unit == "step" else kl_beta(kl, epoch, spec.train.epochs)
    return b, teacher_forcing_ratio(tf, step if tf.unit == "step" else epoch)


def step_tfr(spec, epoch: int, tfr: float) -> float:
    """What the training step gets as its teacher-forcing ratio: the schedule's ratio, or in
    ``teacher_forcing.mode: epoch`` the epoch's coin (1: the whole epoch is forced, 0: none of it)."""
    if spec.teacher_forcing.mode != "epoch":
        return tfr
    return 1.0 if teacher_forced_epoch(spec.seed, epoch, tfr) else 0.0


def run_schedule(spec, steps_per_epoch: list[int]) -> list[dict]:
    """The schedules a run of ``spec`` would use, one dict per epoch: ``epoch`` (from 1), its
    ``steps``, ``beta`` and ``tfr`` at its first step and, where a schedule counts steps, their
    values at its last step (``beta_last``, ``tfr_last``); in ``teacher_forcing.mode: epoch`` also
    the epoch's ``coin`` and whether it forces the epoch (``teacher_forced``). ``steps_per_epoch``:
    as the trainer computes it (``cvae.data.clips.steps_per_epoch_of``)."""
    total = sum(steps_per_epoch)
    rows, first = [], 0
    for e, n in enumerate(steps_per_epoch):
        beta, tfr = schedule_values(spec, e, first, total)
        row: dict = {"epoch": e + 1, "steps": n, "beta": beta, "tfr": tfr}
        if "step" in (spec.kl_annealing.unit, spec.teacher_forcing.unit):
            row["beta_last"], row["tfr_last"] = schedule_values(spec, e, first + n - 1, total)
        if spec.teacher_forcing.mode == "epoch":
            row["coin"] = epoch_coin(spec.seed, e)
            row["teacher_forced"] = step_tfr(spec, e, tfr) == 1.0
        rows.append(row)
        first += n
    return rows
