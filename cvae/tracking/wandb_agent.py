"""A W&B sweep agent's run: its parameters and its run folder, from the environment ``wandb agent``
gives the run's process (WANDB_SWEEP_ID, WANDB_RUN_ID, WANDB_SWEEP_PARAM_PATH)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

AGENT_RUNS = Path("runs") / "wandb-sweeps"


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
    (``{key: {value: v}}`` YAML at WANDB_SWEEP_PARAM_PATH) as dotted spec overrides; else {}."""
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
        out[key] = entry["value"] if isinstance(entry, dict) and "value" in entry else entry
    return out
