"""A W&B run's files on disk: its ``.wandb`` logs inside the run folder, oldest first, and reading
them back without a server (``wandb leet inspect``, the installed wandb's own reader).

The tracker uses them to find the last step an earlier start of a run logged; the tests read
offline runs back through them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path


def segment_key(folder: Path) -> tuple[str, int]:
    """Order of a run's folders: ``[offline-]run-<YYYYmmdd_HHMMSS>-<id>[-<n>]``.

    Two starts within one second get ``-1``, ``-2``... suffixes (seen with wandb 0.31).
    """
    match = re.search(r"run-(\d{8}_\d{6})-", folder.name)
    stamp = match.group(1) if match else ""
    wandb_files = list(folder.glob("run-*.wandb"))
    run_id = wandb_files[0].stem[len("run-") :] if wandb_files else ""
    tail = folder.name.rsplit(f"-{run_id}", 1)[-1] if run_id else ""
    n = int(tail[1:]) if tail.startswith("-") and tail[1:].isdigit() else 0
    return stamp, n


def wandb_files(run_dir: Path, run_id: str | None = None) -> list[Path]:
    """The run's ``.wandb`` logs, oldest first (offline and online folders; not ``latest-run``)."""
    found = []
    for pattern in ("offline-run-*/run-*.wandb", "run-*/run-*.wandb"):
        for path in Path(run_dir, "wandb").glob(pattern):
            if path.parent.is_symlink() or not path.is_file():
                continue
            if run_id is not None and path.stem != f"run-{run_id}":
                continue
            found.append(path)
    return sorted(found, key=lambda p: segment_key(p.parent))


def inspect_log(path: Path, summary: bool, timeout: float = 120) -> str:
    """``wandb leet inspect --json [--summary] PATH`` (the CLI of the installed wandb)."""
    args = [sys.executable, "-m", "wandb", "leet", "inspect", "--json"]
    if summary:
        args.append("--summary")
    out = subprocess.run(args + [str(path)], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"wandb leet inspect failed on {path}: {out.stderr.strip()[-500:]}")
    return out.stdout


def last_logged_step(run_dir: Path, run_id: str) -> int | None:
    """The last history step written by earlier starts of this run (newest readable log)."""
    for path in reversed(wandb_files(run_dir, run_id)):
        try:
            step = json.loads(inspect_log(path, summary=True)).get("step")
        except (OSError, ValueError, RuntimeError, subprocess.SubprocessError):
            continue
        if isinstance(step, int) and step > 0:
            return step
    return None
