"""Which cvae-sweeps code ran: the installed package's version, and the commit of its own checkout.

The commit is asked of git in the package's own folder, not the current directory: a run started
from another repository records cvae-sweeps' commit, not that repository's. A package that git does
not track there (a wheel in site-packages, even inside some other repository's virtualenv) has no
commit. ``dirty`` says whether the checkout's tracked files differ from that commit.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

DISTRIBUTION = "cvae-sweeps"
PACKAGE_DIR = Path(__file__).resolve().parent


def package_version() -> str | None:
    """The installed distribution's version (``importlib.metadata``); None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(folder: Path = PACKAGE_DIR) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the git checkout that tracks ``folder``'s ``__init__.py``;
    ``{}`` when no checkout does (or git is missing)."""
    if _git(folder, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return {}  # not a checkout, or one that does not track the package (a venv inside a repository)
    commit = (_git(folder, "rev-parse", "HEAD") or "").strip()
    if not commit:
        return {}
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    out: dict[str, Any] = {"commit": commit}
    if status is not None:
        out["dirty"] = bool(status.strip())
    return out


@cache
def code_version() -> dict[str, Any]:
    """``{"version": ..., "commit": ..., "dirty": ...}``: what is known of the code this process runs
    (keys left out when unknown). Asked once per process."""
    out: dict[str, Any] = {}
    version = package_version()
    if version:
        out["version"] = version
    return out | git_state()


def describe(info: dict[str, Any] | None = None) -> str:
    """One line: ``cvae-sweeps 0.1.0, commit 62d62ac1f2e3 (uncommitted changes)``."""
    info = code_version() if info is None else info
    text = f"{DISTRIBUTION} {info.get('version', '(not installed)')}"
    if info.get("commit"):
        text += f", commit {info['commit'][:12]}" + (" (uncommitted changes)" if info.get("dirty") else "")
    return text
