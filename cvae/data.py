"""Frames in memory: decoding a split of the Lab4 layout (cvae/lab4_layout.py), the decoded-frame cache,
and clips gathered from memory.

Every split is decoded once, resized to ``frame_size`` with antialiasing, and cached as uint8
arrays in ``ROOT/.cvae-cache/`` (rebuilt when any file's name, size or mtime changes).
Training then gathers clips from those tensors: no PNG is decoded in the training loop.
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

from cvae.errors import DataError
from cvae.lab4_layout import VideoFiles, number_key, pngs, scan_split

Progress = Callable[[int, int], None] | None
_CACHE_VERSION = 1


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


def _fingerprint(videos: list[VideoFiles], size: tuple[int, int]) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION} {size}".encode())
    for v in videos:
        for img, label in v.pairs:
            for p in (img, label):
                st = p.stat()
                h.update(f"{v.name}/{p.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _cache_dir(root: Path) -> Path:
    d = root / ".cvae-cache"
    if os.access(root, os.W_OK):
        return d
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cvae" / key


def load_split(root: str | Path, split: str, size: tuple[int, int], progress: Progress = None) -> VideoSet:
    """Decode (or read from the cache) every frame and pose of a split."""
    root = Path(root)
    videos = scan_split(root, split)
    key = _fingerprint(videos, size)
    cache = _cache_dir(root) / f"{split}-{size[0]}x{size[1]}.npz"
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
    paths = [p for v in videos for pair in v.pairs for p in pair]  # frame, pose, frame, pose, ...
    both = decode_many(paths, size, progress)
    lengths = [len(v.pairs) for v in videos]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
    out = VideoSet(both[0::2].clone(), both[1::2].clone(), [v.name for v in videos], starts, lengths)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, key=key, frames=out.frames.numpy(), poses=out.poses.numpy(), starts=starts, lengths=lengths)
        os.replace(tmp, cache)
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
        images = decode_many([firsts[0], *poses], size)
        out.append(TestVideo(name, images[0], images[1:]))
    return out


# --------------------------------------------------------------------------- clips


def clip_starts(videos: VideoSet, clip_len: int) -> torch.Tensor:
    """Global start index of every clip: consecutive, non-overlapping, inside one video (the lab)."""
    spans = zip(videos.starts, videos.lengths, strict=True)
    starts = [s + k * clip_len for s, n in spans for k in range(n // clip_len)]
    if not starts:
        longest = max(videos.lengths)
        raise DataError(f"no training clip fits: clip_len {clip_len} exceeds the longest video ({longest} frames)")
    return torch.tensor(starts, dtype=torch.long)


EPOCH_SEED_STRIDE = 1_000_003  # a prime: the shuffle of (seed, epoch) is seeded by seed * stride + epoch


def epoch_batches(
    n_clips: int, batch_size: int, partial: float, seed: int, epoch: int, shuffle: bool = True
) -> torch.Tensor:
    """(n_batches, batch_size) clip indices for one epoch: the first ``partial`` of the clips, in a
    shuffle seeded by (seed, epoch) or (``shuffle`` false, the template's loader) in order; the
    last incomplete batch dropped (as the lab's DataLoader does)."""
    if shuffle:
        order = torch.randperm(n_clips, generator=torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch))
    else:
        order = torch.arange(n_clips)
    order = order[: max(1, int(n_clips * partial))]
    n_batches = len(order) // batch_size
    return order[: n_batches * batch_size].view(n_batches, batch_size)


def gather(images: torch.Tensor, starts: torch.Tensor, clip_len: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 and (B,) starts -> (B, T, 3, H, W) float in [0, 1]."""
    idx = starts[:, None] + torch.arange(clip_len, device=starts.device)  # (B, T)
    # index_select on the flat index: faster than images[idx] on the CPU (timed by cvae bench).
    return images.index_select(0, idx.flatten()).float().div_(255).unflatten(0, idx.shape)
