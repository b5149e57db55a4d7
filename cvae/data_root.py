"""The dataset folder a run uses: making sure it is there, checking it, and tools on it.

``ensure_data`` returns the folder of ``data.root``, generating the synthetic dancer there when
the spec names a preset and the folder is missing. ``load_data`` checks the layout of both
splits and that every epoch gets a batch of clips before anything is decoded, then loads the
frames (cvae/data.py). ``cvae data check`` and ``cvae data val-as-test`` live here too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from PIL import Image

from cvae.console import task
from cvae.data import VideoSet, decode_many, load_split, load_test
from cvae.errors import DataError, RunDirError
from cvae.layout import SPLITS, count_clips, scan_split, steps_per_epoch
from cvae.spec import ExperimentSpec

LAB_FRAME_SIZE = (32, 64)  # (H, W) the lab resizes frames to; `data check` decodes the test split at it


def ensure_data(spec: ExperimentSpec, console=None) -> Path:
    """The dataset folder; a missing one is generated when the spec names a synthetic preset."""
    root = Path(spec.data.root)
    if root.exists():
        return root
    if spec.data.preset is None:
        raise DataError(
            f"data.root {str(root)!r}: folder not found, and data.preset is null "
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


def load_data(spec: ExperimentSpec, device: torch.device, console=None) -> tuple[VideoSet, VideoSet]:
    root = ensure_data(spec, console)
    # The layout of both splits and the clip count first: bad input stops before anything is decoded
    # (or cached).
    check_clips(spec, [len(v.pairs) for v in scan_split(root, "train")])
    scan_split(root, "val")
    sets = []
    for split in ("train", "val"):
        with task(console, f"loading {split} frames") as update:
            sets.append(load_split(root, split, spec.data.frame_size, update).to(device))
    return sets[0], sets[1].truncated(spec.data.val_len)


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
