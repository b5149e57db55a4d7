"""``history.jsonl``: a run's logged points, one JSON object a line. This module owns the format.

Every row has ``step`` (optimizer steps done when it was logged) and ``epoch`` (the epoch it
belongs to, counted from 1). Step rows carry ``train/*``; the row that closes an epoch carries
``epoch/*`` means, ``perf/*`` and, on the epochs that validate, ``val/*``.

JSON has no NaN or infinity, so non-finite floats are written as the strings ``"nan"``,
``"inf"`` and ``"-inf"`` and read back as floats. A kill can cut the last line short: readers
skip a line that does not parse, and a resume rewrites the file without it (``truncate``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cvae import atomic

FILE = "history.jsonl"
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

# The validation references (cvae/training/validation.py) and the name every table, plot legend and
# console line gives them.
REFERENCE_NAMES = {
    "val/psnr_repeat_first": "repeat-first",
    "val/psnr_mean_frame": "mean-frame",
    "val/psnr_shifted_pose": "shifted-pose",
}
TRIVIAL_REFERENCES = ("val/psnr_repeat_first", "val/psnr_mean_frame")  # independent of the model

# Where a metric was measured, by its prefix: what tables and figures say beside a number.
SOURCES = {
    "val": "the validation videos",
    "epoch": "the training clips",
    "train": "the training clips",
    "test": "the held-out test videos",
}


def source_of(metric: str) -> str:
    """``on the validation videos`` for ``val/psnr``, and so on; "" for a metric of no known prefix."""
    where = SOURCES.get(metric.split("/", 1)[0])
    return f"on {where}" if where else ""


# What the logged keys measure, with their unit, as plots title them. KL's unit depends on
# loss.kl_reduction: summed over the latent elements (per sample) or their mean.
TITLES = {
    "val/psnr": "val PSNR (dB)",
    "val/mse": "val MSE (rollout, per pixel)",
    "epoch/loss": "train loss (MSE + β·KL)",
    "epoch/mse": "train MSE (per pixel)",
    "epoch/kl": "train KL (nats)",
    "epoch/beta": "β, the KL weight",
    "epoch/tfr": "teacher-forcing ratio",
    "epoch/teacher_forced": "teacher-forced share",
}
KL_TITLES = {"sum": "train KL (nats, sum over z)", "mean": "train KL (nats per z element)"}


def title(key: str, kl_reduction: str | None = None) -> str:
    """A readable title for a logged key, with its unit (``val/psnr`` -> ``val PSNR (dB)``); the key
    itself for one without a title."""
    if key == "epoch/kl" and kl_reduction in KL_TITLES:
        return KL_TITLES[kl_reduction]
    return TITLES.get(key, key)


def unit(key: str) -> str:
    """The unit of a logged key's values: ``dB`` for a PSNR, "" for the rest (losses and ratios)."""
    return "dB" if "psnr" in key.lower() else ""


def with_unit(key: str, value: Any, digits: int = 2) -> str:
    """``27.31 dB`` for a PSNR, ``0.0123`` (4 significant digits) for a value without a unit."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if unit(key):
        return f"{value:.{digits}f} {unit(key)}"
    return f"{value:.4g}"


def references_of(metrics: dict[str, Any], keys=TRIVIAL_REFERENCES) -> dict[str, float]:
    """{name: value} of the references present in ``metrics`` (for legends and tables)."""
    return {REFERENCE_NAMES[k]: float(metrics[k]) for k in keys if k in metrics}


def encode(value: Any) -> Any:
    """A value as history.jsonl stores it (non-finite floats as strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def decode(value: Any) -> Any:
    """The inverse of ``encode``."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


def append(path: Path, row: dict[str, Any]) -> None:
    """Add one row; a full disk is an OSError naming the file."""
    line = json.dumps({k: encode(v) for k, v in row.items()}) + "\n"
    try:
        with open(path, "a") as f:
            f.write(line)
    except OSError as e:  # a full disk names no file: say which one
        raise OSError(e.errno, e.strerror, str(path)) from None


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete row, values decoded; [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(row, dict):
            rows.append({k: decode(v) for k, v in row.items()})
    return rows


def is_epoch_row(row: dict[str, Any]) -> bool:
    return "epoch/loss" in row and "epoch" in row


def epoch_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that close an epoch, in order."""
    return [r for r in rows if is_epoch_row(r)]


def last_epoch_row(path: Path) -> dict[str, Any]:
    """The last epoch row of a run's history ({} if none)."""
    rows = epoch_rows(read(path))
    return rows[-1] if rows else {}


def truncate(path: Path, step: int, epochs_done: int) -> None:
    """Keep only the rows a checkpoint at ``step`` after ``epochs_done`` epochs had seen, so a
    resumed run logs every step and epoch exactly once. Rewritten atomically."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in read(path) if r.get("step", 0) <= step and r.get("epoch", 0) <= epochs_done]
    atomic.write_text(path, "".join(json.dumps({k: encode(v) for k, v in r.items()}) + "\n" for r in keep))
