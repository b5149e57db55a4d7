"""``cvae compare``: runs side by side, read from their folders (no W&B needed).

A run folder (``spec.yaml``, ``history.jsonl``, ``summary.json``) is all this module reads; the
per-frame PSNR of a run's best checkpoint comes from ``eval/psnr_per_frame.csv``, written by
``cvae evaluate`` (run here when the file is missing or belongs to another checkpoint).

Outputs: a rich table (the settings that differ between the runs, best and final val PSNR, the
best epoch, epochs done, train time, status), ``compare.csv`` with the same rows, and PNG
figures: ``curves.png`` (val PSNR, train loss, KL, beta and teacher-forcing ratio per epoch,
runs overlaid) and ``psnr_per_frame.png`` (each run's best checkpoint, overlaid).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvae import run_folder
from cvae.errors import RunDirError
from cvae.history import REFERENCE_NAMES, TRIVIAL_REFERENCES
from cvae.history import title as key_title
from cvae.run_folder import RunRecord, is_run, read_run, run_name

# Keys that never change what a run learns: left out of "settings that differ".
_IGNORED_PREFIXES = ("tracking.",)
_IGNORED_KEYS = ("name",)

# Panels of curves.png: (history key on epoch rows, title, log scale when every value is > 0).
CURVE_PANELS = (
    ("val/psnr", key_title("val/psnr"), False),
    ("epoch/loss", key_title("epoch/loss"), True),
    ("epoch/kl", key_title("epoch/kl"), True),
    ("epoch/beta", key_title("epoch/beta"), False),
    ("epoch/tfr", key_title("epoch/tfr"), False),
)


# --------------------------------------------------------------------------- reading runs


def _natural(path: Path) -> list:
    """trials/2 before trials/10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _runs_in(path: Path) -> list[Path]:
    """A run folder itself; a sweep folder's ``trials/*``; else the runs one level down, or two (a
    confirm folder: ``<setting>/seed<k>``)."""
    if is_run(path):
        return [path]
    if not path.is_dir():
        return []
    parent = path / "trials" if (path / "trials").is_dir() else path
    runs = sorted((p for p in parent.iterdir() if p.is_dir() and is_run(p)), key=_natural)
    return runs or sorted((p for p in parent.glob("*/*") if p.is_dir() and is_run(p)), key=_natural)


def resolve_runs(args: Sequence[str | Path]) -> list[Path]:
    """Run folders named by ``args``: folders, globs (``runs/report_*``) or sweep folders."""
    if not args:
        raise RunDirError("no run folders given")
    found: list[Path] = []
    for arg in map(str, args):
        matches = sorted((Path(p) for p in glob.glob(arg)), key=_natural) if glob.has_magic(arg) else [Path(arg)]
        runs = [r for m in matches for r in _runs_in(m)]
        if not runs:
            what = "matches nothing" if not matches or not any(m.exists() for m in matches) else "holds no run"
            raise RunDirError(f"{arg}: {what} (a run folder has spec.yaml; a sweep folder has trials/<n>/spec.yaml)")
        found += runs
    unique: dict[Path, Path] = {}
    for r in found:
        unique.setdefault(r.resolve(), r)
    return list(unique.values())


def _labels(paths: list[Path]) -> list[str]:
    """Folder names, with their parent for a number (``trials/3``); parents are added while two
    runs would share a label."""
    depth = 1
    while True:
        labels = []
        for p in paths:
            parts = p.resolve().parts
            n = depth + 1 if parts[-1].isdigit() else depth
            labels.append("/".join(parts[-n:]))
        if len(set(labels)) == len(labels) or depth > 8:
            return labels
        depth += 1


def load_runs(args: Sequence[str | Path]) -> list[RunRecord]:
    """The runs, each labelled by the name its W&B run has (``tracking.wandb.name``, as a sweep's trials
    have: ``quick-t7``; else the run folder's name), or by its folder and parents where two runs share one."""
    paths = resolve_runs(args)
    runs = [read_run(p, label) for p, label in zip(paths, _labels(paths), strict=True)]
    names = [run_name(r.settings.get("tracking.wandb.name"), p) for r, p in zip(runs, paths, strict=True)]
    if all(names) and len(set(names)) == len(names):
        for r, name in zip(runs, names, strict=True):
            r.label = str(name)
    return runs


def differing_settings(runs: Sequence[RunRecord]) -> list[str]:
    """Spec keys whose value is not the same in every run (missing counts as a value)."""
    keys = sorted({k for r in runs for k in r.settings})
    out = []
    for k in keys:
        if k in _IGNORED_KEYS or k.startswith(_IGNORED_PREFIXES):
            continue
        if len({repr(r.settings.get(k, "<unset>")) for r in runs}) > 1:
            out.append(k)
    return out


