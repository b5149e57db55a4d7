"""Atomic file writes: the one place a file is written through a temporary file and renamed.

A kill or a full disk at any point leaves the file either as it was or complete, never half
written, and leaves no temporary file behind once the error is raised. Every file the runs
keep (checkpoints, history, summaries, media, confirm results, submissions, frame caches) is
written here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: Path, suffix: str = "", previous: Path | None = None, what: str = "") -> Iterator[Path]:
    """Yield the temporary path to write (``PATH.tmp`` + ``suffix``, beside ``path``: the same file
    system, so the final rename is atomic); when the block ends, it replaces ``path``.

    ``suffix``: what libraries that pick a format by extension need (``.png``, ``.npz``).
    ``previous``: the file ``path`` held is kept under this name (a hard link: ``path`` never goes
    missing in between). A failure removes the temporary file and raises an OSError naming ``path``
    (``what`` added to its message), also where the library wrapped the OSError (torch wraps a full
    disk in a RuntimeError) or named its temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + suffix)
    try:
        yield tmp
        if previous is not None and path.exists():
            _keep_as(path, previous)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = os_error(e)
        if cause is None or not isinstance(e, Exception):
            raise
        if cause.errno is None:  # a library's own error (PIL, matplotlib): no errno to keep
            raise OSError(f"{cause} ({what or 'writing'} {path})") from None
        message = str(cause.strerror or cause) + (f" ({what})" if what else "")
        raise OSError(cause.errno, message, str(path)) from None


def write_text(path: Path, text: str) -> Path:
    """``path``'s text, written atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path


def write_bytes(path: Path, data: bytes, suffix: str = "") -> Path:
    """``path``'s bytes, written atomically."""
    with atomic_write(path, suffix) as tmp:
        tmp.write_bytes(data)
    return path


def _keep_as(path: Path, previous: Path) -> None:
    """``path`` -> ``previous``, ``path`` staying in place until the new file replaces it."""
    link = previous.with_name(previous.name + ".tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)  # link and path: one file, two names
    except OSError:  # no hard links here: rename (path is missing until the final rename)
        os.replace(path, previous)
        return
    os.replace(link, previous)
    link.unlink(missing_ok=True)  # rename does nothing when previous already is this file (a kill before)


def os_error(e: BaseException | None) -> OSError | None:
    """The OSError in an exception's chain (torch's zip writer raises RuntimeError from it)."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None
