"""Sweeps: search a spec's settings with Optuna (one machine or many) or W&B sweep agents.

A sweep file (``sweeps/*.yaml``) names a base experiment spec, fixed overrides, a search space
over dotted spec keys, the objective, the sampler, the pruner, the budget and a seed. It is
checked like a spec (unknown keys are errors with a did-you-mean; a searched key that is not a
spec key is an error naming it; every bound must make a valid spec).

Each Optuna trial is the base spec + overrides + the trial's values, trained by the same
``cvae.training.train()`` into ``<sweep dir>/trials/<trial number>``, with one W&B run per
trial (group = study, name = trial number). The objective metric is reported every epoch so
the pruner can stop a trial early.

Storages: a journal file in the sweep folder by default (safe for many processes on one
machine); ``sqlite:///`` and ``postgresql://`` URLs (RDB storages, with a heartbeat: a trial
whose worker died is failed and retried, resuming from its run folder's last checkpoint).

The budget is the study's total number of trials: re-running the same command continues a
study until it has that many (trials replaced by a retry count once). optuna and torch are
imported inside functions only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cvae.errors import SpecError
from cvae.spec import (
    _did_you_mean,
    _format_validation,
    all_keys,
    apply_overrides,
    dump_yaml,
    load_spec_dict,
    validate,
)
from cvae.tracking import Tracker

# Metrics written on epoch rows of history.jsonl that an objective may use.
METRICS = ("val/psnr", "val/mse", "val/psnr_shifted_pose", "epoch/loss", "epoch/mse", "epoch/kl")
JOURNAL_NAME = "optuna.journal"
LOCK_NAME = ".workers.lock"
STORAGE_ENV = "CVAE_SWEEP_STORAGE"  # the storage URL handed to worker processes (not on argv)


# --------------------------------------------------------------------------- the sweep file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatParam(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = Field(False, description="Sample on a log scale (low > 0).")
    step: float | None = Field(None, gt=0, description="Discretization step (not with log).")

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be used together")
        return self


class IntParam(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = Field(False, description="Sample on a log scale (low > 0).")
    step: int = Field(1, ge=1, description="Step between values (1 with log).")

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("step must be 1 with log")
        return self


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[str | int | float | bool | None] = Field(min_length=1)


def _check_bounds(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"log needs low > 0, got {low}")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class ObjectiveSpec(_Strict):
    metric: str = Field("val/psnr", description=f"Epoch metric to optimize: one of {', '.join(METRICS)}.")
    direction: Literal["maximize", "minimize"] = "maximize"
    epoch: Literal["best", "last"] = Field("best", description="Score a trial by its best or its last epoch.")


class SamplerSpec(_Strict):
    type: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    n_startup_trials: int = Field(10, ge=0, description="tpe/cmaes: random trials before the model kicks in.")


class PrunerSpec(_Strict):
    type: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="median: trials finished before any is pruned.")
    n_warmup_steps: int = Field(0, ge=0, description="median: epochs a trial runs before it may be pruned.")
    min_resource: int = Field(1, ge=1, description="hyperband: epochs of the smallest bracket.")
    reduction_factor: int = Field(3, ge=2, description="hyperband: keep 1 / this many at each rung.")


class BudgetSpec(_Strict):
    n_trials: int | None = Field(None, ge=1, description="Trials in the study in all (re-runs continue up to it).")
    timeout: float | None = Field(None, gt=0, description="Seconds one `cvae sweep run` starts new trials for.")


class HeartbeatSpec(_Strict):
    interval: int = Field(60, ge=1, description="RDB storages: seconds between a running trial's heartbeats.")
    grace_period: int = Field(180, ge=2, description="A trial silent this long is failed (its worker died).")
    max_retry: int = Field(2, ge=0, description="Times such a trial is retried from its checkpoint.")


class SweepSpec(_Strict):
    base: str = Field(description="The base experiment spec, relative to the sweep file.")
    overrides: dict[str, Any] = Field({}, description="Dotted spec keys fixed for every trial.")
    search: dict[str, Param] = Field(description="Dotted spec key -> distribution.")
    objective: ObjectiveSpec = ObjectiveSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    budget: BudgetSpec = BudgetSpec()
    seed: int = Field(0, ge=0, description="Sampler seed (worker i of a run uses seed + 1000 i).")
    study: str | None = Field(None, description="Study name; null: the sweep file's name.")
    out_dir: str | None = Field(None, description="Sweep folder; null: runs/sweeps/<study>.")
    storage: str | None = Field(None, description="Optuna storage URL; null: a journal file in the sweep folder.")
    heartbeat: HeartbeatSpec = HeartbeatSpec()

    @model_validator(mode="after")
    def _budget(self) -> SweepSpec:
        if self.budget.n_trials is None and self.budget.timeout is None and self.sampler.type != "grid":
            raise ValueError("budget needs n_trials, timeout or both")
        if not self.search:
            raise ValueError("search is empty: name at least one spec key to search")
        return self


_PARAM_FIELDS = set(FloatParam.model_fields) | set(IntParam.model_fields) | set(CategoricalParam.model_fields)


def _check_sweep_keys(data: dict[str, Any], source: str) -> None:
    """Unknown keys of the sweep file, with a did-you-mean (pydantic's own message names none)."""

    def walk(d: Any, model: type[BaseModel], prefix: str) -> None:
        if not isinstance(d, dict):
            return
        names = list(model.model_fields)
        for key, value in d.items():
            if key not in model.model_fields:
                hint = _did_you_mean(f"{prefix}{key}", [f"{prefix}{n}" for n in names])
                raise SpecError(f"{source}: unknown key `{prefix}{key}`{hint}")
            ann = model.model_fields[key].annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(value, ann, f"{prefix}{key}.")

    walk(data, SweepSpec, "")
    for key, param in (data.get("search") or {}).items():
        if isinstance(param, dict):
            for k in param:
                if k not in _PARAM_FIELDS:
                    hint = _did_you_mean(k, sorted(_PARAM_FIELDS))
                    raise SpecError(f"{source}: search.{key}: unknown key `{k}`{hint}")


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: the checked model plus what it resolves to."""

    spec: SweepSpec
    path: Path
    base_path: Path
    base: dict[str, Any]  # the base spec dict with the sweep's overrides applied (unvalidated tree)
    study: str
    out_dir: Path

    @property
    def trials_dir(self) -> Path:
        return self.out_dir / "trials"

    def epochs(self) -> int:
        return validate(self.base, str(self.base_path)).train.epochs


def load_sweep(path: str | Path, study: str | None = None, out_dir: str | Path | None = None) -> Sweep:
    """Read and check a sweep file; SpecError (exit 2) names the file, key or value at fault."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: sweep file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a sweep file must be a mapping of keys")
    _check_sweep_keys(data, str(path))
    try:
        sweep = SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_validation(e, str(path), data)) from None

    base_path = path.parent / sweep.base
    base = load_spec_dict(base_path)
    try:
        base = apply_overrides(base, sweep.overrides)
    except SpecError as e:
        raise SpecError(f"{path}: overrides: {e}") from None
    _check_search(sweep, base, path)
    name = study or sweep.study or path.stem
    out = Path(out_dir) if out_dir is not None else Path(sweep.out_dir or Path("runs") / "sweeps" / name)
    return Sweep(sweep, path, base_path, base, name, out)


