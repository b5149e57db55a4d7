"""The same search space as a W&B sweep config, for labs that use ``wandb agent``.

Agents run ``cvae train BASE --key=value ...``: ``cvae train`` reads the parameters from the
agent's arguments (and its parameter file), and the W&B run takes the agent's run id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cvae.sweep.file import CategoricalParam, FloatParam, IntParam, Sweep, grid_values
from cvae.tracking.wandb_run import DEFAULT_PROJECT

_METHOD = {"tpe": "bayes", "random": "random", "grid": "grid", "cmaes": "bayes"}


def wandb_param(p: FloatParam | IntParam | CategoricalParam, grid: bool) -> dict[str, Any]:
    if grid or isinstance(p, CategoricalParam):
        return {"values": grid_values(p)}
    if isinstance(p, IntParam):
        if p.log:
            return {"distribution": "q_log_uniform_values", "min": p.low, "max": p.high, "q": 1}
        if p.step != 1:
            return {"distribution": "q_uniform", "min": p.low, "max": p.high, "q": p.step}
        return {"distribution": "int_uniform", "min": p.low, "max": p.high}
    if p.log:
        return {"distribution": "log_uniform_values", "min": p.low, "max": p.high}
    if p.step is not None:
        return {"distribution": "q_uniform", "min": p.low, "max": p.high, "q": p.step}
    return {"distribution": "uniform", "min": p.low, "max": p.high}


def wandb_sweep_config(sweep: Sweep, cwd: Path | None = None) -> dict[str, Any]:
    """A W&B sweep config with the same search space; agents run `cvae train BASE --key=value`.

    The base spec path is relative to ``cwd`` (where the agents will run); fixed overrides become
    constant parameters, so every agent run gets them as arguments too.
    """
    s = sweep.spec
    cwd = Path(cwd or Path.cwd()).resolve()
    base = Path(os.path.relpath(sweep.base_path.resolve(), cwd)).as_posix()
    params: dict[str, Any] = {k: {"value": v} for k, v in s.overrides.items()}
    params |= {k: wandb_param(p, s.sampler.type == "grid") for k, p in s.search.items()}
    # `wandb sweep` files the sweep under the config's project (else the folder's name): the base
    # spec's W&B project, as its runs would use outside a sweep.
    w = sweep.base_spec().tracking.wandb
    config: dict[str, Any] = {"name": sweep.study, "project": w.project or DEFAULT_PROJECT}
    if w.entity:
        config["entity"] = w.entity
    config |= {
        "method": _METHOD[s.sampler.type],
        "metric": {"name": s.objective.metric, "goal": s.objective.direction},
        "parameters": params,
    }
    if s.pruner.type != "none":
        eta = s.pruner.reduction_factor if s.pruner.type == "hyperband" else 3
        config["early_terminate"] = {"type": "hyperband", "min_iter": s.pruner.min_resource, "eta": eta}
    # `cvae train` puts each agent run in runs/wandb-sweeps/<sweep>/<run>, from the agent's environment.
    config["command"] = ["${env}", "cvae", "train", base, "${args}"]
    return config


def wandb_sweep_yaml(sweep: Sweep, cwd: Path | None = None) -> str:
    s = sweep.spec
    notes = []
    if s.sampler.type == "cmaes":
        notes.append("# W&B has no CMA-ES: exported as bayes.\n")
    if s.enqueue:
        notes.append("# W&B sweeps take no enqueued points: the sweep file's `enqueue` is left out.\n")
    if s.objective.epoch == "last":
        notes.append("# W&B scores a run by its summary value of the metric (for val/psnr: the best epoch).\n")
    header = (
        f"# W&B sweep config exported from {sweep.path.as_posix()} by `cvae sweep export-wandb`; regenerate it,\n"
        "# do not edit. Use: wandb sweep THIS_FILE, then wandb agent ENTITY/PROJECT/SWEEP_ID, from the folder it\n"
        "# was exported in (the repository root: the base spec path is relative to it).\n"
    )
    return header + "".join(notes) + yaml.safe_dump(wandb_sweep_config(sweep, cwd), sort_keys=False)
