"""A W&B sweep agent's run: its parameters and its run folder, from the environment ``wandb agent``
gives the run's process (WANDB_SWEEP_ID, WANDB_RUN_ID, WANDB_SWEEP_PARAM_PATH)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

AGENT_RUNS = Path("runs") / "wandb-sweeps"
# A W&B grid over a sweep file's enqueued points (cvae/sweep/wandb_export.py) has one parameter, this,
# whose values are the points: ``{name: ..., params: {dotted key: value}}``.
ENQUEUE_PARAM = "enqueue"


def agent_run_dir() -> Path | None:
    """Under ``wandb agent``: ``runs/wandb-sweeps/<sweep id>/<run id>``, from the environment the agent
    gives the run's process (WANDB_SWEEP_ID, WANDB_RUN_ID); else None. Derived here, not in the sweep's
    command: wandb 0.31's agent expands ``${envvar:...}`` in the command before it sets WANDB_RUN_ID,
    once per agent, so every run would get the first run's folder."""
    sweep_id, run_id = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    if not sweep_id or not run_id:
        return None
    return AGENT_RUNS / sweep_id / run_id


def sweep_agent_overrides() -> dict[str, Any]:
    """Under ``wandb agent`` (WANDB_SWEEP_ID set), the run's parameters from the agent's file
    (``{key: {value: v}}`` YAML at WANDB_SWEEP_PARAM_PATH) as dotted spec overrides; else {}. An
    ``enqueue`` parameter (a grid over a sweep file's enqueued points) gives its point's values."""
    import yaml

    from cvae.errors import SpecError

    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not os.environ.get("WANDB_SWEEP_ID") or not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SpecError(f"{path} (WANDB_SWEEP_PARAM_PATH): unreadable sweep parameters: {e}") from None
    out = {}
    for key, entry in data.items():
        if key.startswith("_") or key == "wandb_version":
            continue
        value = entry["value"] if isinstance(entry, dict) and "value" in entry else entry
        if key == ENQUEUE_PARAM:
            if not (isinstance(value, dict) and isinstance(value.get("params"), dict)):
                raise SpecError(f"{path} (WANDB_SWEEP_PARAM_PATH): `{key}` must be {{name: ..., params: {{...}}}}")
            out.update(value["params"])
        else:
            out[key] = value
    return out