def _check_search(sweep: SweepSpec, base: dict[str, Any], path: Path) -> None:
    """Every searched key is a spec key of the right type, and every bound gives a valid spec."""
    leaves = all_keys()
    validate(base, f"{path}: base spec {sweep.base} with the overrides")
    for key, p in sweep.search.items():
        if key not in leaves:
            raise SpecError(f"{path}: search: `{key}` is not a key of the spec{_did_you_mean(key, sorted(leaves))}")
        if key in sweep.overrides:
            raise SpecError(f"{path}: `{key}` is both fixed in overrides and searched")
        if isinstance(p, FloatParam) and leaves[key].annotation is int:
            raise SpecError(f"{path}: search.{key}: `{key}` is an integer setting; use type: int")
        values = p.choices if isinstance(p, CategoricalParam) else [p.low, p.high]
        for v in values:
            try:
                validate(apply_overrides(base, {key: v}), "spec")
            except SpecError as e:
                msg = str(e).replace("spec: ", "")
                raise SpecError(f"{path}: search.{key}: the value {v!r} gives an invalid spec: {msg}") from None
    if sweep.objective.metric not in METRICS:
        hint = _did_you_mean(sweep.objective.metric, list(METRICS))
        raise SpecError(f"{path}: objective.metric {sweep.objective.metric!r} is not one of {', '.join(METRICS)}{hint}")
    if sweep.sampler.type == "grid":
        for key, p in sweep.search.items():
            if isinstance(p, FloatParam) and p.step is None:
                raise SpecError(f"{path}: search.{key}: the grid sampler needs a step for float ranges")
    if sweep.sampler.type == "cmaes":
        cats = [k for k, p in sweep.search.items() if isinstance(p, CategoricalParam)]
        if cats:
            raise SpecError(f"{path}: sampler cmaes searches numbers only; {', '.join(cats)} is categorical")


