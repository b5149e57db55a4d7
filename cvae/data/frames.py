"""Frames in memory: a scanned split of the Lab4 layout (cvae/data/layout.py) decoded, and cached.

Every split is decoded once, resized to ``frame_size`` with antialiasing, and cached as uint8
arrays in ``ROOT/.cvae-cache/`` (rebuilt when any file's name, size or mtime changes: the scan's
``cache_key``). Training then gathers clips from those tensors (cvae/data/clips.py): no PNG is
decoded in the training loop.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from cvae.atomic import atomic_write
from cvae.data.layout import SplitFiles, scan_test
from cvae.errors import DataError

Progress = Callable[[int, int], None] | None


def decode_png(path: Path) -> np.ndarray:
    """(H, W, 3) uint8; an unreadable file is a DataError naming it."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable PNG ({e.__class__.__name__})") from None


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, h, w) uint8 -> (N, 3, H, W) uint8, bilinear with antialiasing when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def decode_many(paths: list[Path], size: tuple[int, int], progress: Progress = None) -> torch.Tensor:
    """Decode PNGs (all of one size, else an error naming the odd one) -> (N, 3, H, W) uint8."""
    out = None
    first_shape = None
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for i, arr in enumerate(pool.map(decode_png, paths)):
            if first_shape is None:
                first_shape = arr.shape
                out = torch.empty((len(paths), 3, *size), dtype=torch.uint8)
            elif arr.shape != first_shape:
                raise DataError(
                    f"{paths[i]}: size {arr.shape[1]}x{arr.shape[0]} differs from {paths[0]} "
                    f"({first_shape[1]}x{first_shape[0]}); all images of a split must share one size"
                )
            out[i] = resize(torch.from_numpy(arr).permute(2, 0, 1)[None], size)[0]
            if progress and (i % 64 == 0 or i == len(paths) - 1):
                progress(i + 1, len(paths))
    assert out is not None
    return out


@dataclass
class VideoSet:
    """All videos of a split, concatenated: frame i of video v is ``frames[starts[v] + i]``."""

    frames: torch.Tensor  # (N, 3, H, W) uint8
    poses: torch.Tensor  # (N, 3, H, W) uint8
    names: list[str]
    starts: list[int]
    lengths: list[int]

    def video(self, v: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames and poses of video v, each (T, 3, H, W) uint8."""
        s, n = self.starts[v], self.lengths[v]
        return self.frames[s : s + n], self.poses[s : s + n]

    def truncated(self, n: int | None) -> VideoSet:
        """The same videos cut to their first n frames (None: unchanged)."""
        if n is None:
            return self
        return VideoSet(self.frames, self.poses, self.names, self.starts, [min(n, m) for m in self.lengths])

    def to(self, device: torch.device | str) -> VideoSet:
        return VideoSet(self.frames.to(device), self.poses.to(device), self.names, self.starts, self.lengths)


def _cache_dir(root: Path) -> Path:
    d = root / ".cvae-cache"
    if os.access(root, os.W_OK):
        return d
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cvae" / key


def load_split(files: SplitFiles, size: tuple[int, int], progress: Progress = None) -> VideoSet:
    """Decode (or read from the cache) every frame and pose of a scanned split."""
    videos, key = files.videos, files.cache_key(size)
    cache = _cache_dir(files.root) / f"{files.split}-{size[0]}x{size[1]}.npz"
    if cache.exists():
        try:
            with np.load(cache) as z:
                if str(z["key"]) == key:
                    return VideoSet(
                        torch.from_numpy(z["frames"]),
                        torch.from_numpy(z["poses"]),
                        [v.name for v in videos],
                        z["starts"].tolist(),
                        z["lengths"].tolist(),
                    )
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: rebuild it
    paths = [p for pair in files.pairs for p in pair]  # frame, pose, frame, pose, ...
    both = decode_many(paths, size, progress)
    lengths = files.lengths
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
    out = VideoSet(both[0::2].clone(), both[1::2].clone(), [v.name for v in videos], starts, lengths)
    try:
        # Sweep workers may build the same cache at once: each through its own temporary file.
        with atomic_write(cache, suffix=f".{os.getpid()}.npz") as tmp:
            np.savez(tmp, key=key, frames=out.frames.numpy(), poses=out.poses.numpy(), starts=starts, lengths=lengths)
    except OSError:
        pass  # a read-only place: work without the cache
    return out


@dataclass
class TestVideo:
    name: str
    first_frame: torch.Tensor  # (3, H, W) uint8
    poses: torch.Tensor  # (T, 3, H, W) uint8


def load_test(root: str | Path, size: tuple[int, int]) -> list[TestVideo]:
    """Test split: per video k, the first frame in test_img/k/ and the poses in test_label/k/."""
    out = []
    for name, first, poses in scan_test(Path(root)):
        images = decode_many([first, *poses], size)
        out.append(TestVideo(name, images[0], images[1:]))
    return out


def load_truth(root: str | Path, size: tuple[int, int], progress: Progress = None) -> VideoSet:
    """The test videos with their true frames (cvae/data/layout.py), as the val split is: frame i of a
    video beside its pose i. Frame 0 must be the test split's given first frame (else a DataError)."""
    from cvae.data.layout import scan_truth

    videos = scan_truth(Path(root))
    paths = [p for *_, poses, frames in videos for pair in zip(frames, poses, strict=True) for p in pair]
    both = decode_many(paths, size, progress)
    lengths = [len(poses) for *_, poses, _ in videos]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
    out = VideoSet(both[0::2].clone(), both[1::2].clone(), [v[0] for v in videos], starts, lengths)
    firsts = decode_many([first for _, first, _, _ in videos], size)
    for (_, first, _, frames), given, s in zip(videos, firsts, starts, strict=True):
        if not torch.equal(given, out.frames[s]):
            raise DataError(f"{frames[0]}: differs from the test video's given first frame {first}")
    return out
