"""Sweeps: the sweep file, `cvae sweep run` with several worker processes on a journal file and on
a real PostgreSQL, faults (raising / diverging trials, a worker killed with -9, Ctrl-C), status
and best against the `optuna` CLI, optuna-dashboard, and the W&B sweep export run through a
simulated agent launch. Trials are tiny (seconds each); the workers are real processes.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, assert_bad_input, assert_ok, cvae, subprocess_env, trials_of, write_sweep

from cvae.errors import SpecError
from cvae.sweep.file import load_sweep
from cvae.sweep.study import load_study
from cvae.sweep.trial import run_epoch_rows as epoch_rows
from cvae.sweep.wandb_export import wandb_sweep_yaml

SWEEPS = REPO / "sweeps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SEARCH = {
    "optim.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "kl_annealing.ratio": {"type": "float", "low": 0.1, "high": 1.0},
}
# Pruning likely: compare with the median from the first finished trial on, from epoch 1.
PRUNE = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}


def tpe_sweep(n_trials: int, study: str = "sweep", n_startup_trials: int = 2) -> dict[str, Any]:
    """A TPE + median-pruning search of SEARCH with a budget of ``n_trials``."""
    return {
        "search": SEARCH,
        "sampler": {"type": "tpe", "n_startup_trials": n_startup_trials},
        "pruner": PRUNE,
        "budget": {"n_trials": n_trials},
        "study": study,
    }


def assert_clean_sweep(trials, n: int, n_epochs: int = 2, study: str = "sweep") -> None:
    """n trials, every one finished (complete or pruned), numbers and parameter sets unique; a
    complete one trained ``n_epochs`` epochs; each logged to W&B in the study's group."""
    assert len(trials) == n, [(t.number, t.state.name) for t in trials]
    assert sorted(t.number for t in trials) == list(range(n))
    states = [t.state.name for t in trials]
    assert set(states) <= {"COMPLETE", "PRUNED"}, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert states.count("COMPLETE") >= 1
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == n, params
    for t in trials:  # each trained its own folder, with its own values
        run_dir = Path(t.user_attrs["run_dir"])
        spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
        assert spec["optim"]["lr"] == pytest.approx(t.params["optim.lr"])
        assert spec["kl_annealing"]["ratio"] == pytest.approx(t.params["kl_annealing.ratio"])
        assert (
            spec["tracking"]["wandb"]["group"] == study and spec["tracking"]["wandb"]["name"] == f"{study}-t{t.number}"
        )
        assert run_dir.name == str(t.number)
        epochs = [r["epoch"] for r in epoch_rows(run_dir)]
        assert epochs == list(range(1, len(epochs) + 1)) and epochs
        if t.state.name == "COMPLETE":
            assert len(epochs) == n_epochs
            assert t.value == pytest.approx(max(r["val/psnr"] for r in epoch_rows(run_dir)))
        assert t.user_attrs["epochs_done"] == len(epochs)


# --------------------------------------------------------------------------- the sweep file


def test_shipped_sweeps_load():
    for path in SWEEPS.glob("*.yaml"):
        sweep = load_sweep(path)
        assert sweep.study == path.stem
        assert sweep.spec.search
    quick = load_sweep(SWEEPS / "quick.yaml")
    assert quick.epochs() <= 4  # CPU-sized


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ({"sampler": {"typ": "tpe"}}, ("unknown key `sampler.typ`", "did you mean `sampler.type`")),
        ({"serach": {}}, ("unknown key `serach`", "did you mean `search`")),
        (
            {"search": {"kl_annealing.ratoi": {"type": "float", "low": 0.1, "high": 1}}},
            ("`kl_annealing.ratoi` is not a key of the spec", "kl_annealing.ratio"),
        ),
        (
            {"search": {"kl_annealing.ratio": {"type": "float", "low": 0.1, "high": 1.5}}},
            ("search.kl_annealing.ratio", "1.5", "invalid spec"),
        ),
        (
            {"search": {"kl_annealing.ratio": {"type": "float", "lo": 0.1, "high": 1}}},
            ("unknown key `lo`", "did you mean `low`"),
        ),
        ({"search": {"optim.lr": {"type": "float", "low": 0.01, "high": 0.001}}}, ("must be below high",)),
        ({"search": {"kl_annealing.cycles": {"type": "float", "low": 1, "high": 4}}}, ("use type: int",)),
        (
            {"search": {"kl_annealing.type": {"type": "categorical", "choices": ["cyclic", "none"]}}},
            ("search.kl_annealing.type", "'cyclic'"),
        ),
        ({"budget": {}}, ("budget needs n_trials",)),
        ({"objective": {"metric": "val/pnsr"}}, ("val/pnsr", "did you mean `val/psnr`")),
        ({"overrides": {"train.epoch": 3}}, ("overrides", "train.epoch", "train.epochs")),
    ],
)
def test_bad_sweep_file_exits_2(tmp_path, change, needles):
    sweep = {"search": {"optim.lr": SEARCH["optim.lr"]}, "budget": {"n_trials": 2}} | change
    path = write_sweep(tmp_path, tmp_path / "data", sweep)
    r = cvae("sweep", "run", path, "--dir", tmp_path / "out")
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(path) in errors[0]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not (tmp_path / "out").exists()  # nothing created