def grid_values(p: FloatParam | IntParam | CategoricalParam) -> list[Any]:
    if isinstance(p, CategoricalParam):
        return list(p.choices)
    if isinstance(p, IntParam):
        return list(range(p.low, p.high + 1, p.step))
    n = int(math.floor((p.high - p.low) / p.step + 1e-9))
    return [round(p.low + i * p.step, 12) for i in range(n + 1)]


def trial_spec_dict(sweep: Sweep, params: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return apply_overrides(sweep.base, {**params, **(extra or {})})


# --------------------------------------------------------------------------- optuna pieces


def storage_url(sweep: Sweep, storage: str | None) -> str:
    """The storage to use: --storage, else the sweep file's, else the journal in the sweep folder."""
    return storage or os.environ.get(STORAGE_ENV) or sweep.spec.storage or str(sweep.out_dir / JOURNAL_NAME)


def is_rdb(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "postgres", "mysql")


def open_storage(url: str, heartbeat: HeartbeatSpec | None = None):
    """An Optuna storage for a URL (RDB, with the heartbeat and retry) or a journal file path."""
    import optuna

    if is_rdb(url):
        url = "postgresql" + url[len("postgres") :] if url.startswith("postgres:") else url
        hb = heartbeat or HeartbeatSpec()
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        with _quiet_experimental():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=hb.interval,
                grace_period=hb.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=hb.max_retry),
            )
    if "://" in url:
        raise SpecError(f"storage {url!r}: use a journal file path, sqlite:///FILE or postgresql://USER@HOST/DB")
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))


@contextlib.contextmanager
def _quiet_experimental():
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_sampler(sweep: Sweep, seed: int):
    import optuna

    s = sweep.spec.sampler
    with _quiet_experimental():
        if s.type == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if s.type == "grid":
            grid = {k: grid_values(p) for k, p in sweep.spec.search.items()}
            return optuna.samplers.GridSampler(grid, seed=seed)
        if s.type == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials)


def make_pruner(sweep: Sweep):
    import optuna

    p = sweep.spec.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource, max_resource=sweep.epochs(), reduction_factor=p.reduction_factor
        )
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, url: str, seed: int | None = None):
    """Create the study or load it (re-runs continue it); stores the sweep for `status`/`best`."""
    import optuna

    storage = open_storage(url, sweep.spec.heartbeat)
    study = optuna.create_study(
        storage=storage,
        study_name=sweep.study,
        direction=sweep.spec.objective.direction,
        sampler=make_sampler(sweep, sweep.spec.seed if seed is None else seed),
        pruner=make_pruner(sweep),
        load_if_exists=True,
    )
    if "base_spec" not in study.user_attrs:
        study.set_user_attr("base_spec", sweep.base)
        study.set_user_attr("sweep_file", str(sweep.path))
        study.set_user_attr("objective", sweep.spec.objective.model_dump())
    return study


def load_study(url: str, study: str):
    import optuna

    try:
        return optuna.load_study(study_name=study, storage=open_storage(url))
    except KeyError:
        raise SpecError(f"no study {study!r} in storage {_redact(url)}") from None


def _redact(url: str) -> str:
    from cvae.wandb_tracker import redact

    return redact(url)


def suggest(trial, key: str, p: FloatParam | IntParam | CategoricalParam) -> Any:
    if isinstance(p, FloatParam):
        return trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
    if isinstance(p, IntParam):
        return trial.suggest_int(key, p.low, p.high, log=p.log, step=p.step)
    return trial.suggest_categorical(key, p.choices)


