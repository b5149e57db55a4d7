"""The same sweep as a W&B sweep config, for labs that use ``wandb agent``.

Agents run ``cvae train BASE --key=value ...``: ``cvae train`` reads the parameters from the agent's
arguments (and its parameter file), and the W&B run takes the agent's run id.

A W&B sweep has no enqueued points: its search engine proposes every run. So a sweep file is
exported as the search W&B runs, never as a different one:

- a sweep with no enqueued points: its search space, with its budget as ``run_cap``;
- a sweep that is only its enqueued points: a grid over them, one parameter (``enqueue``) whose
  values are the points, read back by ``cvae train`` from the agent's parameter file;
- a sweep with enqueued points and a search after them: refused, unless asked for one part
  (``only="points"`` or ``only="search"``: two W&B sweeps whose run caps add up to the budget).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml

from cvae.errors import SpecError
from cvae.sweep.file import CategoricalParam, FloatParam, IntParam, Sweep, budget, grid_values
from cvae.tracking.wandb_agent import ENQUEUE_PARAM
from cvae.tracking.wandb_run import DEFAULT_PROJECT

_METHOD = {"tpe": "bayes", "random": "random", "grid": "grid", "cmaes": "bayes"}
Part = Literal["points", "search"]
PARTS = ("points", "search")


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


def export_part(sweep: Sweep, n_trials: int | None = None, only: Part | None = None) -> tuple[Part, int]:
    """Which part of the sweep a W&B config can carry, and its number of runs: ``("search", n)`` or
    ``("points", n)``. SpecError (exit 2) where W&B would run a different sweep than the file's."""
    total = budget(sweep, n_trials)
    if total is None:
        raise SpecError(
            f"{sweep.path}: budget: a timeout alone; a W&B sweep's budget is a number of runs (run_cap): "
            "set budget.n_trials, or give --n-trials"
        )
    points = min(len(sweep.spec.enqueue), total)  # a budget below the points runs the first ones
    searched = total - points
    if only is None:
        if points and searched:
            raise SpecError(
                f"{sweep.path}: enqueue: W&B sweeps cannot try given points before a search, and this sweep "
                f"runs its {points} enqueued points, then {searched} searched trials; export it as two W&B "
                f"sweeps: --only points (a grid over the {points} points) and --only search (the search, "
                f"run_cap {searched})"
            )
        return ("points", points) if points else ("search", searched)
    if only == "points" and not points:
        raise SpecError(f"{sweep.path}: --only points: the sweep file enqueues no points")
    if only == "search" and not searched:
        raise SpecError(f"{sweep.path}: --only search: its budget ({total}) is all enqueued points, none searched")
    return only, points if only == "points" else searched


def wandb_sweep_config(
    sweep: Sweep, cwd: Path | None = None, n_trials: int | None = None, only: Part | None = None
) -> dict[str, Any]:
    """A W&B sweep config of the sweep (or of the part ``only`` names); agents run
    ``cvae train BASE --key=value``.

    The base spec path is relative to ``cwd`` (where the agents will run); fixed overrides become
    constant parameters, so every agent run gets them as arguments too. ``run_cap`` is the budget.
    """
    s = sweep.spec
    part, runs = export_part(sweep, n_trials, only)
    cwd = Path(cwd or Path.cwd()).resolve()
    base = Path(os.path.relpath(sweep.base_path.resolve(), cwd)).as_posix()
    params: dict[str, Any] = {k: {"value": v} for k, v in s.overrides.items()}
    if part == "points":
        points = [{"name": p.name, "params": dict(p.params)} for p in s.enqueue[:runs]]
        params[ENQUEUE_PARAM] = {"values": points}
    else:
        params |= {k: wandb_param(p, s.sampler.type == "grid") for k, p in s.search.items()}
    # `wandb sweep` files the sweep under the config's project (else the folder's name): the base
    # spec's W&B project, as its runs would use outside a sweep.
    w = sweep.base_spec().tracking.wandb
    name = sweep.study if only is None else f"{sweep.study}-{part}"
    config: dict[str, Any] = {"name": name, "project": w.project or DEFAULT_PROJECT}
    if w.entity:
        config["entity"] = w.entity
    config |= {
        "method": "grid" if part == "points" else _METHOD[s.sampler.type],
        "metric": {"name": s.objective.metric, "goal": s.objective.direction},
        "run_cap": runs,  # the Optuna sweep's budget: W&B stops proposing runs there
        "parameters": params,
    }
    if s.pruner.type != "none":
        eta = s.pruner.reduction_factor if s.pruner.type == "hyperband" else 3
        config["early_terminate"] = {"type": "hyperband", "min_iter": s.pruner.min_resource, "eta": eta}
    # `cvae train` puts each agent run in runs/wandb-sweeps/<sweep>/<run>, from the agent's environment.
    # A point's values are a mapping, which `${args}` would print as Python text: `cvae train` reads them
    # from the agent's parameter file instead (it reads that file for every agent run).
    config["command"] = ["${env}", "cvae", "train", base] + ([] if part == "points" else ["${args}"])
    return config


def wandb_sweep_yaml(
    sweep: Sweep, cwd: Path | None = None, n_trials: int | None = None, only: Part | None = None
) -> str:
    s = sweep.spec
    config = wandb_sweep_config(sweep, cwd, n_trials, only)
    notes = []
    if ENQUEUE_PARAM in config["parameters"]:
        notes.append(f"# A grid over the sweep file's {config['run_cap']} enqueued point(s): one run each.\n")
    else:
        if s.enqueue:
            n = len(s.enqueue)
            notes.append(
                f"# The search alone: the sweep file's {n} enqueued point(s) are another W&B sweep (--only points).\n"
            )
        if s.sampler.type == "cmaes":
            notes.append("# W&B has no CMA-ES: exported as bayes.\n")
    if s.objective.epoch == "last":
        notes.append("# W&B scores a run by its summary value of the metric (for val/psnr: the best epoch).\n")
    how = f"cvae sweep export-wandb {sweep.path.as_posix()}" + (f" --only {only}" if only else "")
    header = (
        f"# W&B sweep config exported by `{how}`; regenerate it, do not edit.\n"
        "# Use: wandb sweep THIS_FILE, then wandb agent ENTITY/PROJECT/SWEEP_ID, from the folder it was exported\n"
        "# in (the repository root: the base spec path is relative to it). W&B stops at run_cap "
        f"({config['run_cap']}).\n"
    )
    return header + "".join(notes) + yaml.safe_dump(config, sort_keys=False)
