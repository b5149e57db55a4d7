"""Checkpoints: plain state only, written atomically, loaded to the CPU with ``weights_only=True``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (no pickled objects), so
loading it cannot run code. It is always loaded to the CPU, whatever device the run trains on:
``load_state_dict`` then places weights and optimizer state on the model's device, Adam's ``step``
counters stay on the CPU where its default kernel expects them (on a GPU it would read each back,
a host sync per parameter, every step), and the RNG states stay CPU ByteTensors, the only kind
``torch.set_rng_state`` takes. ``RUN/checkpoints/last.pt`` is written every epoch (the one before is
kept as ``prev.pt``), ``best.pt`` when the mean validation PSNR improves. ``save_checkpoint`` and
``restore_training`` put a training run's whole state in and out of one; ``resume_checkpoint``
finds the one a resume continues from.
"""

from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvae import run_folder
from cvae.atomic import atomic_write
from cvae.errors import CheckpointError
from cvae.redact import redact
from cvae.run_folder import LAST, PREVIOUS

FORMAT = "cvae-checkpoint/1"


def save(path: Path, state: dict[str, Any], keep_previous: bool = False) -> None:
    """Write the checkpoint atomically (``cvae.atomic``): a kill or a full disk at any point leaves
    ``path`` either the old complete file or the new one, never a half-written one; with
    ``keep_previous`` the old file is kept as ``prev.pt``. A failed write raises an OSError naming
    ``path``."""
    path = Path(path)
    previous = path.with_name(PREVIOUS) if keep_previous else None
    with atomic_write(path, previous=previous, what="writing checkpoint") as tmp, open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())


def load(path: Path) -> dict[str, Any]:
    """Load (to the CPU) and check a checkpoint; a missing, truncated or foreign file is a CheckpointError."""
    path = Path(path)
    state = load_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cvae checkpoint (no '{FORMAT}' format tag)")
    return state


def load_file(path: Path) -> Any:
    """A torch file's contents, CRC-checked, loaded to the CPU with ``weights_only=True`` (nothing in it
    can run code); a missing, truncated or damaged file, or one that holds pickled objects, is a
    CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        _check_crc(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle refused by weights_only, not a torch file...
        reason = str(e).splitlines()[0][:160] if str(e) else e.__class__.__name__
        raise CheckpointError(f"{path}: not a readable cvae checkpoint ({reason})") from None


def _check_crc(path: Path) -> None:
    """torch.load does not check the zip members' CRC-32: a flipped byte inside a tensor loads as
    a wrong weight. zipfile does: any damage is an error here."""
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    if bad is not None:
        raise ValueError(f"checksum mismatch in {bad}: the file is damaged")


def rng_state(device: torch.device) -> dict[str, Any]:
    """RNG states of torch's CPU generator, numpy and python, and on a CUDA ``device`` its generator
    (that device's alone: a resume may see other GPUs, or fewer), as plain tensors and numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put ``rng_state``'s states back, the CUDA generator's into ``device``'s (the device the resumed run
    trains on, which need not have the index the saved run's had). A checkpoint written on a GPU and
    resumed on the CPU keeps only the CPU states; one written by earlier versions, with a state per
    visible GPU, gives ``device`` the first of them."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    cuda = state.get("cuda")
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, list | tuple) else cuda, device)


# --------------------------------------------------------------------------- a training run's state


def save_checkpoint(
    run_dir: Path, name: str, spec, model, opt, sched, counters: dict[str, Any], keep_previous: bool = False
) -> None:
    """``RUN/checkpoints/<name>``: everything a resume needs: weights, optimizer, LR scheduler, every RNG
    state, the spec (as a dict, URL passwords masked as in spec.yaml) and the run's counters (epoch,
    step, best PSNR, ...)."""
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng_state(next(model.parameters()).device),
        "spec": redact(spec.to_dict()),
        **counters,
    }
    save(run_folder.checkpoint_path(run_dir, name), state, keep_previous=keep_previous)


def resume_checkpoint(run_dir: Path, console=None) -> dict[str, Any] | None:
    """The checkpoint a resume continues from (``read_resume_checkpoint``), or None for a run stopped
    before its first epoch ended: no checkpoint yet, no epoch recorded."""
    folder = Path(run_dir) / run_folder.CHECKPOINTS
    never_saved = not (folder / LAST).exists() and not (folder / PREVIOUS).exists()
    if never_saved and not run_folder.read_summary(run_dir).get("epochs_done"):
        if console is not None:
            console.print(f"{run_dir}: stopped before its first epoch ended; training it from the start")
        return None
    return read_resume_checkpoint(run_dir, console)


def read_resume_checkpoint(run_dir: Path, console=None) -> dict[str, Any]:
    """``last.pt``, or ``prev.pt`` (with a warning) when last.pt is missing or damaged; a
    CheckpointError naming both when neither loads."""
    ckpt_dir = Path(run_dir) / run_folder.CHECKPOINTS
    try:
        return load(ckpt_dir / LAST)
    except CheckpointError as e:
        if not (ckpt_dir / PREVIOUS).exists():
            raise
        try:
            ck = load(ckpt_dir / PREVIOUS)
        except CheckpointError as e2:
            raise CheckpointError(f"{e}; the one before is no better: {e2}") from None
        if console is not None:
            console.print(f"warning: {e}; resuming from {ckpt_dir / PREVIOUS}", style="yellow", markup=False)
        return ck


def restore_training(ck: dict[str, Any], model, opt, sched) -> None:
    """Put a checkpoint (loaded to the CPU by ``load``) back: weights and optimizer state onto the model's
    device (``load_state_dict`` moves them), the scheduler, the RNG states (the CUDA one into the
    model's device)."""
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"], next(model.parameters()).device)
