"""The dataset folder a run uses: asking for it, making sure it is there, loading it once.

``check_request`` stops bad input before anything is written: a ``data.root`` that is missing and
was not asked to be generated, or a folder that is not a Lab4 dataset. ``ensure_data`` returns the
folder, generating the synthetic dancer there when that was asked for. ``load_data`` scans both
splits once (cvae/data/layout.py), checks them against the data a resumed run trained on and that
every epoch gets a batch of clips, then decodes the frames (cvae/data/frames.py) and says what the
run trains on (``identity``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvae import run_folder
from cvae.data.clips import check_clips
from cvae.data.layout import SplitFiles, scan_split
from cvae.errors import DataError
from cvae.run_folder import describe_data
from cvae.spec import ExperimentSpec
from cvae.terminal import task

if TYPE_CHECKING:
    import torch

    from cvae.data.frames import VideoSet


def synthesis_requested(spec: ExperimentSpec, origins: dict[str, str] | None) -> bool:
    """Whether a missing ``data.root`` may be generated: the spec names a preset, and the root is the
    published specs' own root for it (``data/<preset>``) or was set together with the preset, in the
    same spec file or the same override set (``origins``: which layer set each key; None: one layer)."""
    preset = spec.data.preset
    if preset is None:
        return False
    if Path(spec.data.root) == Path("data") / preset:
        return True
    if origins is None:
        return True
    return origins.get("data.root") is not None and origins.get("data.root") == origins.get("data.preset")


def check_request(spec: ExperimentSpec, origins: dict[str, str] | None = None) -> None:
    """Bad input stops here, before anything is written: a missing ``data.root`` that was not asked to
    be generated, or a root that is not a Lab4 dataset. ``origins`` as ``synthesis_requested``."""
    root = Path(spec.data.root)
    if root.exists():
        check_root(root)
        return
    if synthesis_requested(spec, origins):
        return
    where = f" (set in {origins['data.root']})" if origins and origins.get("data.root") else ""
    hint = near_misses(root)
    if spec.data.preset is None:
        how = (
            f"data.preset is null, so nothing is generated; to generate the synthetic dancer there: "
            f"cvae data synth {root} --preset small (or set data.preset with data.root)"
        )
    else:
        preset_from = origins.get("data.preset") if origins else None
        how = (
            f"data.preset {spec.data.preset} (set in {preset_from or 'the spec'}) generates synthetic data only at "
            f"data/{spec.data.preset} or where data.root is set together with it; to generate the synthetic "
            f"dancer at {root}: cvae data synth {root} --preset {spec.data.preset}, or set data.preset beside "
            "data.root"
        )
    raise DataError(f"data.root {str(root)!r}{where}: folder not found{hint}; {how}")


def may_regenerate(spec: ExperimentSpec, recorded: dict[str, Any] | None) -> bool:
    """Whether a run folder's missing ``data.root`` may be generated again: the run trained on the
    synthetic dancer (the same preset and seed give the same dancer; the fingerprints say so after),
    or, for a run that recorded nothing, the root is its preset's own (``data/<preset>``)."""
    if spec.data.preset is None:
        return False
    synthetic = recorded.get("source") == "synthetic" if isinstance(recorded, dict) else None
    return bool(synthetic) or (synthetic is None and Path(spec.data.root) == Path("data") / spec.data.preset)


def changed_data(recorded: dict[str, Any] | None, train: SplitFiles, val: SplitFiles, where: str) -> str | None:
    """What changed in the splits since a run folder recorded them (``data_identity``), or None."""
    if not isinstance(recorded, dict) or "train_fingerprint" not in recorded:
        return None
    now = {"train_fingerprint": train.fingerprint, "val_fingerprint": val.fingerprint}
    changed = {k: v for k, v in now.items() if recorded.get(k) != v}
    if not changed:
        return None
    return (
        f"{train.root}: its {' and '.join(k.split('_')[0] for k in changed)} data changed since {where} began "
        f"(fingerprints " + ", ".join(f"{recorded.get(k)} then, {v} now" for k, v in changed.items()) + ")"
    )


def near_misses(path: Path) -> str:
    """`` (did you mean A or B?)``: existing folders named like the first missing part of ``path``."""
    import difflib

    missing, parent = path, path.parent
    while not parent.exists() and parent != parent.parent:
        missing, parent = parent, parent.parent
    if not parent.is_dir():
        return ""
    siblings = [d.name for d in parent.iterdir() if d.is_dir() and not d.name.startswith(".")]
    close = difflib.get_close_matches(missing.name, siblings, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(str(parent / c) for c in close)}?)" if close else ""


