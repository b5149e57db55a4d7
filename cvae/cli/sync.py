"""``cvae sync``: upload offline W&B runs (the logic is cvae/tracking/wandb_sync.py; the upload is wandb's own)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cvae.cli.common import handle_errors
from cvae.terminal import err_console, make_console


@handle_errors
def sync(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...", help="Run folders, sweep folders or runs folders: every offline W&B run beneath them."
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be uploaded; upload nothing.")] = False,
    project: Annotated[
        str | None, typer.Option(metavar="PROJECT", help="Upload into this W&B project (default: each run's).")
    ] = None,
    entity: Annotated[
        str | None, typer.Option(metavar="ENTITY", help="Upload under this W&B entity (default: each run's).")
    ] = None,
) -> None:
    """Upload offline W&B runs with `wandb sync` (after `wandb login`): a run, a sweep or a runs folder."""
    from cvae.tracking.wandb_sync import find_offline_runs
    from cvae.tracking.wandb_sync import sync as wandb_sync

    runs = find_offline_runs(paths)
    folders = len({r.parent.parent for r in runs})  # RUN/wandb/offline-run-*: one per start of a run
    what = "listing" if dry_run else "uploading"
    make_console(False).print(
        f"{what} {len(runs)} offline W&B log(s) of {folders} run(s) with wandb sync", markup=False
    )
    code = wandb_sync(runs, dry_run, project, entity)
    if code:
        err_console.print(f"failed: wandb sync exited with {code} (its message says why)", markup=False)
        raise typer.Exit(1)
