"""Starting a run: the one way every run begins, for ``cvae train``, a sweep trial, a confirm or
report run (``cvae train`` processes) and a W&B sweep agent's run (``cvae train`` too).

``launch`` checks what the spec asks of the data before anything is written, prepares the run
folder (refusing to overwrite a run unless asked), builds the trackers the spec asks for (W&B, and
the console's when there is one), and trains. Where a run comes from (its name, group, job type,
tags and the config of the sweep that made it) travels in the spec's ``tracking.wandb`` section,
so a run reaches W&B the same way whoever starts it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cvae import run_folder
from cvae.spec import ExperimentSpec, flatten, validate_spec
from cvae.tracking.wandb_run import OVERRIDES_KEY


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


def note_overrides(spec: ExperimentSpec, keys: Iterable[str]) -> ExperimentSpec:
    """``spec`` with the values set on top of its file (``--set``, ``--key=value``, a W&B sweep agent's
    parameters) listed as ``key=value`` in ``tracking.wandb.config.overrides``: the W&B run's config
    says them and its tags repeat them (cvae/tracking/wandb_run.py), so runs of one spec are told apart.
    ``tracking.*`` keys say where a run is tracked, not what it trains: they are left out. The list
    replaces one the spec already had (a run's saved spec.yaml trained again with other overrides)."""
    values = flatten(spec.to_dict())
    chosen = [k for k in dict.fromkeys(keys) if not k.startswith("tracking.") and k in values]
    if not chosen and OVERRIDES_KEY not in spec.tracking.wandb.config:
        return spec
    data = spec.to_dict()
    config = dict(data["tracking"]["wandb"]["config"])
    config[OVERRIDES_KEY] = [f"{k}={_text(values[k])}" for k in chosen]
    if not chosen:
        del config[OVERRIDES_KEY]
    data["tracking"]["wandb"]["config"] = config
    return validate_spec(data)


def _text(value) -> str:
    """A value as it is written on a command line: text as it is, numbers and lists as JSON."""
    return value if isinstance(value, str) else json.dumps(value)
