"""The Lab4 dataset layout, read from file names and sizes only (no image is decoded here).

Layout (the lab's contract)::

    ROOT/train/train_img/*.png     frames; the pose image of the same name is in train_label/
    ROOT/val/val_img, val/val_label
    ROOT/test/test_img/<k>/        one first frame per test video k
    ROOT/test/test_label/<k>/      that video's poses

A flat image folder is one long sequence (lab semantics); subfolders are separate videos and
clips never cross them. Files sort by the number in their name (frame2 < frame10).

``scan_split`` reads a split's folders and every file's size and modification time in one pass;
the split's fingerprints are computed once from that scan: ``fingerprint`` (names and sizes: two
copies of a dataset agree) and ``cache_key`` (also the modification times and the frame size: the
decoded-frame cache is rebuilt when any file changes).

Held-out truth: the lab's test split is a first frame and the poses per video; the frames to predict
are Kaggle's, never in the dataset folder, so a lab user scores a test prediction only by uploading
it. The synthetic dancer writes them too (cvae/data/synth.py), as Kaggle keeps them: outside the
Lab4 layout's folders (``ROOT/test_truth/<k>/frameI.png``, the folder named by ``test_truth`` in
``ROOT/synth.json``), so nothing that reads the lab's layout sees them. ``scan_truth`` finds them
beside the test split's poses, to score every test video as the leaderboard does.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cvae.errors import DataError

SPLITS = {"train": ("train_img", "train_label"), "val": ("val_img", "val_label")}
CACHE_VERSION = 1  # of the decoded-frame cache's format (cvae/data/frames.py)


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


@dataclass
class SplitFiles:
    """One scan of a split: its videos, and for every frame and pose file its (size, mtime in ns)."""

    root: Path
    split: str
    videos: list[VideoFiles]
    stats: list[tuple[tuple[int, int], tuple[int, int]]]  # per pair, in the videos' order: (frame, pose)

    @property
    def lengths(self) -> list[int]:
        return [len(v.pairs) for v in self.videos]

    @property
    def pairs(self) -> list[tuple[Path, Path]]:
        """Every (frame, pose) pair, video after video."""
        return [pair for v in self.videos for pair in v.pairs]

    @cached_property
    def _digests(self) -> tuple[str, str]:
        """(fingerprint, content digest) in one pass over the scanned names and stats."""
        ident, content = hashlib.sha256(), hashlib.sha256()
        stats = iter(self.stats)
        for v in self.videos:
            for (frame, pose), ((f_size, f_mtime), (p_size, p_mtime)) in zip(v.pairs, stats, strict=False):
                ident.update(f"{v.name}/{frame.name} {f_size} {p_size}\n".encode())
                content.update(f"{v.name}/{frame.name} {f_size} {f_mtime}\n".encode())
                content.update(f"{v.name}/{pose.name} {p_size} {p_mtime}\n".encode())
        return ident.hexdigest()[:8], content.hexdigest()

    @property
    def fingerprint(self) -> str:
        """8 hex digits of the split's file index: every video, frame and pose name with its size. Two
        copies of a dataset agree; two datasets almost never do (the synthetic dancer's PNG sizes
        differ with the seed)."""
        return self._digests[0]

    def cache_key(self, size: tuple[int, int]) -> str:
        """The decoded-frame cache's key at frame ``size``: names, sizes and modification times."""
        return hashlib.sha256(f"v{CACHE_VERSION} {tuple(size)} {self._digests[1]}".encode()).hexdigest()[:20]


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


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def scan_split(root: Path, split: str) -> SplitFiles:
    """The videos of ``train`` or ``val`` under ROOT, frames paired with poses, every file stat'ed once."""
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
    stats = [(_stat(frame), _stat(pose)) for v in videos for frame, pose in v.pairs]
    return SplitFiles(Path(root), split, videos, stats)


def scan_test(root: Path) -> list[tuple[str, Path, list[Path]]]:
    """The test split: per video k (in numeric order), its name, first frame and pose files."""
    img_dir, label_dir = Path(root) / "test" / "test_img", Path(root) / "test" / "test_label"
    for d in (img_dir, label_dir):
        if not d.is_dir():
            raise DataError(f"{d}: folder missing (expected the Lab4 layout ROOT/test/test_img|test_label/<k>/)")
    names = sorted((d.name for d in img_dir.iterdir() if d.is_dir()), key=lambda n: number_key(Path(n)))
    if not names:
        raise DataError(f"{img_dir}: no test video folders")
    out = []
    for name in names:
        firsts, poses = pngs(img_dir / name), (pngs(label_dir / name) if (label_dir / name).is_dir() else [])
        if not firsts:
            raise DataError(f"{img_dir / name}: no first frame (PNG) found")
        if len(poses) < 2:
            raise DataError(f"{label_dir / name}: needs the video's pose images (found {len(poses)})")
        out.append((name, firsts[0], poses))
    return out


# --------------------------------------------------------------------------- held-out truth


MANIFEST = "synth.json"


def truth_folder(root: Path) -> Path | None:
    """The folder of the test videos' real frames that ``ROOT/synth.json`` names, or None where the
    dataset has none (the lab's own data, or a synthetic folder made before they were written)."""
    meta_file = Path(root) / MANIFEST
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError:
        return None
    name = meta.get("test_truth") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        return None
    folder = Path(root) / name
    if not folder.is_dir():
        raise DataError(f"{folder}: missing, though {meta_file} names it as the test videos' true frames")
    return folder


def no_truth(root: Path) -> str:
    """Why ``root`` has no test truth, in one clause a message can end with."""
    meta = Path(root) / MANIFEST
    if meta.is_file():
        return (
            f"{meta} names no folder of the test videos' true frames (made before they were written: "
            f"`cvae data synth {root} --overwrite` with its preset and seed writes them)"
        )
    return (
        f"{root} holds the test videos' first frames and poses only, as the lab's data does; their true frames "
        "are Kaggle's (the synthetic dancer writes its own: cvae data synth)"
    )


def scan_truth(root: Path) -> list[tuple[str, Path, list[Path], list[Path]]]:
    """Per test video (the test split's order): its name, its given first frame, its pose files and its
    true frames, one per pose; a missing video or a frame count that differs from the poses' is a
    DataError."""
    folder = truth_folder(root)
    if folder is None:
        raise DataError(f"no test truth here: {no_truth(root)}")
    out = []
    for name, first, poses in scan_test(Path(root)):
        frames = pngs(folder / name) if (folder / name).is_dir() else []
        if len(frames) != len(poses):
            raise DataError(
                f"{folder / name}: {len(frames)} true frames for the {len(poses)} poses of test video {name!r}"
            )
        for frame, pose in zip(frames, poses, strict=True):
            if number_key(frame) != number_key(pose):
                raise DataError(f"{frame}: no pose of the same name in {pose.parent} (found {pose.name})")
        out.append((name, first, poses, frames))
    return out