def test_sweep_file_not_found_exits_2(tmp_path):
    r = cvae("sweep", "export-wandb", tmp_path / "nope.yaml")
    assert r.returncode == 2 and "nope.yaml" in r.stderr


def test_grid_needs_steps(tmp_path):
    path = write_sweep(tmp_path, tmp_path, {"search": {"optim.lr": SEARCH["optim.lr"]}, "sampler": {"type": "grid"}})
    with pytest.raises(SpecError, match="grid sampler needs a step"):
        load_sweep(path)


# --------------------------------------------------------------------------- W&B export


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


# --------------------------------------------------------------------------- 2 workers on a journal file


@pytest.fixture(scope="module")
def journal_sweep(tmp_path_factory, tiny_data):
    """A 6-trial TPE + median-pruning sweep run by 2 worker processes on the default journal."""
    folder = tmp_path_factory.mktemp("journal")
    # Two good points first, then one that cannot learn in 3 steps (lr 1e-5): it starts once a good one
    # is complete, so its first epoch falls below the median and it is pruned, on any CPU.
    enqueue = [
        {"name": "good", "params": {"optim.lr": 1e-2, "kl_annealing.ratio": 1.0}},
        {"name": "good too", "params": {"optim.lr": 1e-2, "kl_annealing.ratio": 0.5}},
        {"name": "too slow", "params": {"optim.lr": 1e-5, "kl_annealing.ratio": 1.0}},
    ]
    path = write_sweep(folder, tiny_data, tpe_sweep(6) | {"enqueue": enqueue})
    t0 = time.monotonic()
    r = cvae("sweep", "run", path, "--workers", "2", "--dir", folder / "out")
    assert_ok(r)
    print(f"2-worker journal sweep of 6 trials: {time.monotonic() - t0:.1f} s")
    return path, folder / "out", r


@pytest.mark.slow
def test_two_workers_on_journal(journal_sweep):
    path, out, r = journal_sweep
    url = str(out / "optuna.journal")
    trials = trials_of(url, "sweep")
    assert_clean_sweep(trials, 6)
    states = {t.number: t.state.name for t in trials}
    assert states[2] == "PRUNED" and states[0] == states[1] == "COMPLETE", [
        (t.number, t.state.name, t.intermediate_values) for t in trials
    ]
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both processes ran trials
    for t in trials:  # one line per trial, its label beside its number, its score in dB
        assert re.search(rf"^trial {t.number}( \[[^]]+\])?: ", r.stdout, re.M), r.stdout
        if t.state.name == "COMPLETE":
            assert re.search(rf"^trial {t.number}( \[[^]]+\])?: .* -> val/psnr {t.value:.2f} dB", r.stdout, re.M)
        # and, as the two worker processes train it, a line per epoch (read from its run folder)
        for row in epoch_rows(Path(t.user_attrs["run_dir"])):
            done = rf"^trial {t.number}( \[[^]]+\])? epoch {row['epoch']}/2 done \(step {row['step']}/\d+\): "
            assert re.search(done + rf"val/psnr {row['val/psnr']:.2f} dB$", r.stdout, re.M), r.stdout
    for t in trials:  # pruning saw every epoch
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs_done"] + 1))
    # the pruned trial's page in optuna-dashboard says it was pruned, and after which epoch
    import optuna_dashboard

    study = load_study(url, "sweep")
    note = optuna_dashboard.get_note(_TrialRef(study, next(t for t in trials if t.number == 2)))
    assert "**Pruned** after epoch 1 (trial 2)" in note, note
    assert "Pruned" not in optuna_dashboard.get_note(_TrialRef(study, next(t for t in trials if t.number == 0)))


@pytest.mark.slow
def test_summary_compare_and_optuna_agree_on_every_trials_state(journal_sweep, tmp_path):
    """A pruned trial is `pruned` in its summary.json and in `cvae compare`, as Optuna says PRUNED
    (it was `failed` with a TrialPruned reason once)."""
    import csv

    _, out, _ = journal_sweep
    trials = trials_of(str(out / "optuna.journal"), "sweep")
    word = {"COMPLETE": "finished", "PRUNED": "pruned"}
    for t in trials:
        summary = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert summary["status"] == word[t.state.name], (t.number, summary)
        if t.state.name == "PRUNED":
            assert summary["stop_reason"].startswith("pruned after epoch") and "failure_reason" not in summary
    assert_ok(cvae("compare", out, "--out", tmp_path / "cmp"))
    with open(tmp_path / "cmp" / "compare.csv", newline="") as f:
        rows = {row["run"]: row["status"] for row in csv.DictReader(f)}
    assert rows == {f"sweep-t{t.number}": word[t.state.name] for t in trials}