# --------------------------------------------------------------------------- trial bookkeeping


def superseded(trials) -> set[int]:
    """Numbers of trials replaced by a later one (heartbeat retry or resume after a stop)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
        if "resume_of" in t.user_attrs:
            out.add(int(t.user_attrs["resume_of"]))
    return out


def resume_source(trial) -> int | None:
    """The trial whose run folder this one continues, if it replaces one."""
    history = trial.system_attrs.get("retry_history")
    if history:
        return int(history[-1])
    src = trial.user_attrs.get("resume_of")
    return None if src is None else int(src)


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks (Linux), telling a reused pid from the original."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(worker: str) -> bool:
    """``host:pid:start``: whether that worker process still runs (only knowable on its host)."""
    host, pid, start = (worker.split(":") + ["", "", ""])[:3]
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return _proc_start(int(pid)) == start


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_proc_start(os.getpid())}"


def recover(study, heartbeat: bool) -> list[int]:
    """Queue a resume for trials stopped by Ctrl-C and (without a heartbeat) trials whose worker
    on this host died; each continues from its run folder. Returns the numbers queued."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = superseded(trials)
    queued = []
    for t in trials:
        if t.number in done:
            continue
        dead = (
            not heartbeat
            and t.state == TrialState.RUNNING
            and "worker" in t.user_attrs
            and not _alive(t.user_attrs["worker"])
        )
        if dead:
            optuna.trial.Trial(study, t._trial_id).set_user_attr("fail_reason", "its worker process died")
            study.tell(t.number, state=TrialState.FAIL)
        if dead or (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")):
            study.enqueue_trial(t.params, user_attrs={"resume_of": t.number})
            queued.append(t.number)
    return queued


def count_slots(trials) -> dict[str, int]:
    """Trials that take a place in the budget (replaced ones count once), waiting, running."""
    from optuna.trial import TrialState

    gone = superseded(trials)
    return {
        "slots": sum(1 for t in trials if t.number not in gone),
        "waiting": sum(1 for t in trials if t.state == TrialState.WAITING),
        "running": sum(1 for t in trials if t.state == TrialState.RUNNING),
    }


class FileLock:
    """An exclusive lock between worker processes on this machine (fcntl); release is idempotent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------- the objective


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "history.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def epoch_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in read_history(run_dir) if "epoch/loss" in r]


def objective_value(rows: list[dict[str, Any]], metric: str, direction: str, which: str) -> float:
    values = [float(r[metric]) for r in rows if metric in r and isinstance(r[metric], (int, float))]
    if not values:
        raise RuntimeError(f"the run logged no {metric} on any epoch")
    if which == "last":
        return values[-1]
    return max(values) if direction == "maximize" else min(values)


class PruningCallback:
    """``trial.report(metric, epochs done)`` after every epoch; raises TrialPruned when the pruner
    says so. A resumed trial first reports the epochs its run folder already holds."""

    def __init__(self, trial, metric: str, run_dir: Path) -> None:
        self.trial, self.metric, self.run_dir = trial, metric, run_dir
        self.reported: set[int] = set()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        import optuna

        if not self.reported:  # backfill epochs trained before a resume
            for row in epoch_rows(self.run_dir):
                if row["epoch"] < epoch and self.metric in row:
                    self._report(float(row[self.metric]), row["epoch"] + 1)
        if self.metric not in metrics:
            return
        value = float(metrics[self.metric])
        self._report(value, epoch + 1)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", epoch + 1)
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}: {self.metric} {value:.4g}")

    def _report(self, value: float, step: int) -> None:
        if step not in self.reported:
            self.trial.report(value, step)
            self.reported.add(step)


class TrialTracker(Tracker):
    """The W&B tracker of one trial: its config also holds the study, trial number and params;
    a pruned trial's W&B run ends as finished (state `pruned` in its summary), not failed."""

    def __init__(self, inner: Tracker, study: str, number: int, params: dict[str, Any]) -> None:
        self.inner, self.extra = inner, {"trial": {"study": study, "number": number, "params": dict(params)}}

    def start(self, run_dir, config, resume):
        self.inner.start(run_dir, {**config, **self.extra}, resume)

    def on_epoch_start(self, epoch, steps, first_step):
        self.inner.on_epoch_start(epoch, steps, first_step)

    def log(self, metrics, step):
        self.inner.log(metrics, step)

    def log_media(self, key, path, step):
        self.inner.log_media(key, path, step)

    def log_curve(self, key, xs, ys, x_name, y_name, step):
        self.inner.log_curve(key, xs, ys, x_name, y_name, step)

    def summary(self, values):
        self.inner.summary(values)

    def finish(self, status="finished", reason=None):
        if status == "failed" and (reason or "").startswith("TrialPruned"):
            self.inner.summary({"trial_state": "pruned"})
            status, reason = "finished", None
        self.inner.finish(status, reason)


def make_objective(sweep: Sweep, study_name: str, lock: FileLock | None = None):
    """The Optuna objective: one training run per trial, in ``<sweep dir>/trials/<number>``."""

    def objective(trial) -> float:
        import optuna

        from cvae.training import train
        from cvae.wandb_tracker import from_spec

        if lock is not None:
            lock.release()  # the trial exists now: other workers may ask for theirs
        params = {key: suggest(trial, key, p) for key, p in sweep.spec.search.items()}
        run_dir = sweep.trials_dir / str(trial.number)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("worker", this_worker())
        try:
            extra = {"tracking.wandb.group": study_name, "tracking.wandb.name": str(trial.number)}
            data = trial_spec_dict(sweep, params, extra)
            data["name"] = f"{data.get('name', 'experiment')}-t{trial.number}"
            spec = validate(data, f"trial {trial.number}")
            resume = _prepare_trial_dir(sweep, trial, run_dir)
            trackers = [TrialTracker(from_spec(spec), study_name, trial.number, params)]
            callbacks = [PruningCallback(trial, sweep.spec.objective.metric, run_dir)]
            train(spec, run_dir, trackers, callbacks, resume=resume, console=None)
            o = sweep.spec.objective
            return objective_value(epoch_rows(run_dir), o.metric, o.direction, o.epoch)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); resumes on the next `cvae sweep run`")
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as e:
            trial.set_user_attr("fail_reason", f"{e.__class__.__name__}: {e}"[:2000])
            raise
        finally:
            with contextlib.suppress(Exception):
                trial.set_user_attr("epochs_done", len(epoch_rows(run_dir)))

    return objective


