"""The sweep file: schema, loading and checks, and the spec of one trial.

A sweep file (``sweeps/*.yaml``) names a base experiment spec, fixed overrides, a search space
over dotted spec keys, the objective, the sampler, the pruner, the budget and a seed. It is
checked like a spec, before anything runs: unknown keys are errors with a did-you-mean, a
searched key that is not a spec key is named, and every bound and choice is tried on the base
spec, so a bound that makes an invalid spec fails with the spec's own rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cvae.errors import SpecError
from cvae.spec import (
    all_keys,
    apply_overrides,
    did_you_mean,
    file_layers,
    format_validation,
    load_spec_dict,
    origins,
    validate_spec,
)

# Metrics written on epoch rows of history.jsonl that an objective may use.
METRICS = ("val/psnr", "val/mse", "val/psnr_shifted_pose", "epoch/loss", "epoch/mse", "epoch/kl")


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


class Enqueued(_Strict):
    name: str = Field(min_length=1, description="What the point is, shown beside its trial (`template scaled`).")
    params: dict[str, Any] = Field(description="A value for every searched key.")


class SweepSpec(_Strict):
    base: str = Field(description="The base experiment spec, relative to the sweep file.")
    overrides: dict[str, Any] = Field({}, description="Dotted spec keys fixed for every trial.")
    search: dict[str, Param] = Field(description="Dotted spec key -> distribution.")
    objective: ObjectiveSpec = ObjectiveSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    budget: BudgetSpec = BudgetSpec()
    seed: int = Field(
        0, ge=0, description="Sampler seed; worker i of a run adds 1000 i plus the trials already in the study."
    )
    study: str | None = Field(None, description="Study name; null: the sweep file's name.")
    out_dir: str | None = Field(None, description="Sweep folder; null: runs/sweeps/<study>.")
    storage: str | None = Field(None, description="Optuna storage URL; null: a journal file in the sweep folder.")
    artifacts: str | None = Field(
        None,
        description="Folder of the trials' media for optuna-dashboard; null: <sweep folder>/artifacts. With a "
        "storage shared by several machines: a folder every machine reaches at the same path.",
    )
    heartbeat: HeartbeatSpec = HeartbeatSpec()
    enqueue: list[Enqueued] = Field(
        [], description="Points of the space tried first, in order (the base, the template's schedules scaled...)."
    )

    @model_validator(mode="after")
    def _budget(self) -> SweepSpec:
        if self.budget.n_trials is None and self.budget.timeout is None and self.sampler.type != "grid":
            raise ValueError("budget needs n_trials, timeout or both")
        if not self.search:
            raise ValueError("search is empty: name at least one spec key to search")
        return self


_PARAM_FIELDS = set(FloatParam.model_fields) | set(IntParam.model_fields) | set(CategoricalParam.model_fields)


def _unknown_keys(data: dict[str, Any], source: str) -> tuple[list[str], dict[str, Any]]:
    """Every unknown key of the sweep file, with a did-you-mean (pydantic's own message names none),
    and the file's data without them (so the rest is still checked)."""
    problems: list[str] = []

    def walk(d: Any, model: type[BaseModel], prefix: str) -> Any:
        if not isinstance(d, dict):
            return d
        names, kept = list(model.model_fields), {}
        for key, value in d.items():
            if key not in model.model_fields:
                hint = did_you_mean(f"{prefix}{key}", [f"{prefix}{n}" for n in names])
                problems.append(f"{source}: unknown key `{prefix}{key}`{hint}")
                continue
            ann = model.model_fields[key].annotation
            kept[key] = (
                walk(value, ann, f"{prefix}{key}.") if isinstance(ann, type) and issubclass(ann, BaseModel) else value
            )
        return kept

    kept = walk(data, SweepSpec, "")
    for key, param in (kept.get("search") or {}).items():
        if isinstance(param, dict):
            for k in list(param):
                if k not in _PARAM_FIELDS:
                    hint = did_you_mean(k, sorted(_PARAM_FIELDS))
                    problems.append(f"{source}: search.{key}: unknown key `{k}`{hint}")
                    param = {kk: vv for kk, vv in param.items() if kk != k}
            kept["search"] = {**kept["search"], key: param}
    return problems, kept


def raise_all(path: Path, problems: list[str]) -> None:
    """One SpecError naming every problem found (each already names the file)."""
    if len(problems) == 1:
        raise SpecError(problems[0])
    if problems:
        raise SpecError(
            f"{path}: {len(problems)} problems: " + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        )


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: the checked model plus what it resolves to."""

    spec: SweepSpec
    path: Path
    base_path: Path
    base: dict[str, Any]  # the base spec dict with the sweep's overrides applied (unvalidated tree)
    study: str
    out_dir: Path
    origins: dict[str, str]  # which file (or the sweep's overrides) set each key of ``base``

    @property
    def trials_dir(self) -> Path:
        return self.out_dir / "trials"

    def base_spec(self):
        """The base spec with the sweep's overrides, validated."""
        return validate_spec(self.base, str(self.base_path))

    def epochs(self) -> int:
        return self.base_spec().train.epochs

    def check_data(self) -> None:
        """A base spec whose data.root is missing (and not asked to be generated) or not a Lab4 dataset
        is bad input before the first trial, not once per trial."""
        from cvae.data.root import check_request

        check_request(self.base_spec(), self.origins)


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
    problems, kept = _unknown_keys(data, str(path))  # all of a file's mistakes at once, not one per run
    try:
        sweep = SweepSpec.model_validate(kept)
    except ValidationError as e:
        raise_all(path, [*problems, *format_validation(e, str(path), kept).splitlines()])

    base_path = path.parent / sweep.base
    layers = file_layers(base_path)
    base = load_spec_dict(base_path)
    try:
        base = apply_overrides(base, sweep.overrides)
    except SpecError as e:
        raise_all(path, [*problems, f"{path}: overrides: {e}"])
    _check_search(sweep, base, path, problems)
    name = study or sweep.study or path.stem
    out = Path(out_dir) if out_dir is not None else Path(sweep.out_dir or Path("runs") / "sweeps" / name)
    return Sweep(sweep, path, base_path, base, name, out, origins([*layers, (f"{path} overrides", sweep.overrides)]))


def _check_search(sweep: SweepSpec, base: dict[str, Any], path: Path, problems: list[str]) -> None:
    """Every searched key is a spec key of the right type, every bound and enqueued point gives a
    valid spec: all the problems found (after ``problems``, found before), in one SpecError."""
    leaves = all_keys()
    try:
        validate_spec(base, f"{path}: base spec {sweep.base} with the overrides")
    except SpecError as e:
        raise_all(path, [*problems, str(e)])
    problems = list(problems)

    def valid(data: dict[str, Any], what: str) -> bool:
        try:
            validate_spec(data, "spec")
            return True
        except SpecError as e:
            problems.append(f"{what}: {str(e).replace('spec: ', '')}")
            return False

    for key, p in sweep.search.items():
        if key not in leaves:
            problems.append(f"{path}: search: `{key}` is not a key of the spec{did_you_mean(key, sorted(leaves))}")
            continue
        if key in sweep.overrides:
            problems.append(f"{path}: `{key}` is both fixed in overrides and searched")
        if isinstance(p, FloatParam) and leaves[key].annotation is int:
            problems.append(f"{path}: search.{key}: `{key}` is an integer setting; use type: int")
            continue
        for v in p.choices if isinstance(p, CategoricalParam) else [p.low, p.high]:
            if not valid(
                apply_overrides(base, {key: v}), f"{path}: search.{key}: the value {v!r} gives an invalid spec"
            ):
                break
        if sweep.sampler.type == "grid" and isinstance(p, FloatParam) and p.step is None:
            problems.append(f"{path}: search.{key}: the grid sampler needs a step for float ranges")
    if sweep.budget.n_trials is not None and len(sweep.enqueue) > sweep.budget.n_trials:
        problems.append(
            f"{path}: enqueue holds {len(sweep.enqueue)} points, more than budget.n_trials ({sweep.budget.n_trials})"
        )
    for i, point in enumerate(sweep.enqueue):
        where = f"{path}: enqueue[{i}] ({point.name})"
        missing, extra = sorted(sweep.search.keys() - point.params.keys()), sorted(point.params.keys() - sweep.search)
        if missing or extra:
            problems.append(f"{where}: params must give every searched key; missing {missing}, not searched {extra}")
            continue
        outside = [f"{key} {v!r}" for key, v in point.params.items() if not _in_space(sweep.search[key], v)]
        if outside:
            problems.append(f"{where}: {', '.join(outside)} is outside its search range")
        elif all(k in leaves for k in point.params):
            valid(apply_overrides(base, point.params), f"{where}: gives an invalid spec")
    if sweep.objective.metric not in METRICS:
        hint = did_you_mean(sweep.objective.metric, list(METRICS))
        problems.append(f"{path}: objective.metric {sweep.objective.metric!r} is not one of {', '.join(METRICS)}{hint}")
    if sweep.sampler.type == "cmaes":
        cats = [k for k, p in sweep.search.items() if isinstance(p, CategoricalParam)]
        if cats:
            problems.append(f"{path}: sampler cmaes searches numbers only; {', '.join(cats)} is categorical")
    raise_all(path, problems)


def _in_space(p: FloatParam | IntParam | CategoricalParam, v: Any) -> bool:
    if isinstance(p, CategoricalParam):
        return v in p.choices
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(p, IntParam) and not isinstance(v, int)):
        return False
    if p.step is not None and abs((v - p.low) / p.step - round((v - p.low) / p.step)) > 1e-9:
        return False  # between the steps the sampler would take
    return p.low <= v <= p.high


def grid_values(p: FloatParam | IntParam | CategoricalParam) -> list[Any]:
    if isinstance(p, CategoricalParam):
        return list(p.choices)
    if isinstance(p, IntParam):
        return list(range(p.low, p.high + 1, p.step))
    n = int(math.floor((p.high - p.low) / p.step + 1e-9))
    return [round(p.low + i * p.step, 12) for i in range(n + 1)]


def trial_spec_dict(sweep: Sweep, params: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return apply_overrides(sweep.base, {**params, **(extra or {})})


def budget(sweep: Sweep, n_trials: int | None) -> int | None:
    """Trials in the study in all: ``--n-trials``, else the file's budget; a grid runs each point once."""
    n = n_trials if n_trials is not None else sweep.spec.budget.n_trials
    if sweep.spec.sampler.type == "grid":
        size = math.prod(len(grid_values(p)) for p in sweep.spec.search.values())
        n = size if n is None else min(n, size)
    return n
