"""The W&B sweep export: sweeps/wandb/ holds what `cvae sweep export-wandb` writes for every sweep
file; every export passes W&B's own schema and search engine (the `sweeps` package) with its budget;
enqueued points export as a grid, or in two parts before a search; and wandb's own agent (offline,
no server) launches runs of an exported config. Trials are tiny (seconds each).
"""

from __future__ import annotations

import glob
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SEARCH, SWEEPS, assert_bad_input, assert_ok, cvae, subprocess_env, write_sweep

from cvae.sweep.file import load_sweep
from cvae.sweep.wandb_export import wandb_sweep_yaml


def wandb_sweeps_engine():
    """W&B's sweep-config schema and engine (the `sweeps` package), without its pydantic-1 style warnings."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def shipped_wandb_exports() -> dict[Path, tuple[Path, str | None]]:
    """sweeps/wandb/<file> -> (its sweep file, its --only part): a sweep that W&B can run whole is
    <name>.yaml; one with enqueued points and a search after them, <name>-points and <name>-search."""
    out = {}
    for path in sorted(SWEEPS.glob("*.yaml")):
        sweep = load_sweep(path.relative_to(REPO))
        if sweep.spec.enqueue and len(sweep.spec.enqueue) < sweep.spec.budget.n_trials:
            for part in ("points", "search"):
                out[SWEEPS / "wandb" / f"{path.stem}-{part}.yaml"] = (path, part)
        else:
            out[SWEEPS / "wandb" / path.name] = (path, None)
    return out


def test_exported_wandb_configs_are_in_sync():
    """sweeps/wandb/ holds what `cvae sweep export-wandb` writes for every sweep file (from the
    repository root, where the agents run), and nothing else."""
    shipped = shipped_wandb_exports()
    assert {p.stem for p, _ in shipped.values()} >= {"kl_annealing", "teacher_forcing", "kl_tfr", "quick"}
    assert set(shipped) == set((SWEEPS / "wandb").glob("*.yaml"))
    for exported, (path, part) in shipped.items():
        rel = path.relative_to(REPO)
        only = f" --only {part}" if part else ""
        how = f"cvae sweep export-wandb {rel}{only} -o {exported.relative_to(REPO)}"
        assert exported.exists(), f"missing {exported}: run {how}"
        assert exported.read_text() == wandb_sweep_yaml(load_sweep(rel), cwd=REPO, only=part), f"stale: run {how}"
    cfg = yaml.safe_load((SWEEPS / "wandb" / "kl_tfr.yaml").read_text())
    assert cfg["method"] == "bayes" and cfg["metric"] == {"name": "val/psnr", "goal": "maximize"}
    assert cfg["parameters"]["teacher_forcing.decay_step"]["distribution"] == "log_uniform_values"
    assert cfg["parameters"]["kl_annealing.cycles"] == {"distribution": "int_uniform", "min": 1, "max": 10}
    assert cfg["parameters"]["kl_annealing.type"] == {"values": ["cyclical", "monotonic", "none"]}
    assert cfg["early_terminate"]["type"] == "hyperband"
    assert cfg["command"][:4] == ["${env}", "cvae", "train", "experiments/lab4_template.yaml"]
    assert cfg["command"][-1] == "${args}"


def test_every_exported_sweep_passes_wandbs_schema_with_its_budget_and_runs_in_its_engine():
    """W&B's own sweep-config schema and search engine (the `sweeps` package, what wandb[sweeps]
    installs) accept every shipped config; each carries its budget as run_cap (a sweep of 40 trials
    is 40 W&B runs, not an endless search), and the engine proposes runs of the exported parameters."""
    sweeps = wandb_sweeps_engine()
    for exported, (path, part) in shipped_wandb_exports().items():
        cfg = yaml.safe_load(exported.read_text())
        assert sweeps.schema_violations_from_proposed_config(cfg) == [], exported
        spec = load_sweep(path.relative_to(REPO)).spec
        n_points = len(spec.enqueue)
        want = {"points": n_points, "search": spec.budget.n_trials - n_points, None: spec.budget.n_trials}[part]
        assert cfg["run_cap"] == want, exported
        run = sweeps.next_run(cfg, [], validate=True)
        assert run is not None and set(run.config) == set(cfg["parameters"]), exported


def test_a_sweep_of_enqueued_points_exports_as_a_grid_over_them():
    """sweeps/quickstart_recipe.yaml compares two enqueued points: its W&B sweep is a grid over those
    two (W&B's engine proposes them, then no more), not a random search that never tries them."""
    sweeps = wandb_sweeps_engine()
    cfg = yaml.safe_load((SWEEPS / "wandb" / "quickstart_recipe.yaml").read_text())
    points = [{"name": p.name, "params": p.params} for p in load_sweep(SWEEPS / "quickstart_recipe.yaml").spec.enqueue]
    assert cfg["method"] == "grid" and cfg["run_cap"] == 2
    proposed = []
    for _ in range(3):
        run = sweeps.next_run(cfg, proposed, validate=True)
        if run is None:
            break
        run.state = sweeps.RunState.finished
        proposed.append(run)
    assert [r.config["enqueue"]["value"] for r in proposed] == points


def test_a_sweep_of_points_and_a_search_is_exported_in_two_parts_or_refused(tmp_path):
    """W&B cannot try given points before a search: exporting such a sweep whole is refused with the
    reason (exit 2, nothing written); `--only points` and `--only search` export the two parts, whose
    run caps add up to the budget."""
    out = tmp_path / "quick.yaml"
    r = cvae("sweep", "export-wandb", "sweeps/quick.yaml", "-o", out, cwd=REPO)
    assert_bad_input(r, "sweeps/quick.yaml", "enqueue", "3 enqueued points", "13 searched", "--only points")
    assert not out.exists()
    caps = {}
    for part in ("points", "search"):
        r = cvae("sweep", "export-wandb", "sweeps/quick.yaml", "--only", part, cwd=REPO)
        assert_ok(r)
        caps[part] = yaml.safe_load(r.stdout)["run_cap"]
    assert caps == {"points": 3, "search": 13}
    assert_bad_input(cvae("sweep", "export-wandb", "sweeps/quick.yaml", "--only", "all", cwd=REPO), "--only", "points")
    assert_bad_input(cvae("sweep", "export-wandb", "sweeps/kl_tfr.yaml", "--only", "points", cwd=REPO), "no points")
    r = cvae("sweep", "export-wandb", "sweeps/quick.yaml", "--only", "search", "--n-trials", "5", cwd=REPO)
    assert_ok(r)
    assert yaml.safe_load(r.stdout)["run_cap"] == 2  # --n-trials is the budget, the points' 3 runs included
    timed = {"search": {"optim.lr": SEARCH["optim.lr"]}, "budget": {"timeout": 60}}
    path = write_sweep(tmp_path / "t", tmp_path, timed)
    assert_bad_input(cvae("sweep", "export-wandb", path), "budget", "run_cap", "n_trials")


def test_export_wandb_cli_writes_the_file(tmp_path):
    out = tmp_path / "kl_tfr.yaml"
    assert_ok(cvae("sweep", "export-wandb", "sweeps/kl_tfr.yaml", "-o", out, cwd=REPO))
    assert out.read_text() == (SWEEPS / "wandb" / "kl_tfr.yaml").read_text()


@pytest.mark.slow
def test_the_exported_sweep_through_wandbs_own_agent_two_runs_in_a_row(tmp_path, tiny_data, monkeypatch):
    """wandb 0.31's own ``Agent._command_run`` (offline, no server) launches two runs of the exported
    config one after the other, as ``wandb agent`` does: each gets a run folder of its own
    (runs/wandb-sweeps/<sweep>/<run>, derived by ``cvae train`` from the agent's environment), a W&B
    run with the agent's run id, and its parameters in spec.yaml. (The agent expands
    ``${envvar:...}`` before it sets WANDB_RUN_ID, and only once: a folder written into the command
    would be the same for both runs.)"""
    from wandb.wandb_agent import Agent

    sweep = {
        "overrides": {"train.epochs": 1},
        "search": {
            "optim.lr": SEARCH["optim.lr"],
            "kl_annealing.cycles": {"type": "int", "low": 1, "high": 4},
            "kl_annealing.type": {"type": "categorical", "choices": ["cyclical", "none"]},
        },
        "budget": {"n_trials": 4},
    }
    # W&B mode unset in the spec: the agent's WANDB_MODE (offline here) applies.
    path = write_sweep(tmp_path / "sw", tiny_data, sweep, **{"tracking.wandb.mode": None})
    r = cvae("sweep", "export-wandb", path, cwd=tmp_path)
    assert_ok(r)
    config = yaml.safe_load(r.stdout)
    assert config["parameters"]["train.epochs"] == {"value": 1}
    assert config["parameters"]["optim.lr"] == {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2}
    assert config["early_terminate"] == {"type": "hyperband", "min_iter": 1, "eta": 3}
    assert config["project"] == "cvae-sweeps"  # else `wandb sweep` would file it under the folder's name
    command = list(config["command"])
    if shutil.which("cvae") is None:  # not installed as a script: the same program via python -m
        i = command.index("cvae")
        command[i : i + 1] = [sys.executable, "-m", "cvae.cli"]
    for key, value in subprocess_env().items():  # the agent hands its own environment to each run
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw33p1d")  # what `wandb agent` sets before its loop
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_PARAM_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    agent = Agent(api=None, queue=None, sweep_id="sw33p1d")
    agent._sweep_command = command  # what Agent.run() takes from the sweep's config
    runs = {
        "runa1111": {"optim.lr": 0.0004, "kl_annealing.cycles": 3},
        "runb2222": {"optim.lr": 0.002, "kl_annealing.cycles": 1},
    }
    for run_id, params in runs.items():
        params = {"train.epochs": 1, "kl_annealing.type": "none", **params}
        agent._command_run({"type": "run", "run_id": run_id, "program": "cvae", "args": {
            k: {"value": v} for k, v in params.items()}})  # fmt: skip
        assert agent._run_processes[run_id].wait(timeout=300) == 0, run_id
    for run_id, params in runs.items():
        run_dir = tmp_path / "runs" / "wandb-sweeps" / "sw33p1d" / run_id
        spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
        assert spec["optim"]["lr"] == params["optim.lr"] and spec["kl_annealing"]["type"] == "none"
        assert spec["kl_annealing"]["cycles"] == params["kl_annealing.cycles"]
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
        assert glob.glob(str(run_dir / "wandb" / f"offline-run-*-{run_id}")), run_id  # the agent's run id
        assert (run_dir / "wandb_run_id.txt").read_text().strip() == run_id


@pytest.mark.slow
def test_enqueued_points_through_wandbs_own_engine_and_agent(tmp_path, tiny_data, monkeypatch):
    """A sweep that is only its enqueued points, exported, proposed by W&B's own engine (the `sweeps`
    package) and launched by wandb's own ``Agent._command_run``, offline: each run trains its point's
    values (every searched key, not one of them), and its W&B config names the point."""
    from wandb.wandb_agent import Agent
    from wandb_offline import read_offline_run

    sweeps = wandb_sweeps_engine()
    points = [
        {"name": "slow", "params": {"optim.lr": 1e-4, "kl_annealing.type": "none"}},
        {"name": "fast", "params": {"optim.lr": 3e-3, "kl_annealing.type": "cyclical"}},
    ]
    sweep = {
        "overrides": {"train.epochs": 1},
        "search": {
            "optim.lr": SEARCH["optim.lr"],
            "kl_annealing.type": {"type": "categorical", "choices": ["cyclical", "none"]},
        },
        "enqueue": points,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2},
    }
    path = write_sweep(tmp_path / "sw", tiny_data, sweep, **{"tracking.wandb.mode": None})
    r = cvae("sweep", "export-wandb", path, cwd=tmp_path)
    assert_ok(r)
    config = yaml.safe_load(r.stdout)
    assert config["method"] == "grid" and config["run_cap"] == 2 and "${args}" not in config["command"]
    proposed = []
    while (run := sweeps.next_run(config, proposed, validate=True)) is not None:
        run.state = sweeps.RunState.finished
        proposed.append(run)
    assert len(proposed) == 2

    command = list(config["command"])
    if shutil.which("cvae") is None:  # not installed as a script: the same program via python -m
        i = command.index("cvae")
        command[i : i + 1] = [sys.executable, "-m", "cvae.cli"]
    for key, value in subprocess_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SWEEP_ID", "p01nts")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_PARAM_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    agent = Agent(api=None, queue=None, sweep_id="p01nts")
    agent._sweep_command = command
    for i, run in enumerate(proposed):
        agent._command_run({"type": "run", "run_id": f"point{i}", "program": "cvae", "args": run.config})
        assert agent._run_processes[f"point{i}"].wait(timeout=300) == 0
    for i, point in enumerate(points):
        run_dir = tmp_path / "runs" / "wandb-sweeps" / "p01nts" / f"point{i}"
        spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
        assert spec["optim"]["lr"] == point["params"]["optim.lr"] and spec["train"]["epochs"] == 1
        assert spec["kl_annealing"]["type"] == point["params"]["kl_annealing.type"]
        wb = read_offline_run(run_dir)
        assert wb["config"]["enqueue"] == point and wb["config"]["optim.lr"] == point["params"]["optim.lr"]