@pytest.mark.slow
def test_rerun_continues_the_study(journal_sweep, tmp_path):
    path, out, _ = journal_sweep
    url = str(out / "optuna.journal")
    r = cvae("sweep", "run", path, "--dir", out)  # the budget is spent: nothing to do
    assert_ok(r)
    assert len(trials_of(url, "sweep")) == 6
    st = json.loads(cvae("sweep", "status", path, "--dir", out, "--json").stdout)
    best = cvae("sweep", "best", path, "--dir", out, "-o", tmp_path / "best.yaml")
    assert_ok(best)
    spec = yaml.safe_load((tmp_path / "best.yaml").read_text())
    for key, value in st["best"]["params"].items():
        section, leaf = key.split(".")
        assert spec[section][leaf] == pytest.approx(value)
    assert spec["tracking"]["wandb"]["group"] is None  # the sweep's own W&B naming is not copied
    from cvae.spec import load_spec

    assert load_spec(tmp_path / "best.yaml").optim.lr == pytest.approx(st["best"]["params"]["optim.lr"])


@pytest.mark.slow
def test_optuna_cli_agrees_with_status(journal_sweep):
    path, out, _ = journal_sweep
    journal = str(out / "optuna.journal")
    r = cvae("sweep", "status", path, "--dir", out, "--json")
    assert_ok(r)
    st = json.loads(r.stdout)
    storage = ["--storage", journal, "--storage-class", "JournalFileBackend"]
    env = subprocess_env()
    trials = subprocess.run(
        ["optuna", *storage, "trials", "--study-name", "sweep", "-f", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert trials.returncode == 0, trials.stderr
    rows = json.loads(trials.stdout)
    assert len(rows) == st["n_trials"] == 6
    by_state: dict[str, int] = {}
    for row in rows:
        by_state[row["state"]] = by_state.get(row["state"], 0) + 1
    assert by_state == {k: v for k, v in st["states"].items() if v}
    best = subprocess.run(
        ["optuna", *storage, "best-trial", "--study-name", "sweep", "-f", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert best.returncode == 0, best.stderr
    b = json.loads(best.stdout)
    assert b["number"] == st["best"]["number"]
    # the study names its objective: the CLI (and optuna-dashboard) show val/psnr, not "Objective 0"
    assert b["value"] == {"val/psnr": pytest.approx(st["best"]["value"])}
    text = cvae("sweep", "status", path, "--dir", out)
    assert_ok(text)
    assert f"best: trial {st['best']['number']}" in text.stdout and "complete" in text.stdout

    # `optuna studies` prints every study attribute in its table: they are short, and the base spec is a
    # file (a spec `cvae train` takes) that an attribute names, not 700 columns of JSON
    table = subprocess.run(["optuna", *storage, "studies"], capture_output=True, text=True, env=env, timeout=120)
    assert table.returncode == 0, table.stderr
    studies = subprocess.run(
        ["optuna", *storage, "studies", "-f", "json"], capture_output=True, text=True, env=env, timeout=120
    )
    (attrs,) = [s["user_attrs"] for s in json.loads(studies.stdout)]
    paths = len(attrs["sweep_file"]) + len(attrs["base_spec_file"])  # as long as the folders are
    assert max(map(len, table.stdout.splitlines())) - paths < 150, table.stdout
    assert set(attrs) == {"sweep_file", "objective", "base_spec_file"} and attrs["objective"] == "val/psnr, best epoch"
    base_file = Path(attrs["base_spec_file"])
    assert base_file.is_absolute() and base_file.parent == out.resolve()
    assert yaml.safe_load(base_file.read_text()) == load_sweep(path).base
    from cvae.spec import load_spec

    assert load_spec(base_file).optim.schedule == "none"  # the tiny base spec, as a spec file
    # each trial says which code trained it
    for row in rows:
        assert row["user_attrs"]["code_version"].startswith("cvae-sweeps "), row["user_attrs"]


@pytest.mark.slow
def test_dashboard_lists_the_study(journal_sweep):
    path, out, _ = journal_sweep
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvae.cli", "sweep", "dashboard", str(path), "--dir", str(out), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(),
    )
    try:
        deadline, body = time.monotonic() + 60, None
        while time.monotonic() < deadline and body is None:
            assert proc.poll() is None, proc.stdout.read()
            with contextlib.suppress(OSError):
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
            time.sleep(0.3)
        assert body is not None, "the dashboard never answered"
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["sweep"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    first = proc.stdout.readline()
    assert f"http://127.0.0.1:{port}/" in first


def test_best_reads_the_base_spec_of_a_study_made_before_it_moved_to_a_file(tmp_path):
    """Studies made before kept the whole base spec in the user attribute `base_spec`: `cvae sweep best`
    still makes their best spec."""
    import optuna

    from cvae.sweep.study import open_storage

    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(storage=open_storage(str(journal)), study_name="old", direction="maximize")
    study.set_user_attr("base_spec", {"name": "quick", "optim": {"lr": 0.001}, "train": {"epochs": 3}})
    dist = optuna.distributions.FloatDistribution(0.1, 1.0)
    trial = optuna.trial.create_trial(
        params={"kl_annealing.ratio": 0.5}, distributions={"kl_annealing.ratio": dist}, value=1
    )
    study.add_trial(trial)
    r = cvae("sweep", "best", "--storage", journal, "--study", "old")
    assert_ok(r)
    spec = yaml.safe_load(r.stdout)
    assert spec["name"] == "quick-best" and spec["kl_annealing"]["ratio"] == 0.5 and spec["train"]["epochs"] == 3


def test_status_names_both_importance_evaluators_and_the_dashboard_draws_the_ped_anova_one(tmp_path):
    """optuna-dashboard ranks importances with PED-ANOVA, `cvae sweep status` with fANOVA: status shows
    both, each named, and its PED-ANOVA values are the ones the dashboard's own code serves. A study
    of 24 trials in a real journal whose score is mostly one parameter (no training needed)."""
    import random

    import optuna

    from cvae.sweep.study import open_storage

    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(storage=open_storage(str(journal)), study_name="imp", direction="maximize")
    dists = {
        "optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "kl_annealing.ratio": optuna.distributions.FloatDistribution(0.1, 1.0),
        "kl_annealing.type": optuna.distributions.CategoricalDistribution(["cyclical", "none"]),
    }
    rng = random.Random(0)
    for _ in range(24):
        p = {"optim.lr": 10 ** rng.uniform(-4, -2), "kl_annealing.ratio": rng.uniform(0.1, 1.0)}
        p["kl_annealing.type"] = rng.choice(["cyclical", "none"])
        value = (
            20
            + 2 * math.log10(p["optim.lr"])
            + 0.2 * p["kl_annealing.ratio"]
            + 0.1 * (p["kl_annealing.type"] == "none")
        )
        study.add_trial(optuna.trial.create_trial(params=p, distributions=dists, value=value))
    where = ["--storage", journal, "--study", "imp"]
    r = cvae("sweep", "status", *where, "--json")
    assert_ok(r)
    st = json.loads(r.stdout)
    assert set(st["importance"]) == set(st["importance_ped_anova"]) == set(dists)
    for evaluator in ("importance", "importance_ped_anova"):
        assert max(st[evaluator], key=st[evaluator].get) == "optim.lr", st[evaluator]
    text = cvae("sweep", "status", *where)
    assert_ok(text)
    assert "fANOVA" in text.stdout and "PED-ANOVA" in text.stdout, text.stdout

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvae.cli", "sweep", "dashboard", "--storage", str(journal), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
    )  # fmt: skip
    try:
        (summary,) = json.loads(_get(f"http://127.0.0.1:{port}/api/studies", proc).read())["study_summaries"]
        served = _get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}/param_importances", proc)
        (dashboard,) = json.loads(served.read())["param_importances"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert {d["name"]: d["importance"] for d in dashboard} == pytest.approx(st["importance_ped_anova"])


# --------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_raising_and_diverging_trials_fail_with_reason(tmp_path, tiny_data):
    """Grid over a clip longer than the training videos (raises) and a beta of 1e300 (the loss is
    inf): those trials fail with their reason, the others complete, the command succeeds."""
    sweep = {
        "overrides": {"train.epochs": 1, "kl_annealing.type": "none"},  # beta = max_beta from the first step
        "search": {
            "data.clip_len": {"type": "categorical", "choices": [4, 30]},
            "kl_annealing.max_beta": {"type": "categorical", "choices": [1.0, 1e300]},
        },
        "sampler": {"type": "grid"},
        "pruner": {"type": "none"},
    }
    path = write_sweep(tmp_path, tiny_data, sweep)
    r = cvae("sweep", "run", path, "--dir", tmp_path / "out")
    assert_ok(r)
    trials = trials_of(str(tmp_path / "out" / "optuna.journal"), "sweep")
    assert len(trials) == 4
    by_params = {(t.params["data.clip_len"], t.params["kl_annealing.max_beta"]): t for t in trials}
    assert by_params[(4, 1.0)].state.name == "COMPLETE"
    diverged = by_params[(4, 1e300)]
    assert diverged.state.name == "FAIL"
    assert diverged.user_attrs["fail_reason"].startswith("TrainingDiverged: non-finite loss")
    for beta in (1.0, 1e300):
        t = by_params[(30, beta)]
        assert t.state.name == "FAIL" and "DataError" in t.user_attrs["fail_reason"], t.user_attrs
    assert "TrainingDiverged" in r.stdout  # said on the trial's line


def _wait_for_epochs(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run has logged n epochs and written a checkpoint."""
    deadline = time.monotonic() + timeout
    while len(epoch_rows(run_dir)) < n or not (run_dir / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no epoch {n} in {run_dir}"
        time.sleep(0.05)


FAULT_EPOCHS = 6  # long enough that a signal sent after epoch 1 lands inside the trial, even on a loaded CI machine


def _fault_sweep(tmp_path: Path, data: Path, **extra) -> Path:
    sweep = {
        "overrides": {"train.epochs": FAULT_EPOCHS},
        "search": SEARCH,
        "sampler": {"type": "random"},
        "pruner": {"type": "none"},
        "budget": {"n_trials": 2},
        "study": "sweep",
        "heartbeat": {"interval": 1, "grace_period": 3, "max_retry": 2},
    } | extra
    return write_sweep(tmp_path, data, sweep)


def _assert_resumed(trials, stopped_epochs: list[dict]) -> None:
    """Two budget slots, the stopped trial replaced once, the replacement's history holding every
    epoch exactly once: those of the stopped trial up to its last checkpoint (the same rows: not
    trained again), then the rest."""
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2 and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    resumed = [t for t in complete if "resumed_from" in t.user_attrs]
    assert len(resumed) == 1, [(t.number, t.state.name, t.user_attrs) for t in trials]
    t = resumed[0]
    assert t.params == next(s.params for s in trials if s.number == t.user_attrs["resumed_from"])
    rows = epoch_rows(Path(t.user_attrs["run_dir"]))
    assert [r["epoch"] for r in rows] == list(range(1, FAULT_EPOCHS + 1))
    kept = 0
    while kept < len(stopped_epochs) and rows[kept] == stopped_epochs[kept]:
        kept += 1
    # The stopped run's epochs up to its checkpoint (at most the one in flight is trained again).
    assert kept >= 1 and kept >= len(stopped_epochs) - 1, (kept, len(stopped_epochs))
    assert sorted(t.intermediate_values) == list(range(1, FAULT_EPOCHS + 1))


@pytest.mark.slow
def test_kill_9_worker_is_retried_from_checkpoint(tmp_path, tiny_data):
    """SQLite + heartbeat: the killed worker's trial goes stale, is failed and retried by the
    restarted worker, continuing from the killed trial's last checkpoint."""
    path = _fault_sweep(tmp_path, tiny_data)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    cmd = [
        sys.executable,
        "-m",
        "cvae.cli",
        "sweep",
        "run",
        str(path),
        "--storage",
        url,
        "--dir",
        str(tmp_path / "out"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env())
    run0 = tmp_path / "out" / "trials" / "0"
    _wait_for_epochs(run0, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = epoch_rows(run0)
    assert trials_of(url, "sweep")[0].state.name == "RUNNING"  # nobody told the study
    r = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert_ok(r)
    trials = trials_of(url, "sweep")
    assert trials[0].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].user_attrs["resumed_from"] == 0
    _assert_resumed(trials, killed)
    st = json.loads(cvae("sweep", "status", path, "--storage", url, "--dir", tmp_path / "out", "--json").stdout)
    assert st["replaced"] == [0] and st["states"]["COMPLETE"] == 2 and st["running"] == []


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_rerun_resumes(tmp_path, tiny_data):
    """Journal storage: Ctrl-C ends the command (exit 130) with its trial recorded as interrupted;
    the next run resumes that trial from its checkpoint, then finishes the budget."""
    path = _fault_sweep(tmp_path, tiny_data)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cvae.cli", "sweep", "run", str(path), "--dir", str(out)]
    # A shell's background job (CI runners, nohup) starts with SIGINT ignored and Python keeps it
    # ignored; a user's terminal does not. Give the worker a terminal's default.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_epochs(out / "trials" / "0", 1, proc)
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "interrupted" in text
    url = str(out / "optuna.journal")
    t0 = trials_of(url, "sweep")[0]
    assert t0.state.name == "FAIL" and t0.user_attrs["interrupted"] is True
    stopped = epoch_rows(out / "trials" / "0")
    r = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert_ok(r)
    assert "resuming stopped trial(s) 0" in r.stdout
    _assert_resumed(trials_of(url, "sweep"), stopped)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port (initdb + pg_ctl in a tmp dir;
    as root, run as the `postgres` user, since PostgreSQL refuses to run as root)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[dev]')")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install -y postgresql; .ci/run does)")
    # Not under pytest's tmp folder: it is private to this user, and the server runs as another.
    root = Path(tempfile.mkdtemp(prefix="cvae-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        for p in (root, sock):
            os.chown(p, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *a: subprocess.run([*prefix, *map(str, a)], capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run(bin_dir / "initdb", "-D", data, "-U", "cvae", "--auth=trust", "-E", "UTF8")
    assert r.returncode == 0, r.stderr
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    r = run(bin_dir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log.txt", "-w", "start")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        r = run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "cvae", "optuna")
        assert r.returncode == 0, r.stderr
        yield f"postgresql://cvae@127.0.0.1:{port}/optuna"
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_postgresql(tmp_path, tiny_data, postgres_url):
    path = write_sweep(
        tmp_path,
        tiny_data,
        tpe_sweep(4),
    )
    r = cvae("sweep", "run", path, "--workers", "2", "--storage", postgres_url, "--dir", tmp_path / "out")
    assert_ok(r)
    trials = trials_of(postgres_url, "sweep")
    assert_clean_sweep(trials, 4)
    assert len({t.user_attrs["worker"] for t in trials}) == 2


# --------------------------------------------------------------------------- 4 workers x 10 trials


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_four_workers_forty_trials(tmp_path, tiny_data, backend, request):
    """docs/reliability.md promise 4: 4 worker processes share 40 trials (10 each on average) of a
    TPE + median-pruning study on one storage. Every trial finishes, numbers are unique, no
    worker reports a locked database, and no update is lost: every trial holds its parameters,
    an intermediate value per epoch it trained and its attributes, all matching its run folder."""
    storage = [] if backend == "journal" else ["--storage", request.getfixturevalue("postgres_url")]
    study = f"four_workers_{backend}"
    sweep = tpe_sweep(40, study, n_startup_trials=4)
    # One epoch of three steps: the workers spend their time on the storage, not on training.
    path = write_sweep(tmp_path, tiny_data, sweep, **{"train.epochs": 1, "data.val_len": 4})
    t0 = time.monotonic()
    r = cvae("sweep", "run", path, "--workers", "4", *storage, "--dir", tmp_path / "out", timeout=900)
    assert_ok(r)
    print(f"4-worker {backend} sweep of 40 trials: {time.monotonic() - t0:.1f} s")
    assert "locked" not in (r.stdout + r.stderr).lower()
    url = storage[1] if storage else str(tmp_path / "out" / "optuna.journal")
    trials = trials_of(url, study)
    assert_clean_sweep(trials, 40, n_epochs=1, study=study)
    per_worker: dict[str, int] = {}
    for t in trials:
        per_worker[t.user_attrs["worker"]] = per_worker.get(t.user_attrs["worker"], 0) + 1
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs_done"] + 1))
        assert f"trial {t.number}:" in r.stdout
    assert len(per_worker) == 4 and sum(per_worker.values()) == 40, per_worker


def test_journal_trial_of_a_dead_worker_is_queued_again(tmp_path):
    """No heartbeat on a journal file: a RUNNING trial whose worker process on this host is gone
    is failed (with the reason) and queued again with its values, to resume from its folder."""
    import optuna

    from cvae.sweep.study import open_storage
    from cvae.sweep.workers import count_slots, recover, this_worker

    study = optuna.create_study(storage=open_storage(str(tmp_path / "j.journal")), study_name="s")
    dead = study.ask()
    dead.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    host = this_worker().split(":")[0]
    dead.set_user_attr("worker", f"{host}:{2**22 + 17}:0")  # above the largest pid Linux hands out
    alive = study.ask()
    alive.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    alive.set_user_attr("worker", this_worker())
    assert recover(study, heartbeat=False) == [dead.number]
    trials = study.get_trials(deepcopy=False)
    assert trials[dead.number].state.name == "FAIL"
    assert trials[dead.number].user_attrs["fail_reason"] == "its worker process died"
    assert trials[alive.number].state.name == "RUNNING"
    queued = trials[-1]
    assert queued.state.name == "WAITING" and queued.user_attrs["resume_of"] == dead.number
    assert queued.system_attrs["fixed_params"] == trials[dead.number].params  # the values it will run with
    assert count_slots(trials) == {"slots": 2, "waiting": 1, "running": 1}  # the replaced trial counts once
    assert recover(study, heartbeat=False) == []  # queued once only


@pytest.mark.slow
def test_a_trial_its_wandb_run_and_its_dashboard_page_point_at_each_other(tmp_path, tiny_data):
    """Offline W&B: the trial's run is named after study and trial, job type `trial`, tagged with the
    study, its config holds the study and the trial's values, and its best checkpoint is a `model`
    artifact; the Optuna trial records the W&B run id and the device; its GIF and plot are Optuna
    artifacts that `cvae sweep dashboard` serves, and its Note gives the score beside the references."""
    import optuna_dashboard
    from optuna.artifacts import get_all_artifact_meta
    from PIL import Image
    from wandb_offline import read_offline_run

    sweep = {"overrides": {"train.epochs": 1}, "search": {"optim.lr": SEARCH["optim.lr"]}, "budget": {"n_trials": 1}}
    path = write_sweep(tmp_path, tiny_data, sweep, **{"tracking.wandb.mode": "offline"})
    out, url = tmp_path / "out", str(tmp_path / "out" / "optuna.journal")
    assert_ok(cvae("sweep", "run", path, "--dir", out, "--study", "wb"))
    study = load_study(url, "wb")
    trial = study.get_trials(deepcopy=False)[0]
    run = read_offline_run(Path(trial.user_attrs["run_dir"]))
    assert run["state"] == "finished"
    assert run["config"]["trial.number"] == 0 and run["config"]["trial.study"] == "wb"
    assert run["config"]["trial.params.optim.lr"] == pytest.approx(trial.params["optim.lr"])
    meta = run["meta"]
    assert meta["run_group"] == "wb" and meta["display_name"] == "wb-t0" and meta["job_type"] == "trial"
    assert "wb" in meta["tags"]
    (model,) = [a for a in run["artifacts"] if a["type"] == "model"]  # (tables are artifacts too)
    assert model["type"] == "model" and set(model["aliases"]) == {"best", "latest"}
    assert model["name"] == f"wb-t0-{run['run_id']}"
    info = json.loads(model["metadata"])
    assert info["epoch"] == 1 and info["val/psnr"] == pytest.approx(trial.value) and info["spec"] == "tiny-t0"
    assert info["data_identity"]["train_frames"] == 96
    assert trial.user_attrs["wandb_run_id"] == run["run_id"] and trial.user_attrs["device"] == "cpu"
    # the trial's plot is titled with the run's W&B name (not the spec's name, tiny-t0)
    plot = Path(trial.user_attrs["run_dir"]) / "plots" / "val_psnr.png"
    assert Image.open(plot).text["Title"] == f"{meta['display_name']}: validation rollout, epoch 1"

    media = get_all_artifact_meta(trial, storage=study._storage)
    assert sorted(m.mimetype for m in media) == ["image/gif", "image/png"]
    note = optuna_dashboard.get_note(_TrialRef(study, trial))
    assert f"val/psnr {trial.value:.2f}" in note and "mean-frame" in note and "poses shifted in time" in note
    assert trial.user_attrs["run_dir"] in note and run["run_id"] in note
    study_id = study._storage.get_study_id_from_name("wb")
    gif = next(m for m in media if m.mimetype == "image/gif")
    assert f"/artifacts/{study_id}/{trial._trial_id}/{gif.artifact_id}" in note  # shown on the trial's page
    assert "```yaml" in optuna_dashboard.get_note(study)  # the base spec, readable, on the study's page

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvae.cli", "sweep", "dashboard", str(path), "--dir", str(out), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env(),
    )  # fmt: skip
    try:
        served = _get(f"http://127.0.0.1:{port}/artifacts/{study_id}/{trial._trial_id}/{gif.artifact_id}", proc)
        assert served.headers["Content-Type"] == "image/gif" and served.read()[:6] in (b"GIF87a", b"GIF89a")
        busy = cvae("sweep", "dashboard", path, "--dir", out, "--port", port)
        assert_bad_input(busy, f"--port {port}", "already in use")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _TrialRef:
    """A finished trial as optuna_dashboard.get_note takes one (its storage, study and id)."""

    def __init__(self, study, frozen) -> None:
        self.storage, self.study, self._trial_id = study._storage, study, frozen._trial_id


def _get(url: str, proc: subprocess.Popen, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the dashboard exited"
        with contextlib.suppress(OSError):
            return urllib.request.urlopen(url, timeout=5)
        time.sleep(0.3)
    raise AssertionError(f"no answer from {url}")


# --------------------------------------------------------------------------- GPUs per worker


@pytest.mark.slow
def test_gpus_go_round_robin_to_the_workers_through_their_environment(tmp_path, tiny_data, monkeypatch):
    """Worker i gets the i-th GPU of --gpus (default: every visible one) as its CUDA_VISIBLE_DEVICES,
    and each trial records the one it ran with. Two GPUs are simulated: the worker processes are
    real, and on this CPU they train on the CPU whatever the variable says."""
    from cvae import placement
    from cvae.errors import UserError
    from cvae.sweep import workers
    from cvae.terminal import make_console

    monkeypatch.setattr(placement, "visible_gpus", lambda: ["0", "1"])
    assert placement.assign_gpus(3, None) == ["0", "1", "0"]
    assert placement.assign_gpus(4, "1") == ["1"] * 4  # workers sharing one GPU
    with pytest.raises(UserError, match="no GPU 7 here; visible: 0, 1"):
        placement.assign_gpus(2, "0,7")
    sweep = {"overrides": {"train.epochs": 1}, "search": {"optim.lr": SEARCH["optim.lr"]}, "budget": {"n_trials": 4}}
    path = write_sweep(tmp_path, tiny_data, sweep)
    loaded = load_sweep(path, "gpus", tmp_path / "out")
    opts = workers.RunOptions(str(tmp_path / "out" / "optuna.journal"), 4, None)
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    assert workers.run_workers(loaded, opts, 2, make_console(quiet=True), placement.assign_gpus(2, None)) == 0
    seen: dict[str, set[str]] = {}
    for t in trials_of(opts.url, "gpus"):
        seen.setdefault(t.user_attrs["worker"], set()).add(t.user_attrs["cuda_visible_devices"])
    assert sorted(v for gpus in seen.values() for v in gpus) == ["0", "1"] and all(len(g) == 1 for g in seen.values())


def test_gpus_on_a_machine_without_cuda_are_refused(tmp_path, tiny_data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    sweep = {"search": {"optim.lr": SEARCH["optim.lr"]}, "budget": {"n_trials": 1}}
    path = write_sweep(tmp_path, tiny_data, sweep)
    assert_bad_input(cvae("sweep", "run", path, "--dir", tmp_path / "out", "--gpus", "0"), "--gpus 0", "no CUDA device")
    assert not (tmp_path / "out" / "trials").exists()


def test_a_sweep_file_with_three_mistakes_names_all_three(tmp_path, tiny_data):
    sweep = {
        "search": {
            "optim.lrr": {"type": "float", "low": 1e-4, "high": 1e-2},
            "kl_annealing.ratio": {"type": "float", "low": 0.1, "high": 1.5},
        },
        "budget": {"n_trials": 2},
        "objectiv": {"metric": "val/psnr"},
    }
    r = cvae("sweep", "run", write_sweep(tmp_path, tiny_data, sweep), "--dir", tmp_path / "out")
    assert_bad_input(r, "3 problems")
    for needle in ("unknown key `objectiv` (did you mean `objective`?)", "`optim.lrr` is not a key of the spec",
                   "search.kl_annealing.ratio: the value 1.5 gives an invalid spec"):  # fmt: skip
        assert needle in r.stderr, r.stderr


def test_the_pruner_never_prunes_after_the_last_epoch(tmp_path):
    """Pruning after the last epoch saves no training and would only hide the trial's score."""
    import optuna

    from cvae.errors import Pruned
    from cvae.sweep.trial import PruningCallback

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    trial = study.ask()
    callback = PruningCallback(trial, "val/psnr", tmp_path, epochs=4)
    with pytest.raises(Pruned, match="after epoch 2"):
        callback.on_epoch_end(2, {"val/psnr": 20.0})
    callback.on_epoch_end(4, {"val/psnr": 21.0})  # the last epoch: reported, never pruned
    (frozen,) = study.trials
    assert frozen.intermediate_values == {2: 20.0, 4: 21.0}
    assert frozen.user_attrs["pruned_at_epoch"] == 2


def test_a_ctrl_c_during_the_trials_storage_write_waits_for_the_write(tmp_path):
    """Ctrl-C landing inside Optuna's journal write (its file lock half released) once failed the trial
    with a FileNotFoundError and lost the stop: a stop now waits until the storage call has returned."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from cvae.sweep.trial import PruningCallback

    class CtrlCWhileAsked(optuna.pruners.BasePruner):
        returned = False

        def prune(self, study, trial) -> bool:
            os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, mid-way through the storage's work
            study.get_trials(deepcopy=False)  # more storage work after it
            CtrlCWhileAsked.returned = True
            return False

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    study = optuna.create_study(storage=storage, direction="maximize", pruner=CtrlCWhileAsked())
    trial = study.ask()
    # Ctrl-C as a terminal delivers it (pytest-xdist's workers ignore SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            PruningCallback(trial, "val/psnr", tmp_path, epochs=4).on_epoch_end(1, {"val/psnr": 20.0})
    finally:
        signal.signal(signal.SIGINT, previous)
    assert CtrlCWhileAsked.returned  # the pruner's storage work finished before the stop arrived
    (frozen,) = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert frozen.intermediate_values == {1: 20.0}
