"""The Lab4 dataset layout, read from file names only (no image is decoded here), and the clips an
epoch takes.

Layout (the lab's contract)::

    ROOT/train/train_img/*.png     frames; the pose image of the same name is in train_label/
    ROOT/val/val_img, val/val_label
    ROOT/test/test_img/<k>/        one first frame per test video k
    ROOT/test/test_label/<k>/      that video's poses

A flat image folder is one long sequence (lab semantics); subfolders are separate videos and
clips never cross them. Files sort by the number in their name (frame2 < frame10). A clip is
``data.clip_len`` consecutive frames of one video; clips do not overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cvae.errors import DataError

SPLITS = {"train": ("train_img", "train_label"), "val": ("val_img", "val_label")}


def number_key(path: Path) -> tuple:
    """Sort key: the numbers in the name, as numbers (frame2 before frame10)."""
    parts = re.split(r"(\d+)", path.name)
    return tuple(int(p) if p.isdigit() else p for p in parts)


def pngs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png"), key=number_key)


@dataclass
class VideoFiles:
    """One video: its name ("" for a flat folder) and its (frame, pose) file pairs in order."""

    name: str
    pairs: list[tuple[Path, Path]]


def _pair(img_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    """Pair every frame with the pose image of the same name; a missing or extra file is an error."""
    if not label_dir.is_dir():
        raise DataError(f"{label_dir}: pose folder missing (every frame folder needs one beside it)")
    imgs, labels = pngs(img_dir), pngs(label_dir)
    img_names, label_names = {p.name for p in imgs}, {p.name for p in labels}
    missing = sorted(img_names - label_names, key=lambda n: number_key(Path(n)))
    extra = sorted(label_names - img_names, key=lambda n: number_key(Path(n)))
    if missing:
        raise DataError(f"{img_dir / missing[0]}: no pose image {label_dir / missing[0]} ({len(missing)} unpaired)")
    if extra:
        raise DataError(f"{label_dir / extra[0]}: pose image without a frame in {img_dir} ({len(extra)} unpaired)")
    return [(p, label_dir / p.name) for p in imgs]


def scan_split(root: Path, split: str) -> list[VideoFiles]:
    """The videos of ``train`` or ``val`` under ROOT, frames paired with poses."""
    img_sub, label_sub = SPLITS[split]
    img_dir, label_dir = Path(root) / split / img_sub, Path(root) / split / label_sub
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: folder missing (expected the Lab4 layout ROOT/{split}/{img_sub}/)")
    subdirs = sorted((d for d in img_dir.iterdir() if d.is_dir()), key=number_key)
    if subdirs and pngs(img_dir):
        raise DataError(f"{img_dir}: holds both PNG files and video subfolders; use one or the other")
    if subdirs:
        videos = [VideoFiles(d.name, _pair(d, label_dir / d.name)) for d in subdirs]
    else:
        videos = [VideoFiles("", _pair(img_dir, label_dir))]
    videos = [v for v in videos if v.pairs]
    if not videos:
        raise DataError(f"{img_dir}: no PNG frames found")
    return videos


def count_clips(lengths: list[int], clip_len: int) -> int:
    """Training clips in videos of these lengths."""
    return sum(n // clip_len for n in lengths)


def epoch_fraction(spec, epoch: int) -> float:
    """The fraction of the training clips epoch ``epoch`` (from 0) uses: ``train.fast_partial``
    during fast training, else ``data.partial``."""
    t = spec.train
    return t.fast_partial if t.fast_train and epoch < t.fast_epochs else spec.data.partial


def steps_per_epoch(spec, n_clips: int) -> list[int]:
    """Optimizer steps of every epoch, given ``n_clips`` training clips."""
    return [max(1, int(n_clips * epoch_fraction(spec, e))) // spec.train.batch_size for e in range(spec.train.epochs)]


def steps_per_epoch_of(spec) -> tuple[list[int], str]:
    """Optimizer steps of each epoch of ``spec``, from the training clips its dataset holds, without
    decoding a frame: the file index of ``data.root`` when it exists, else the sizes of the synthetic
    preset it would generate. Returns the steps and where the clip count came from."""
    from cvae.synth import PRESETS

    root, clip = Path(spec.data.root), spec.data.clip_len
    if (root / "train").is_dir():
        n_clips = count_clips([len(v.pairs) for v in scan_split(root, "train")], clip)
        where = f"{n_clips} training clips in {root}"
    elif spec.data.preset is not None:
        p = PRESETS[spec.data.preset]
        n_clips = p.train_videos * (p.train_frames // clip)
        where = f"{n_clips} training clips of the synthetic {spec.data.preset} preset ({root} not generated yet)"
    else:
        raise DataError(f"data.root {str(root)!r}: folder not found, so its training clips cannot be counted")
    return steps_per_epoch(spec, n_clips), where
