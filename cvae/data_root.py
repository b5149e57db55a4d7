"""The dataset folder a run uses: making sure it is there, checking it, and tools on it.

``ensure_data`` returns the folder of ``data.root``, generating the synthetic dancer there when
the spec names a preset and the folder is missing. ``load_data`` checks the layout of both
splits and that every epoch gets a batch of clips before anything is decoded, then loads the
frames (cvae/data.py). ``cvae data check`` and ``cvae data val-as-test`` live here too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from cvae.console import task
from cvae.data import VideoSet, decode_many, load_split, load_test
from cvae.errors import DataError, RunDirError
from cvae.lab4_layout import SPLITS, VideoFiles, count_clips, scan_split, steps_per_epoch
from cvae.spec import ExperimentSpec

LAB_FRAME_SIZE = (32, 64)  # (H, W) the lab resizes frames to; `data check` decodes the test split at it


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


def check_run_data(run_dir: Path, spec: ExperimentSpec, strict: bool) -> str | None:
    """The data a run folder recorded (``data_identity`` in summary.json) against ``data.root`` now,
    before a resume (``strict``: a mismatch is bad input) or an evaluation (a mismatch is a warning,
    returned). A missing root is generated again only for a run that trained on the synthetic
    dancer (or, for runs that recorded nothing, at the published specs' own roots)."""
    from cvae.run_folder import DATA_KEY, describe_data, read_summary

    recorded = read_summary(run_dir).get(DATA_KEY)
    root = Path(spec.data.root)
    if not root.exists():
        synthetic = recorded.get("source") == "synthetic" if isinstance(recorded, dict) else None
        if spec.data.preset is not None and (
            synthetic or (synthetic is None and root == Path("data") / spec.data.preset)
        ):
            return None  # generated again, the same dancer: the fingerprints below are checked by the next call
        what = f"; it trained on {describe_data(recorded)}" if isinstance(recorded, dict) else ""
        raise DataError(
            f"data.root {str(root)!r} of {run_dir / 'spec.yaml'}: folder not found{near_misses(root)}{what}"
        )
    check_root(root)
    if not isinstance(recorded, dict) or "train_fingerprint" not in recorded:
        return None
    now = {
        "train_fingerprint": fingerprint(scan_split(root, "train")),
        "val_fingerprint": fingerprint(scan_split(root, "val")),
    }
    changed = [k.split("_")[0] for k, v in now.items() if recorded.get(k) != v]
    if not changed:
        return None
    message = (
        f"{root}: its {' and '.join(changed)} data changed since {run_dir} began (fingerprints "
        + ", ".join(f"{recorded.get(k)} then, {v} now" for k, v in now.items() if recorded.get(k) != v)
        + ")"
    )
    if strict:
        raise DataError(f"{message}; resume it on the data it trained on, or train a new run")
    return message


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
        return  # a file, or the layout scan names what is missing in a split (cvae/lab4_layout.py)
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


def ensure_data(spec: ExperimentSpec, console=None) -> Path:
    """The dataset folder; a missing one is generated when the spec names a synthetic preset (callers
    that load a spec from the user's input check ``check_request`` first)."""
    root = Path(spec.data.root)
    if root.exists():
        check_root(root)
        return root
    if spec.data.preset is None:
        raise DataError(
            f"data.root {str(root)!r}: folder not found{near_misses(root)}, and data.preset is null "
            "(set data.preset to tiny|small|lab4 to generate synthetic data there)"
        )
    from cvae.synth import synthesize

    with task(console, f"synthesizing {spec.data.preset} data -> {root}") as update:
        synthesize(root, spec.data.preset, seed=spec.data.synth_seed, appearance=spec.data.appearance, progress=update)
    return root


def check_clips(spec: ExperimentSpec, lengths: list[int]) -> None:
    """Every epoch gets at least one batch of clips from training videos of these lengths."""
    n_clips = count_clips(lengths, spec.data.clip_len)
    if n_clips == 0:
        raise DataError(
            f"{spec.data.root}: no training clip fits: data.clip_len {spec.data.clip_len} exceeds the longest "
            f"video ({max(lengths)} frames)"
        )
    if min(steps_per_epoch(spec, n_clips)) == 0:
        raise DataError(
            f"{spec.data.root}: {n_clips} training clips of data.clip_len {spec.data.clip_len} frames, too few "
            f"for one batch of train.batch_size ({spec.train.batch_size}) at the data fraction used"
        )


def load_data(spec: ExperimentSpec, device: torch.device, console=None) -> tuple[VideoSet, VideoSet, dict[str, Any]]:
    """The train and val frames on ``device`` (val cut to ``data.val_len``) and the data's identity
    (``identity``)."""
    root = ensure_data(spec, console)
    # The layout of both splits and the clip count first: bad input stops before anything is decoded
    # (or cached).
    train_videos, val_videos = scan_split(root, "train"), scan_split(root, "val")
    check_clips(spec, [len(v.pairs) for v in train_videos])
    sets = []
    for split in ("train", "val"):
        with task(console, f"loading {split} frames") as update:
            sets.append(load_split(root, split, spec.data.frame_size, update).to(device))
    train_set, val_set = sets[0], sets[1].truncated(spec.data.val_len)
    return train_set, val_set, identity(root, train_videos, val_videos, sum(val_set.lengths))


def fingerprint(videos: list[VideoFiles]) -> str:
    """8 hex digits of a split's file index: every video, frame and pose name with its size. Two
    copies of a dataset agree; two datasets almost never do (the synthetic dancer's PNG sizes differ
    with the seed)."""
    h = hashlib.sha256()
    for v in videos:
        for frame, pose in v.pairs:
            h.update(f"{v.name}/{frame.name} {frame.stat().st_size} {pose.stat().st_size}\n".encode())
    return h.hexdigest()[:8]


def identity(root: Path, train: list[VideoFiles], val: list[VideoFiles], val_frames: int) -> dict[str, Any]:
    """What a run trained and validated on: the synthetic dancer (its preset, seed and look, from the
    ``synth.json`` the generator writes) or a user's folder; frames used; the splits' fingerprints."""
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
    out["train_frames"] = sum(len(v.pairs) for v in train)
    out["val_frames"] = val_frames
    out["train_fingerprint"], out["val_fingerprint"] = fingerprint(train), fingerprint(val)
    return out


# --------------------------------------------------------------------------- tools


def check_dataset(root: Path, console) -> list[str]:
    """Print counts per split; return the problems found (layout, pairing, unreadable or odd-size files)."""
    from rich.table import Table

    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    table = Table(title=f"dataset {root}")
    for col in ("split", "videos", "frames", "image size"):
        table.add_column(col)
    problems = []
    for split in SPLITS:
        try:
            videos = scan_split(root, split)
            paths = [p for v in videos for pair in v.pairs for p in pair]
            with Image.open(paths[0]) as im:
                w, h = im.size
            with task(console, f"decoding {split}", total=len(paths)) as update:
                decode_many(paths, (h, w), update)
            table.add_row(split, str(len(videos)), str(len(paths) // 2), f"{h}x{w}")
        except DataError as e:
            problems.append(str(e))
            table.add_row(split, "-", "-", "problem")
    try:
        tests = load_test(root, LAB_FRAME_SIZE)
        table.add_row("test", str(len(tests)), f"{sum(len(t.poses) for t in tests)} poses", "")
    except DataError as e:
        problems.append(str(e))
        table.add_row("test", "-", "-", "problem")
    console.print(table)
    return problems


def val_as_test(root: Path, out: Path, pose_shift: int | None = None) -> list[str]:
    """Write the val videos in the test layout, to check ``cvae predict`` against real frames.

    For val video i: ``test_img/i/`` holds its first frame and ``test_label/i/`` its poses;
    ``i_shifted`` has the same first frame and the poses rotated by ``pose_shift`` frames
    (default a quarter of the video). Files are copied byte for byte.
    """
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"{out}: folder exists and is not empty")
    names = []
    for i, video in enumerate(scan_split(root, "val")):
        n = len(video.pairs)
        shift = n // 4 if pose_shift is None else pose_shift
        for name, k in ((str(i), 0), (f"{i}_shifted", shift)):
            img_dir, label_dir = out / "test" / "test_img" / name, out / "test" / "test_label" / name
            img_dir.mkdir(parents=True)
            label_dir.mkdir(parents=True)
            shutil.copyfile(video.pairs[0][0], img_dir / "frame0.png")
            for t in range(n):
                shutil.copyfile(video.pairs[(t + k) % n][1], label_dir / f"frame{t}.png")
            names.append(name)
    return names