# --------------------------------------------------------------------------- per-frame PSNR


@dataclass
class FrameCurve:
    psnr: list[float]
    shifted: list[float]
    metrics: dict[str, Any]  # eval/metrics.json: references, the checkpoint's epoch


def best_frame_curve(run: RunRecord, console=None) -> FrameCurve | None:
    """Per-frame PSNR of the run's best checkpoint (first val video). Reads ``eval/`` when it
    holds the best checkpoint's evaluation, else runs ``cvae evaluate RUN`` (which writes it)."""
    csv_path, metrics_path = run.path / "eval" / "psnr_per_frame.csv", run.path / "eval" / "metrics.json"
    best = run.best_epoch
    fresh = csv_path.is_file() and metrics_path.is_file()
    if fresh and best is not None:  # eval/ of the best checkpoint (saved after epoch best/epoch), as validated
        made = json.loads(metrics_path.read_text())
        batchnorm = run.settings.get("model.eval_batchnorm", "running")
        fresh = made.get("epoch") == best and made.get("eval_batchnorm", "running") == batchnorm
    if not fresh:
        if not run_folder.checkpoint_path(run.path, run_folder.BEST).is_file():
            run.notes.append("no best checkpoint: no per-frame PSNR")
            return None
        from cvae.runs.evaluate import evaluate_run

        try:
            evaluate_run(run.path, "best", None, console)
        except Exception as e:  # e.g. its data folder is gone: compare the rest
            run.notes.append(f"evaluating the best checkpoint failed: {e.__class__.__name__}: {e}")
            return None
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    return FrameCurve(
        [float(r["psnr"]) for r in rows],
        [float(r["psnr_shifted_pose"]) for r in rows],
        json.loads(metrics_path.read_text()),
    )


# --------------------------------------------------------------------------- table