def _prepare_trial_dir(sweep: Sweep, trial, run_dir: Path) -> bool:
    """A fresh folder, or a copy of the replaced trial's folder to resume from (True)."""
    from cvae.training import prepare_run_dir

    # A running Trial shows no system attrs (where a heartbeat retry is marked): read them
    # from the study's record of it.
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    src = resume_source(frozen)
    if src is not None and src != trial.number:
        source = sweep.trials_dir / str(src)
        if (source / "checkpoints" / "last.pt").exists() and (source / "spec.yaml").exists():
            if run_dir.exists():
                shutil.rmtree(run_dir)
            shutil.copytree(source, run_dir)
            # The retry is a W&B run of its own (name = its trial number).
            for name in ("wandb", "wandb_run_id.txt"):
                p = run_dir / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            trial.set_user_attr("resumed_from", src)
            return True
    prepare_run_dir(run_dir, resume=False, overwrite=True)
    return False


# --------------------------------------------------------------------------- workers


@dataclass
class RunOptions:
    url: str
    n_trials: int | None
    timeout: float | None
    worker_index: int = 0


def budget(sweep: Sweep, n_trials: int | None) -> int | None:
    n = n_trials if n_trials is not None else sweep.spec.budget.n_trials
    if sweep.spec.sampler.type == "grid":  # each grid point once
        size = math.prod(len(grid_values(p)) for p in sweep.spec.search.values())
        n = size if n is None else min(n, size)
    return n


def prepare(sweep: Sweep, url: str, console=None):
    """Create or load the study, queue resumes, make sure the data exists (once per machine)."""
    from cvae.training import ensure_data

    with FileLock(sweep.out_dir / LOCK_NAME):
        study = open_study(sweep, url)
        queued = recover(study, heartbeat=is_rdb(url))
        if queued and console is not None:
            console.print(f"resuming stopped trial(s) {', '.join(map(str, queued))} from their checkpoints")
        ensure_data(validate(sweep.base, str(sweep.base_path)), console)
    return study


