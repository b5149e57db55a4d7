"""A run's best checkpoint on the held-out test videos, where its dataset has their true frames.

The best checkpoint is the one validation chose; the test videos had no part in choosing it (nor in a
sweep's objective, its pruner or confirm's race), so its score on them says whether what validation
saw holds on videos nobody chose on, as the Kaggle leaderboard says it for the lab. Scored when a run
ends (``tracking.test_at_end``) and by ``cvae evaluate RUN --split test`` (cvae/runs/evaluate.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from cvae import run_folder
from cvae.data.frames import load_truth
from cvae.data.truth import scan_truth, truth_folder
from cvae.model import CVAE, build_model
from cvae.spec import ExperimentSpec
from cvae.training.checkpoint import load as checkpoint_load
from cvae.training.validation import VAL_SEED_OFFSET, heldout_references, score_heldout


def best_weights(run_dir: Path, spec: ExperimentSpec, device: torch.device) -> CVAE:
    """The model of ``RUN/checkpoints/best.pt`` on ``device``, as it trained (memory format included)."""
    model = build_model(spec, device)
    model.load_state_dict(checkpoint_load(run_folder.checkpoint_path(run_dir, run_folder.BEST))["model"])
    return model


def check_truth(spec: ExperimentSpec) -> None:
    """With ``tracking.test_at_end``, a test truth that does not match the test split is bad input before
    training starts (file names and counts only), not a failure after it."""
    if spec.tracking.test_at_end and truth_folder(Path(spec.data.root)) is not None:
        scan_truth(Path(spec.data.root))


def score_best(run_dir: Path, spec: ExperimentSpec, device: torch.device, best_epoch: int) -> dict[str, Any]:
    """``test/*`` scores of a finished run's best checkpoint (epoch ``best_epoch``) and the trivial
    references on the same videos, ``perf/test_s`` the seconds it took; {} where the data has no truth.
    A run resumed after it finished, its best checkpoint the one already scored, keeps its scores."""
    root = Path(spec.data.root)
    if truth_folder(root) is None:
        return {}
    before = run_folder.read_summary(run_dir)
    if before.get("test/epoch") == best_epoch and "test/psnr" in before:
        return {k: v for k, v in before.items() if k.startswith("test/") or k == "perf/test_s"}
    t0 = time.perf_counter()
    test_set = load_truth(root, spec.data.frame_size).to(device)
    model = best_weights(run_dir, spec, device)
    held = score_heldout(model, test_set, spec.seed + VAL_SEED_OFFSET, spec.train.precision)
    out = held.metrics | heldout_references(test_set) | {"test/epoch": best_epoch}
    return out | {"perf/test_s": time.perf_counter() - t0}


def heldout_line(summary: dict[str, Any]) -> str | None:
    """One line of a run's held-out score beside its references, or None when it has none."""
    if "test/psnr" not in summary:
        return None
    refs = ", ".join(
        f"{name} {summary[key]:.2f}"
        for key, name in (
            ("test/psnr_repeat_first", "repeat-first"),
            ("test/psnr_mean_frame", "mean-frame"),
            ("test/psnr_shifted_pose", "shifted-pose"),
        )
        if key in summary
    )
    return (
        f"held-out test videos ({summary.get('test/videos')} videos, {summary.get('test/frames')} predicted frames, "
        f"never chosen on): PSNR {summary['test/psnr']:.2f} dB ({refs}) at epoch {summary.get('test/epoch')}"
    )
