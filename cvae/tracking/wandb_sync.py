"""``cvae sync``: upload the offline W&B runs under a run folder, a sweep folder or a whole runs folder
with wandb's own ``wandb sync``.

``wandb sync DIR`` finds runs only in a folder that holds ``offline-run-*`` folders (a run's
``RUN/wandb``): given a sweep folder, ``runs/`` or a run folder it finds nothing. Here every
``offline-run-*`` folder beneath the paths is found (every start of a resumed run, oldest first;
the ``latest-run`` link is not followed) and all of them are handed to ``wandb sync`` at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cvae.errors import UserError
from cvae.tracking.wandb_files import segment_key

OFFLINE_PREFIX = "offline-run-"


def find_offline_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Every offline W&B run folder (``offline-run-*`` holding a ``run-*.wandb`` log) under ``paths``,
    each once, grouped by the folder that holds them and oldest first within it. A path that does not
    exist, or holds no offline run, is bad input."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"{path}: no such folder")
        if not path.is_dir():
            raise UserError(f"{path}: not a folder (give a run folder, a sweep folder or a runs folder)")
        here = _offline_runs_in(path)
        if not here:
            raise UserError(
                f"{path}: no offline W&B run under it (a run keeps them in RUN/wandb/{OFFLINE_PREFIX}*; runs with "
                "tracking.wandb.mode online are uploaded as they run, disabled ones have none)"
            )
        found.update(dict.fromkeys(here))
    return list(found)


def _offline_runs_in(root: Path) -> list[Path]:
    if _is_offline_run(root):
        return [root]
    runs: list[Path] = []
    for folder, dirs, _ in os.walk(root):  # links are not followed: `latest-run` is one of the runs again
        dirs.sort()
        for name in [d for d in dirs if d.startswith(OFFLINE_PREFIX)]:
            dirs.remove(name)  # nothing of interest inside a run's own folder
            if _is_offline_run(Path(folder, name)):
                runs.append(Path(folder, name))
    return sorted(runs, key=lambda p: (str(p.parent), segment_key(p)))


def _is_offline_run(folder: Path) -> bool:
    return folder.name.startswith(OFFLINE_PREFIX) and not folder.is_symlink() and any(folder.glob("run-*.wandb"))


def sync_command(
    runs: Sequence[Path], dry_run: bool = False, project: str | None = None, entity: str | None = None
) -> list[str]:
    """The ``wandb sync`` command line (the installed wandb's) for ``runs``."""
    args = [sys.executable, "-m", "wandb", "sync"]
    if dry_run:
        args.append("--dry-run")
    if project:
        args += ["--project", project]
    if entity:
        args += ["--entity", entity]
    return args + [str(r) for r in runs]


def sync(runs: Sequence[Path], dry_run: bool = False, project: str | None = None, entity: str | None = None) -> int:
    """Run ``wandb sync`` on ``runs``, its output to this terminal; its exit code."""
    return subprocess.run(sync_command(runs, dry_run, project, entity)).returncode