def _fmt_value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _fmt_db(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _fmt_duration(s: float) -> str:
    s = round(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def table_rows(runs: Sequence[RunRecord], keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the comparison, best run first."""
    header = ["run", *keys, "best val PSNR", "best epoch", "final val PSNR", "epochs", "train time", "status", "data"]
    order = sorted(runs, key=lambda r: -(r.best_psnr if r.best_psnr is not None else -math.inf))
    rows = []
    for r in order:
        best_epoch = r.best_epoch
        rows.append(
            [
                r.label,
                *(_fmt_value(r.settings.get(k, "-")) for k in keys),
                _fmt_db(r.best_psnr),
                "-" if best_epoch is None else str(best_epoch),
                _fmt_db(r.final_psnr),
                str(r.epochs_done),
                _fmt_duration(r.train_s),
                r.status,
                data_label(r.data),
            ]
        )
    return header, rows


def data_label(identity: dict[str, Any]) -> str:
    """``synthetic small/0, 9600+630 frames, 1a2b3c4d/5e6f7a8b`` (train/val fingerprints); ``-`` for a
    run folder that does not record its data."""
    if not identity:
        return "-"
    source = (
        "synthetic " + f"{identity.get('preset')}/{identity.get('seed')}"
        if identity.get("source") == "synthetic"
        else "folder"
    )
    return (
        f"{source}, {identity.get('train_frames')}+{identity.get('val_frames')} frames, "
        f"{identity.get('train_fingerprint')}/{identity.get('val_fingerprint')}"
    )


def data_warnings(runs: Sequence[RunRecord]) -> list[str]:
    """One warning per split whose data differs between the runs (fingerprint or frames used)."""
    out = []
    known = [r for r in runs if r.data]
    for split, keys in (
        ("trained", ("train_fingerprint", "train_frames")),
        ("validated", ("val_fingerprint", "val_frames")),
    ):
        groups: dict[tuple, list[str]] = {}
        for r in known:
            groups.setdefault(tuple(r.data.get(k) for k in keys), []).append(r.label)
        if len(groups) > 1:
            parts = "; ".join(f"{'/'.join(map(str, key))}: {', '.join(labels)}" for key, labels in groups.items())
            out.append(f"the runs {split} on different data ({keys[0].split('_')[0]} fingerprint/frames: {parts})")
    unknown = [r.label for r in runs if not r.data]
    if unknown and known:
        out.append(f"{', '.join(unknown)}: no record of its data (a run folder from before data identities)")
    return out


def markdown_table(runs: Sequence[RunRecord]) -> str:
    """A markdown table of the runs' last validation beside what trivial predictors and the same model
    with shifted poses score (``cvae compare --markdown``): the rows of an experiment table."""
    lines = [
        "| run | steps | val PSNR | vs repeat-first | vs mean frame | vs shifted poses | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        validated = [row for row in r.epoch_rows if isinstance(row.get("val/psnr"), int | float)]
        if not validated:
            lines.append(f"| {r.label} | - | - | - | - | - | {r.train_s:.0f} |")
            continue
        last = validated[-1]
        psnr = float(last["val/psnr"])
        margins = [
            f"{psnr - float(last[k]):+.2f}" if isinstance(last.get(k), int | float) else "-"
            for k in ("val/psnr_repeat_first", "val/psnr_mean_frame", "val/psnr_shifted_pose")
        ]
        lines.append(f"| {r.label} | {last['step']} | {psnr:.2f} | {' | '.join(margins)} | {r.train_s:.0f} |")
    return "\n".join(lines) + "\n"


def terminal_table(header: list[str], rows: list[list[str]], keys: Sequence[str], title: str):
    """``table_rows`` for the terminal: the settings that differ in one column (``key=value`` words that
    wrap as the width allows), the figures in their own, short headers explained under the table; the
    data in a note instead of a column when every run trained on the same."""
    from cvae.terminal import Col, table

    n = len(keys)
    columns = [
        Col("run"),
        Col("the settings that differ", short="settings"),
        Col("best val PSNR, in dB", numeric=True, short="best"),
        Col("the best validation's epoch", numeric=True, short="at"),
        Col("the final val PSNR, in dB", numeric=True, short="final"),
        Col("epochs done", numeric=True, short="ep"),
        Col("train time", numeric=True, short="time"),
        Col("status"),
        Col("data"),
    ]
    cells = [[r[0], " ".join(f"{k}={v}" for k, v in zip(keys, r[1 : 1 + n], strict=True)), *r[1 + n :]] for r in rows]
    notes = []
    if len({c[-1] for c in cells}) == 1:  # one dataset for all: said once
        notes.append(f"data (every run): {cells[0][-1]}.")
        columns.pop()
        cells = [c[:-1] for c in cells]
    if not keys:
        columns.pop(1)
        cells = [[c[0], *c[2:]] for c in cells]
    return table(title, columns, cells, notes)


# --------------------------------------------------------------------------- figures


def plot_curves(path: Path, runs: Sequence[RunRecord], panels=CURVE_PANELS) -> Path:
    """One panel per history key, every run overlaid, value per epoch."""
    from cvae.tracking.media import plot_panels

    keys = [key for key, _, _ in panels]
    return plot_panels(path, {r.label: {k: r.series(k) for k in keys} for r in runs}, panels)


def shared_references(curves: dict[str, FrameCurve]) -> dict[str, float]:
    """The trivial predictors' PSNR when every run was scored on the same video, else none."""
    out = {}
    for key in TRIVIAL_REFERENCES:
        name = REFERENCE_NAMES[key]
        values = {round(float(c.metrics[key]), 4) for c in curves.values() if key in c.metrics}
        if len(values) == 1 and all(key in c.metrics for c in curves.values()):
            out[name] = values.pop()
    return out


def plot_frame_curves(path: Path, curves: dict[str, FrameCurve], title: str) -> Path:
    from cvae.tracking.media import plot_psnr

    return plot_psnr(path, {k: c.psnr for k, c in curves.items()}, shared_references(curves), title)


# --------------------------------------------------------------------------- the command


@dataclass
class Comparison:
    runs: list[RunRecord]
    keys: list[str]
    header: list[str]
    rows: list[list[str]]
    figures: list[Path]

    def table(self):
        title = f"{len(self.runs)} runs" + ("" if self.keys else " (no setting differs)")
        return terminal_table(self.header, self.rows, self.keys, title)

    @property
    def warnings(self) -> list[str]:
        return data_warnings(self.runs)

    @property
    def notes(self) -> list[str]:
        return [f"{r.label}: {n}" for r in self.runs for n in r.notes]


def compare_runs(args: Sequence[str | Path], out: Path, console=None, per_frame: bool = True) -> Comparison:
    """Read the runs, write compare.csv and the figures into ``out``; return the table data."""
    runs = load_runs(args)
    keys = differing_settings(runs)
    header, rows = table_rows(runs, keys)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    figures = [plot_curves(out / "curves.png", runs)]
    if per_frame:
        curves = {r.label: c for r in runs if (c := best_frame_curve(r, console)) is not None}
        if curves:
            title = "per-frame PSNR of each run's best checkpoint (val video 1, z from the prior)"
            figures.append(plot_frame_curves(out / "psnr_per_frame.png", curves, title))
    return Comparison(runs, keys, header, rows, figures)
