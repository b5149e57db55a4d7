"""``cvae report``: the figures of the published Lab4 analysis, from a set of finished runs.

The published report shows (1) the teacher-forcing ratio with the loss curves for each
teacher-forcing setting, (2) the loss curves under monotonic, cyclical and no KL annealing and
(3) the per-frame PSNR of its best run. The runs are told apart by their specs, not their names:

- teacher forcing: the largest set of runs whose specs differ only in ``teacher_forcing.*``;
- KL annealing: the largest set of runs whose specs differ only in ``kl_annealing.*``;
- per-frame PSNR: among the runs with KL annealing ``none`` and teacher-forcing ratio 0 (the
  report's best recipe, ``experiments/report_psnr.yaml``) the one with the best val PSNR; with
  no such run, the best run of all.

``tracking.*``, ``name`` are ignored when comparing specs. The experiments behind each figure:
``experiments/report_*.yaml`` (docs/tracking.md lists the commands).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cvae.errors import UserError
from cvae.history import references_of
from cvae.run_folder import RunRecord
from cvae.runs.compare import best_frame_curve, load_runs

TF = "teacher_forcing."
KL = "kl_annealing."
_IGNORED = ("tracking.",)
KL_ORDER = {"monotonic": 0, "cyclical": 1, "none": 2}


def _context(run: RunRecord, varying: str) -> tuple:
    """Every setting but the varying section (and those that do not change training)."""
    return tuple(
        sorted((k, repr(v)) for k, v in run.settings.items() if not k.startswith((varying, *_IGNORED)) and k != "name")
    )


def _section(run: RunRecord, prefix: str) -> tuple:
    """A run's settings under ``prefix``, as what they do: with no decay step a teacher-forcing decay
    start changes nothing, so two such specs are one setting."""
    out = {k: v for k, v in run.settings.items() if k.startswith(prefix)}
    if prefix == TF and not out.get(TF + "decay_step"):
        out.pop(TF + "decay_start", None)
    return tuple(sorted((k, repr(v)) for k, v in out.items()))


def ablation(runs: Sequence[RunRecord], varying: str) -> list[RunRecord]:
    """The largest group of runs that share every setting outside ``varying`` and differ in it
    (one run per distinct setting, the first given); [] when no two runs qualify."""
    groups: dict[tuple, dict[tuple, RunRecord]] = {}
    for r in runs:
        groups.setdefault(_context(r, varying), {}).setdefault(_section(r, varying), r)
    best = max(groups.values(), key=len, default={})
    return list(best.values()) if len(best) >= 2 else []


def _num(value) -> str:
    """A setting as a label shows it: a float to 3 decimals (1/7 reads 0.143)."""
    return str(round(value, 3)) if isinstance(value, float) else str(value)


def tf_label(run: RunRecord) -> str:
    s = run.settings
    label = f"TF {_num(s.get(TF + 'ratio', '?'))}"
    if s.get(TF + "decay_step", 0):
        unit = s.get(TF + "unit", "epoch")
        label += f", -{_num(s[TF + 'decay_step'])}/{unit} from {unit} {s.get(TF + 'decay_start', 0)}"
    if s.get(TF + "floor", 0):
        label += f", floor {s[TF + 'floor']}"
    if s.get(TF + "mode", "sequence") != "sequence":
        label += f" ({s[TF + 'mode']})"
    return label


def kl_label(run: RunRecord) -> str:
    s = run.settings
    kind = s.get(KL + "type", "?")
    if kind == "cyclical":
        return f"cyclical ({s.get(KL + 'cycles')} cycles, ratio {_num(s.get(KL + 'ratio'))})"
    if kind == "monotonic":
        return f"monotonic (ratio {_num(s.get(KL + 'ratio'))})"
    return f"none (beta {_num(s.get(KL + 'max_beta', 1.0))})"


def psnr_run(runs: Sequence[RunRecord]) -> RunRecord | None:
    """The run behind the per-frame PSNR figure (see the module doc)."""

    def score(r: RunRecord) -> float:
        return r.best_psnr if r.best_psnr is not None and math.isfinite(r.best_psnr) else -math.inf

    validated = [r for r in runs if r.best_psnr is not None]
    recipe = [
        r for r in validated if r.settings.get(KL + "type") == "none" and float(r.settings.get(TF + "ratio", 1)) == 0
    ]
    pool = recipe or validated
    return max(pool, key=score) if pool else None


# --------------------------------------------------------------------------- figures


def plot_ablation(path: Path, runs: Sequence[RunRecord], labels: Sequence[str], panels, title: str) -> Path:
    """Stacked panels sharing the epoch axis, one colour per setting: the loss curves on top, the
    schedule (teacher-forcing ratio or beta) at the bottom."""
    from cvae.tracking.media import plot_panels

    keys = [key for key, _, _ in panels]
    series = {label: {k: run.series(k) for k in keys} for run, label in zip(runs, labels, strict=True)}
    return plot_panels(path, series, panels, stacked=True, title=title)


# The report compares training and validation curves per setting: train panels, then the validation
# rollout's (on the epochs that validate), then the schedule.
VAL_PANELS = (
    ("val/mse", "val MSE (rollout on the validation video)", True),
    ("val/psnr", "val PSNR (dB, rollout on the validation video)", False),
)
TF_PANELS = (
    ("epoch/loss", "train loss (training clips)", True),
    ("epoch/mse", "train MSE (training clips)", True),
    *VAL_PANELS,
    ("epoch/teacher_forced", "teacher-forced share", False),
    ("epoch/tfr", "teacher-forcing ratio", False),
)
KL_PANELS = (
    ("epoch/loss", "train loss (training clips)", True),
    ("epoch/kl", "train KL (training clips)", True),
    *VAL_PANELS,
    ("epoch/beta", "beta", False),
)


@dataclass
class Figure:
    path: Path
    what: str
    runs: list[tuple[str, RunRecord]]  # (label in the figure, run)


@dataclass
class ReportFigures:
    figures: list[Figure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def table(self):
        from cvae.terminal import Col, table

        folder = self.figures[0].path.parent if self.figures else ""
        runs = [(i, fig, label, run) for fig in self.figures for i, (label, run) in enumerate(fig.runs)]
        heldout = any(isinstance(run.summary.get("test/psnr"), int | float) for *_, run in runs)
        rows = [
            [
                fig.path.name if i == 0 else "",
                label,
                run.label,
                "-" if run.best_psnr is None else f"{run.best_psnr:.2f}",
                *([_db(run.summary.get("test/psnr"))] if heldout else []),
            ]
            for i, fig, label, run in runs
        ]
        columns = ["figure", "setting", "run", Col("best val PSNR (the validation video)", True, short="best val PSNR")]
        if heldout:  # the best checkpoint on the held-out test videos, where the data has their truth
            columns.append(Col("its PSNR on the held-out test videos", True, short="test PSNR"))
        return table(f"report figures -> {folder}", columns, rows)


def _db(value) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def make_report(args: Sequence[str | Path], out: Path, console=None) -> ReportFigures:
    runs = load_runs(args)
    out.mkdir(parents=True, exist_ok=True)
    report = ReportFigures()

    tf_runs = sorted(ablation(runs, TF), key=lambda r: -float(r.settings.get(TF + "ratio", 0)))
    if tf_runs:
        labels = [tf_label(r) for r in tf_runs]
        path = plot_ablation(
            out / "teacher_forcing.png", tf_runs, labels, TF_PANELS, "teacher forcing: ratio and loss per setting"
        )
        report.figures.append(Figure(path, "teacher forcing", list(zip(labels, tf_runs, strict=True))))
    else:
        report.skipped.append("teacher forcing: needs two or more runs whose specs differ only in teacher_forcing.*")

    kl_runs = sorted(ablation(runs, KL), key=lambda r: KL_ORDER.get(r.settings.get(KL + "type"), 9))
    if kl_runs:
        labels = [kl_label(r) for r in kl_runs]
        path = plot_ablation(
            out / "kl_annealing.png", kl_runs, labels, KL_PANELS, "KL annealing: loss, KL and beta per schedule"
        )
        report.figures.append(Figure(path, "KL annealing", list(zip(labels, kl_runs, strict=True))))
    else:
        report.skipped.append("KL annealing: needs two or more runs whose specs differ only in kl_annealing.*")

    best = psnr_run(runs)
    curve = best_frame_curve(best, console) if best is not None else None
    if curve is not None:
        from cvae.tracking.media import plot_psnr

        m = curve.metrics
        shift = m.get("pose_shift", "?")
        path = plot_psnr(
            out / "psnr_per_frame.png",
            {"prediction": curve.psnr, f"poses shifted by {shift} frames": curve.shifted},
            references_of(m),
            f"{best.label}: per-frame PSNR on the validation video, best checkpoint (epoch {m.get('epoch', '?')})",
        )
        label = f"{kl_label(best)}; {tf_label(best)}"
        report.figures.append(Figure(path, "per-frame PSNR", [(label, best)]))
    else:
        why = "; ".join(best.notes) if best is not None and best.notes else "no run has validated"
        report.skipped.append(f"per-frame PSNR: {why}")

    if not report.figures:
        raise UserError("no report figure could be made:\n  " + "\n  ".join(report.skipped))
    return report
