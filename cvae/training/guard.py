"""Non-finite losses: stop the run at the first one, or skip that batch's update (``train.on_nan``)."""

from __future__ import annotations

import torch

from cvae.device import syncs_are_free
from cvae.errors import TrainingDiverged


def _diverged_message(step: int, out: dict[str, torch.Tensor], beta: float, opt) -> str:
    vals = ", ".join(f"{k} {float(v):.4g}" for k, v in out.items())
    return f"non-finite loss at step {step}: {vals}, beta {beta:.4g}, lr {opt.param_groups[0]['lr']:.4g}"


class DivergenceGuard:
    """Stops the run at the first non-finite loss (``train.on_nan: stop``), or skips that batch's
    update until more than ``train.max_skipped_batches`` were skipped (``skip_batch``).

    Where reading a value is free (CPU) every step is checked before its update is applied. On
    CUDA that read would stall the host every step, so under ``stop`` the first bad step is
    recorded on the device and read at the next sync point (every ``tracking.sync_every`` steps, when
    the logged rows are read, and at the end of the epoch, before any checkpoint): the run stops
    there naming the bad step, after logging the rows before it; the updates applied after it are
    never saved. ``skip_batch`` must decide before each update, so it reads the loss every step on
    every device.
    """

    def __init__(self, device: torch.device, on_nan: str = "stop", max_skipped: int = 10, skipped: int = 0) -> None:
        self.eager = syncs_are_free(device) or on_nan == "skip_batch"
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet
        self.on_nan, self.max_skipped, self.skipped = on_nan, max_skipped, skipped

    def step(self, out: dict[str, torch.Tensor], step: int, beta: float, opt) -> bool:
        """True: apply this batch's update; False: skip it (``skip_batch``)."""
        if self.eager:
            if torch.isfinite(out["loss"]):
                return True
            message = _diverged_message(step, out, beta, opt)
            if self.on_nan == "stop":
                raise TrainingDiverged(message)
            self.skipped += 1
            if self.skipped > self.max_skipped:
                raise TrainingDiverged(
                    f"{message}; {self.skipped} batches skipped, more than train.max_skipped_batches "
                    f"({self.max_skipped})"
                )
            return False
        bad = ~torch.isfinite(out["loss"]) & (self.first_bad == 0)
        self.first_bad = torch.where(bad, step, self.first_bad)
        return True

    @property
    def deferred(self) -> bool:
        """Whether bad steps are recorded on the device (``first_bad``: the first, 0 for none) for the
        trainer to read at its next sync point, rather than checked as they happen."""
        return not self.eager

    def raise_diverged(self, bad: int, step: int) -> None:
        raise TrainingDiverged(
            f"non-finite loss at step {bad} (read at step {step}: on a GPU the loss is read back every "
            f"tracking.sync_every steps)"
        )