def check_root(root: Path) -> None:
    """A folder that exists but is not a Lab4 dataset: say what was expected, what was found, and the
    likely fix (the dataset one level down, or one up)."""
    if (root / "train" / "train_img").is_dir() or not root.is_dir():
        return  # a file, or the layout scan names what is missing in a split (cvae/data/layout.py)
    expected = (
        "expected the Lab4 layout ROOT/train/train_img/*.png with poses in ROOT/train/train_label/, "
        "likewise val/ and test/"
    )
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    found = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "") or "nothing"
    below = sorted(root.glob("*/")) + sorted(root.glob("*/*/"))  # the dataset one or two levels down
    above = [root.parent, root.parent.parent]  # or root is one of its splits (or a split's image folder)
    candidates = [d for d in below + above if (d / "train" / "train_img").is_dir()]
    fix = f"; did you mean {candidates[0]}?" if candidates else ""
    raise DataError(f"data.root {str(root)!r}: not a Lab4 dataset: {expected}; found {found}{fix}")


def ensure_data(spec: ExperimentSpec, console=None, run: RunData | None = None) -> Path:
    """The dataset folder; a missing one is generated when the spec names a synthetic preset (callers
    that load a spec from the user's input check ``check_request`` first) or, for the data of a run
    folder (``run``), where ``may_regenerate`` allows it."""
    root = Path(spec.data.root)
    if root.exists():
        check_root(root)
        return root
    if run is not None and not may_regenerate(spec, run.recorded):
        what = f"; it trained on {describe_data(run.recorded)}" if isinstance(run.recorded, dict) else ""
        raise DataError(f"data.root {str(root)!r} of {run.spec_file}: folder not found{near_misses(root)}{what}")
    if spec.data.preset is None:
        raise DataError(
            f"data.root {str(root)!r}: folder not found{near_misses(root)}, and data.preset is null "
            "(set data.preset to tiny|small|lab4 to generate synthetic data there)"
        )
    from cvae.data.synth import synthesize

    with task(console, f"synthesizing {spec.data.preset} data -> {root}") as update:
        synthesize(root, spec.data.preset, seed=spec.data.synth_seed, appearance=spec.data.appearance, progress=update)
    return root


class RunData:
    """The data a run folder recorded (``data_identity`` in its summary.json), for a resume (``strict``:
    changed data is bad input) or an evaluation (changed data is a warning)."""

    def __init__(self, run_dir: Path, strict: bool) -> None:
        self.run_dir, self.strict = Path(run_dir), strict
        self.spec_file = self.run_dir / run_folder.SPEC_FILE
        self.recorded = run_folder.read_summary(self.run_dir).get(run_folder.DATA_KEY)

    def check(self, train: SplitFiles, val: SplitFiles) -> str | None:
        """None when the splits are the recorded ones; else a DataError (``strict``) or the warning."""
        message = changed_data(self.recorded, train, val, str(self.run_dir))
        if message and self.strict:
            raise DataError(f"{message}; resume it on the data it trained on, or train a new run")
        return message


def scan_dataset(spec: ExperimentSpec, console=None, run: RunData | None = None) -> tuple[SplitFiles, SplitFiles]:
    """Both splits of the spec's dataset (generated first where allowed), each scanned once; against
    the data ``run`` recorded (a DataError or a printed warning)."""
    root = ensure_data(spec, console, run)
    train, val = scan_split(root, "train"), scan_split(root, "val")
    if run is not None and (warning := run.check(train, val)) and console is not None:
        console.print(f"warning: {warning}", style="yellow", markup=False)
    return train, val


def load_data(
    spec: ExperimentSpec, device: torch.device, console=None, run: RunData | None = None
) -> tuple[VideoSet, VideoSet, dict[str, Any]]:
    """The train and val frames on ``device`` (val cut to ``data.val_len``) and the data's identity
    (``identity``). ``run``: the data a resumed run trained on, checked first."""
    from cvae.data.frames import load_split

    train, val = scan_dataset(spec, console, run)
    check_clips(spec, train.lengths)  # bad input stops before anything is decoded (or cached)
    sets = []
    for files in (train, val):
        with task(console, f"loading {files.split} frames") as update:
            sets.append(load_split(files, spec.data.frame_size, update).to(device))
    train_set, val_set = sets[0], sets[1].truncated(spec.data.val_len)
    return train_set, val_set, identity(train, val, sum(val_set.lengths))


def identity(train: SplitFiles, val: SplitFiles, val_frames: int) -> dict[str, Any]:
    """What a run trained and validated on: the synthetic dancer (its preset, seed and look, from the
    ``synth.json`` the generator writes) or a user's folder; frames used; the splits' fingerprints."""
    root = train.root
    out: dict[str, Any] = {"source": "folder", "root": str(root.resolve())}
    meta_file = root / "synth.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except ValueError:
            meta = {}
        if meta.get("generator") == "cvae.synth":
            out |= {"source": "synthetic", "preset": meta.get("preset"), "seed": meta.get("seed")}
            out["appearance"] = meta.get("appearance")
    out["train_frames"] = sum(train.lengths)
    out["val_frames"] = val_frames
    out["train_fingerprint"], out["val_fingerprint"] = train.fingerprint, val.fingerprint
    return out