def run_worker(sweep: Sweep, opts: RunOptions, console=None, report=None) -> None:
    """Optimize the shared study until its budget is spent (or the timeout passes).

    Trials are started one at a time under a lock shared by the workers on this machine, so K
    workers never start more trials than the budget. A worker that finds the budget taken while
    trials still run waits for them when the storage has a heartbeat: one may die and be retried.
    ``report(frozen_trial)`` is called after each trial this worker ran.
    """
    import optuna
    from optuna.trial import TrialState

    if not os.environ.get("CVAE_DEBUG"):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = prepare(sweep, opts.url, console)
    heartbeat = is_rdb(opts.url)
    # Distinct seeds per worker and per continuation: the same proposals are never replayed.
    n_before = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(sweep, sweep.spec.seed + 1000 * opts.worker_index + n_before)
    limit = budget(sweep, opts.n_trials)
    deadline = time.monotonic() + opts.timeout if opts.timeout else math.inf
    lock = FileLock(sweep.out_dir / LOCK_NAME)
    objective = make_objective(sweep, sweep.study, lock)
    poll = min(sweep.spec.heartbeat.interval, 2)
    while time.monotonic() < deadline:
        lock.acquire()
        try:
            if heartbeat:
                with _quiet_experimental():
                    optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            c = count_slots(trials)
            if c["waiting"] == 0 and limit is not None and c["slots"] >= limit:
                if heartbeat and c["running"]:
                    lock.release()
                    time.sleep(poll)
                    continue
                break
            before = {t.number for t in trials}
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        finally:
            lock.release()
        if report is not None:
            for t in study.get_trials(deepcopy=False):
                if (
                    t.number not in before
                    and t.state != TrialState.RUNNING
                    and t.user_attrs.get("worker") == this_worker()
                ):
                    report(t)


def worker_command(sweep: Sweep, opts: RunOptions, index: int) -> list[str]:
    cmd = [sys.executable, "-m", "cvae.cli", "sweep", "run", str(sweep.path), "--workers", "1"]
    cmd += ["--study", sweep.study, "--dir", str(sweep.out_dir), "--worker-index", str(index), "--quiet"]
    if opts.n_trials is not None:
        cmd += ["--n-trials", str(opts.n_trials)]
    if opts.timeout is not None:
        cmd += ["--timeout", str(opts.timeout)]
    return cmd


def run_workers(sweep: Sweep, opts: RunOptions, workers: int, console) -> int:
    """K worker processes on this machine, each optimizing the shared study; returns an exit code.
    Prints one line per finished trial. Ctrl-C reaches every worker (one process group): each
    records its trial as interrupted, to resume on the next run."""
    import subprocess

    study = prepare(sweep, opts.url, console)
    env = dict(os.environ)
    env[STORAGE_ENV] = opts.url  # not on the command line: it may hold a password
    # Share the cores: a worker per core is faster than K workers each using all cores.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    procs = [subprocess.Popen(worker_command(sweep, opts, i), env=env) for i in range(workers)]
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while True:
            done = all(p.poll() is not None for p in procs)
            for t in study.get_trials(deepcopy=False):
                if t.state.is_finished() and t.number not in seen:
                    seen.add(t.number)
                    console.print(trial_line(t), markup=False)
            if done:
                break
            time.sleep(1)
    except KeyboardInterrupt:
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.terminate()
        raise
    codes = [p.returncode for p in procs]
    return next((c for c in codes if c != 0), 0)


def trial_line(t) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
    epochs = t.user_attrs.get("epochs_done")
    ep = f", {epochs} epochs" if epochs is not None else ""
    state = t.state.name
    if state == "COMPLETE":
        what = f"{_fmt(t.value)}{ep}"
    elif state == "PRUNED":
        what = f"pruned{ep}"
    else:
        what = f"{state.lower()}: {t.user_attrs.get('fail_reason', 'no reason recorded')}"
    dur = f" ({t.duration.total_seconds():.0f} s)" if t.duration is not None else ""
    return f"trial {t.number}: {params} -> {what}{dur}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- status / best


