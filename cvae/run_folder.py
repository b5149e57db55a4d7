"""A run folder: its layout, preparing one, and reading one back.

    RUN/spec.yaml          the resolved spec the run trained with
    RUN/history.jsonl      every logged point (cvae/history.py owns the format)
    RUN/summary.json       best and final validation, epochs and steps done, status
    RUN/checkpoints/       last.pt (every epoch; the one before kept as prev.pt), best.pt
    RUN/media/, RUN/plots/ validation GIFs, per-frame PSNR and training curves
    RUN/eval/              what `cvae evaluate` wrote
    RUN/wandb/             the W&B run's files (offline by default)

A run ends in one of four states, the same words in summary.json, W&B and ``cvae compare``:
``finished`` (every epoch trained), ``pruned`` (a sweep's pruner stopped it early: a normal end
for a trial), ``stopped`` (SIGTERM or Ctrl-C: resumable with ``cvae train --resume``) and
``failed`` (an error; ``failure_reason`` says which). A run with no status yet is ``running``
(or was killed outright; it resumes the same way).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cvae import atomic, history
from cvae.errors import RunDirError
from cvae.spec import flatten

SPEC_FILE = "spec.yaml"
SUMMARY_FILE = "summary.json"
DATA_KEY = "data_identity"  # what a run trained on (cvae/data/root.py): in the trackers' config and summary.json
CHECKPOINTS = "checkpoints"
LAST, PREVIOUS, BEST = "last.pt", "prev.pt", "best.pt"  # in RUN/checkpoints/ (cvae/training/checkpoint.py)

FINISHED, PRUNED, STOPPED, FAILED, RUNNING = "finished", "pruned", "stopped", "failed", "running"


def is_run(path: Path) -> bool:
    return (Path(path) / SPEC_FILE).is_file()


def run_name(wandb_name: str | None, run_dir: Path) -> str:
    """What a run is called everywhere (its W&B run, its plots' titles, ``cvae compare``): the spec's
    ``tracking.wandb.name`` when set (a sweep's trials: ``quick-t7``), else its run folder's name,
    which no other run in the same runs folder has (with its parent for a number: ``trials/3``)."""
    if wandb_name:
        return wandb_name
    parts = Path(run_dir).resolve().parts
    return "/".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def checkpoint_path(run_dir: Path, name: str = LAST) -> Path:
    """``RUN/checkpoints/<name>``: ``last.pt``, ``prev.pt`` or ``best.pt``."""
    return Path(run_dir) / CHECKPOINTS / name


def prepare(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite a run unless asked; resume needs a run with a spec."""
    run_dir = Path(run_dir)
    has_run = (run_dir / SPEC_FILE).exists() or (run_dir / CHECKPOINTS).exists()
    if resume:
        if not (run_dir / SPEC_FILE).exists():
            raise RunDirError(f"{run_dir}: no run to resume here ({SPEC_FILE} missing)")
        return
    if has_run and not overwrite:
        raise RunDirError(
            f"{run_dir}: already holds a run; pass --resume to continue it, --overwrite to replace it, "
            "or --run-dir for a new folder"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a folder")
    if has_run and overwrite:
        shutil.rmtree(run_dir)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``RUN/summary.json`` ({} where missing or cut short by a kill)."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    return {k: history.decode(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """``RUN/summary.json``, written atomically (values already ``history.encode``d)."""
    atomic.write_text(Path(run_dir) / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")


@dataclass
class RunRecord:
    """One run folder as read from disk: its spec (flattened), history and summary."""

    path: Path
    label: str
    settings: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def epoch_rows(self) -> list[dict[str, Any]]:
        return history.epoch_rows(self.history)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of ``key`` on epoch rows."""
        pts = [(r["epoch"], float(r[key])) for r in self.epoch_rows if isinstance(r.get(key), int | float)]
        return [p[0] for p in pts], [p[1] for p in pts]

    @property
    def best_psnr(self) -> float | None:
        if "best/val_psnr" in self.summary:
            return float(self.summary["best/val_psnr"])
        _, ys = self.series("val/psnr")
        finite = [y for y in ys if math.isfinite(y)]
        return max(finite) if finite else None

    @property
    def best_epoch(self) -> int | None:
        if "best/epoch" in self.summary:
            return int(self.summary["best/epoch"])
        xs, ys = self.series("val/psnr")
        best = self.best_psnr
        return next((x for x, y in zip(xs, ys, strict=True) if y == best), None)

    @property
    def final_psnr(self) -> float | None:
        _, ys = self.series("val/psnr")
        return ys[-1] if ys else None

    @property
    def epochs_done(self) -> int:
        return int(self.summary.get("epochs_done", len(self.epoch_rows)))

    @property
    def train_s(self) -> float:
        """Training plus validation time summed over the epochs (excludes data loading)."""
        return sum(float(r.get("perf/epoch_s", 0)) + float(r.get("perf/val_s", 0)) for r in self.epoch_rows)

    @property
    def status(self) -> str:
        return str(self.summary.get("status", RUNNING))

    @property
    def data(self) -> dict[str, Any]:
        """What the run trained on (``data_identity`` in summary.json), {} for older runs."""
        identity = self.summary.get(DATA_KEY)
        return identity if isinstance(identity, dict) else {}


def read_run(path: Path, label: str | None = None) -> RunRecord:
    """A run folder's spec, history and summary; an unreadable spec.yaml is a RunDirError."""
    path = Path(path)
    try:
        spec = yaml.safe_load((path / SPEC_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RunDirError(f"{path / SPEC_FILE}: unreadable: {e}") from None
    if not isinstance(spec, dict):
        raise RunDirError(f"{path / SPEC_FILE}: not a spec (a mapping of keys)")
    return RunRecord(path, label or path.name, flatten(spec), history.read(path / history.FILE), read_summary(path))


def describe_data(identity: dict[str, Any]) -> str:
    """One line: ``synthetic dancer (preset small, seed 0, same look) at ROOT: 9600 train / 630 val
    frames, fingerprints 1a2b3c4d / 5e6f7a8b``."""
    if identity.get("source") == "synthetic":
        what = (
            f"synthetic dancer (preset {identity.get('preset')}, seed {identity.get('seed')}, "
            f"{identity.get('appearance')} look)"
        )
    else:
        what = "your dataset folder"
    return (
        f"{what} at {identity.get('root')}: {identity.get('train_frames')} train / {identity.get('val_frames')} "
        f"val frames, fingerprints {identity.get('train_fingerprint')} / {identity.get('val_fingerprint')}"
    )
