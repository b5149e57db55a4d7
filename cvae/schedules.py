"""KL-annealing and teacher-forcing schedules: pure functions of the position in training.

Positions count from 0: epoch e in [0, epochs) or optimizer step s in [0, total_steps),
as set by each schedule's ``unit``. Nothing here holds state, so resume needs only the epoch
and step counters.
"""

from __future__ import annotations

from cvae.spec import KLAnnealingSpec, TeacherForcingSpec


def kl_beta(kl: KLAnnealingSpec, position: int, total: int) -> float:
    """Beta at ``position`` of ``total`` units (Fu et al. 2019, "Cyclical Annealing Schedule").

    The run is split into M = ``cycles`` cycles of length L = total / M. Within a cycle,
    tau = (position mod L) / L, and beta = tau / R while tau <= R, else 1 (times ``max_beta``).
    ``monotonic`` is one cycle; ``none`` is beta = max_beta throughout.

    Pitfall (the lab's defaults): with M = 10, R = 1 and 70 epochs, L = 7 and tau only takes
    the values 0, 1/7, ..., 6/7, so beta peaks at 6/7 and never reaches 1.
    """
    if kl.type == "none":
        return kl.max_beta
    cycles = 1 if kl.type == "monotonic" else kl.cycles
    # tau = (position mod L) / L with L = total / M, computed as frac(position * M / total) in
    # integers: a float modulo puts some cycle starts at tau ~1 (20 epochs, M = 6: 10 % (20/6)).
    tau = (position * cycles % total) / total
    return kl.max_beta * min(1.0, tau / kl.ratio)


def teacher_forcing_ratio(tf: TeacherForcingSpec, position: int) -> float:
    """The probability of feeding the real previous frame at ``position``.

    As in the lab's trainer, which lowers the ratio after each epoch once ``decay_start``
    epochs are done: the ratio stays at ``ratio`` for the first ``decay_start`` units (at least
    the first one), then drops by ``decay_step`` per unit, never below ``floor``.
    Example (lab): ratio 1, decay_start 10, step 0.1 -> epochs 0-9 use 1.0, epoch 10 uses 0.9.
    """
    drops = max(0, position - max(tf.decay_start, 1) + 1)
    return max(tf.floor, tf.ratio - tf.decay_step * drops)