def status(study) -> dict[str, Any]:
    """Trials by state, the best trial, and the running trials with their epoch."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        counts[t.state.name] += 1
    out: dict[str, Any] = {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "n_trials": len(trials),
    }
    out["states"] = counts
    out["replaced"] = sorted(superseded(trials))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    out["best"] = None
    if complete:
        b = study.best_trial
        out["best"] = {"number": b.number, "value": b.value, "params": b.params, "run_dir": b.user_attrs.get("run_dir")}
    out["epochs_spent"] = sum(
        int(t.user_attrs.get("epochs_done", 0)) for t in trials if t.number not in out["replaced"]
    )
    running = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        epoch, total = _progress(t)
        running.append(
            {
                "number": t.number,
                "params": t.params,
                "epoch": epoch,
                "epochs": total,
                "run_dir": t.user_attrs.get("run_dir"),
                "worker": t.user_attrs.get("worker"),
            }
        )
    out["running"] = running
    out["failed"] = [
        {"number": t.number, "reason": t.user_attrs.get("fail_reason", "worker died (heartbeat)")}
        for t in trials
        if t.state == TrialState.FAIL
    ]
    return out


def _progress(t) -> tuple[int | None, int | None]:
    """Epochs done and planned of a running trial, from its run folder (else its reports)."""
    run_dir = t.user_attrs.get("run_dir")
    if run_dir and Path(run_dir).is_dir():
        total = None
        spec_file = Path(run_dir) / "spec.yaml"
        if spec_file.exists():
            with contextlib.suppress(Exception):
                total = yaml.safe_load(spec_file.read_text())["train"]["epochs"]
        return len(epoch_rows(Path(run_dir))), total
    steps = list(t.intermediate_values)
    return (max(steps) if steps else 0), None


def best_spec_yaml(study) -> str:
    """The best trial's values merged into the sweep's base spec: a ready spec file."""
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        raise SpecError(f"study {study.study_name!r} has no complete trial yet")
    base = study.user_attrs.get("base_spec")
    if base is None:
        raise SpecError(f"study {study.study_name!r} was not made by cvae sweep run (no base spec stored)")
    b = study.best_trial
    data = apply_overrides(base, b.params)
    data["name"] = f"{data.get('name', 'experiment')}-best"
    spec = validate(data, f"best trial {b.number}")
    header = (
        f"# Best trial {b.number} of study {study.study_name}: {_fmt(b.value)} "
        f"({study.user_attrs.get('objective', {}).get('metric', 'objective')}).\n"
        f"# Sweep file: {study.user_attrs.get('sweep_file', '?')}; values found:\n"
        + "".join(f"#   {k}: {v}\n" for k, v in b.params.items())
    )
    return header + dump_yaml(spec)


# --------------------------------------------------------------------------- W&B export

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
    config: dict[str, Any] = {
        "name": sweep.study,
        "method": _METHOD[s.sampler.type],
        "metric": {"name": s.objective.metric, "goal": s.objective.direction},
        "parameters": params,
    }
    if s.pruner.type != "none":
        eta = s.pruner.reduction_factor if s.pruner.type == "hyperband" else 3
        config["early_terminate"] = {"type": "hyperband", "min_iter": s.pruner.min_resource, "eta": eta}
    # A folder per agent run: several runs of one sweep on a machine must not share runs/<name>.
    run_dir = "--run-dir=runs/wandb-sweeps/${envvar:WANDB_SWEEP_ID}/${envvar:WANDB_RUN_ID}"
    config["command"] = ["${env}", "cvae", "train", base, run_dir, "${args}"]
    return config


def wandb_sweep_yaml(sweep: Sweep, cwd: Path | None = None) -> str:
    s = sweep.spec
    notes = []
    if s.sampler.type == "cmaes":
        notes.append("# W&B has no CMA-ES: exported as bayes.\n")
    if s.objective.epoch == "last":
        notes.append("# W&B scores a run by its summary value of the metric (for val/psnr: the best epoch).\n")
    header = (
        f"# W&B sweep config exported from {sweep.path.as_posix()} by `cvae sweep export-wandb`; regenerate it,\n"
        "# do not edit. Use: wandb sweep THIS_FILE, then wandb agent ENTITY/PROJECT/SWEEP_ID, from the folder it\n"
        "# was exported in (the repository root: the base spec path is relative to it).\n"
    )
    return header + "".join(notes) + yaml.safe_dump(wandb_sweep_config(sweep, cwd), sort_keys=False)
