"""Starting a run: the one way every run begins, for ``cvae train``, a sweep trial, a confirm or
report run (``cvae train`` processes) and a W&B sweep agent's run (``cvae train`` too).

``launch`` checks what the spec asks of the data before anything is written, prepares the run
folder (refusing to overwrite a run unless asked), builds the trackers the spec asks for (W&B, and
the console's when there is one), and trains. Where a run comes from (its name, group, job type,
tags and the config of the sweep that made it) travels in the spec's ``tracking.wandb`` section,
so a run reaches W&B the same way whoever starts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cvae import run_folder
from cvae.spec import ExperimentSpec


def launch(
    spec: ExperimentSpec,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    origins: dict[str, str] | None = None,
    console=None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train ``spec`` into ``run_dir`` (``resume``: continue the run there); returns its summary.

    ``origins``: which file or override layer set each spec key (``cvae.spec.load_spec_origins``),
    so a missing ``data.root`` is generated only where the user asked for it. ``console``: the
    terminal to report to (None: nothing printed). ``callbacks``: called after every epoch
    (a sweep's pruner)."""
    from cvae.data.root import check_request
    from cvae.tracking.console import ConsoleTracker
    from cvae.tracking.wandb_run import from_spec
    from cvae.training.loop import train

    wandb_tracker = from_spec(spec, console)  # a bad tracking.wandb.mode is bad input, here
    if not resume:  # a mistyped data.root stops here: nothing written, nothing generated
        check_request(spec, origins)  # (a resumed run's data is checked against what it trained on)
        if spec.train.init_from is not None and not Path(spec.train.init_from).is_file():
            from cvae.errors import CheckpointError

            raise CheckpointError(f"train.init_from {spec.train.init_from!r}: no such checkpoint file")
    run_folder.prepare(run_dir, resume, overwrite)
    trackers = ([ConsoleTracker(console)] if console is not None else []) + [wandb_tracker]
    return train(spec, run_dir, trackers, callbacks, resume=resume, console=console)
