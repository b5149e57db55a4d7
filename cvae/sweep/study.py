"""The Optuna side of a sweep: storages, sampler, pruner, the study, and what it holds.

Storages: a journal file in the sweep folder by default (safe for many processes on one
machine); ``sqlite:///`` and ``postgresql://`` URLs are RDB storages with a heartbeat: a trial
whose worker died is failed and retried, resuming from its run folder's last checkpoint.
URLs and study names are the ones the ``optuna`` CLI and optuna-dashboard take.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import yaml

from cvae.errors import SpecError, UserError
from cvae.redact import redact
from cvae.spec import apply_overrides, dump_yaml, validate_spec
from cvae.sweep.file import CategoricalParam, FloatParam, HeartbeatSpec, IntParam, Sweep, grid_values, load_sweep
from cvae.terminal import fmt

JOURNAL_NAME = "optuna.journal"
STORAGE_ENV = "CVAE_SWEEP_STORAGE"  # the storage URL handed to worker processes (not on argv)
BASE_SPEC_FILE = "base_spec.yaml"  # in the sweep folder: the base spec with the sweep's overrides, a spec file
# The same spec as JSON in the study's system attributes (which `optuna studies` does not print), for
# `cvae sweep best` on any machine that reaches the storage; the user attribute `base_spec_file` names the
# file. Studies made before kept the spec in the user attribute `base_spec`.
BASE_SPEC_ATTR = "cvae:base_spec"


def storage_url(sweep: Sweep, storage: str | None) -> str:
    """The storage to use: --storage, else the workers' environment, else the sweep file's, else the
    journal in the sweep folder."""
    return storage or os.environ.get(STORAGE_ENV) or sweep.spec.storage or str(sweep.out_dir / JOURNAL_NAME)


def resolve(
    sweep_file: Path | None, storage: str | None, study: str | None, out_dir: Path | None
) -> tuple[str, str, Sweep | None]:
    """(storage URL, study name, Sweep or None) from a sweep file and/or ``--storage``/``--study``:
    what every ``cvae sweep`` command that reads a study takes."""
    if sweep_file is not None:
        sweep = load_sweep(sweep_file, study, out_dir)
        return storage_url(sweep, storage), sweep.study, sweep
    if storage is None:
        raise UserError("give a SWEEP file, or --storage URL (and --study NAME)")
    if study is None:
        import optuna

        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage))]
        if len(names) != 1:
            raise UserError(f"--study NAME needed: the storage holds {len(names)} studies ({', '.join(names)})")
        study = names[0]
    return storage, study, None


def is_rdb(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "postgres", "mysql")


def open_storage(url: str, heartbeat: HeartbeatSpec | None = None):
    """An Optuna storage for a URL (RDB, with the heartbeat and retry) or a journal file path."""
    import optuna

    if is_rdb(url):
        url = "postgresql" + url[len("postgres") :] if url.startswith("postgres:") else url
        hb = heartbeat or HeartbeatSpec()
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        with quiet_experimental():
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
def quiet_experimental():
    """Optuna's ExperimentalWarning for the heartbeat and samplers we use on purpose."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_sampler(sweep: Sweep, seed: int):
    import optuna

    s = sweep.spec.sampler
    with quiet_experimental():
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
    if not {"base_spec_file", "base_spec"} & study.user_attrs.keys():  # new: its points, then a made one's marks
        for point in sweep.spec.enqueue:
            study.enqueue_trial(point.params, user_attrs={"label": point.name})
        # optuna-dashboard and the `optuna` CLI show the metric's name, not "Objective 0"
        with quiet_experimental():
            study.set_metric_names([sweep.spec.objective.metric])
        study.set_user_attr("sweep_file", str(sweep.path))
        o = sweep.spec.objective  # one short line: `optuna studies` prints every attribute in its table
        study.set_user_attr("objective", f"{o.metric}, {o.epoch} epoch")
        study._storage.set_study_system_attr(study._study_id, BASE_SPEC_ATTR, sweep.base)
        study.set_user_attr("base_spec_file", str(write_base_spec(sweep).resolve()))
        from cvae.sweep.dashboard import study_note

        study_note(study, sweep)  # the base spec as YAML on the study's page in optuna-dashboard
    return study


def write_base_spec(sweep: Sweep) -> Path:
    """``<sweep folder>/base_spec.yaml``: the spec every trial starts from, a file ``cvae train`` takes."""
    path = sweep.out_dir / BASE_SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# The base spec of study {sweep.study}: {sweep.base_path} with the overrides of {sweep.path}.\n"
        "# Every trial trains it with the trial's values (written when the study was made).\n"
    )
    path.write_text(header + yaml.safe_dump(sweep.base, sort_keys=False))
    return path


def stored_base_spec(study) -> dict[str, Any] | None:
    """The base spec the study was made with (None: not a study `cvae sweep run` made)."""
    base = study._storage.get_study_system_attrs(study._study_id).get(BASE_SPEC_ATTR)
    if base is None:
        base = study.user_attrs.get("base_spec")  # a study made before the spec moved out of the user attributes
    return base


def load_study(url: str, study: str):
    import optuna

    try:
        return optuna.load_study(study_name=study, storage=open_storage(url))
    except KeyError:
        raise SpecError(f"no study {study!r} in storage {redact(url)}") from None


def suggest(trial, key: str, p: FloatParam | IntParam | CategoricalParam) -> Any:
    if isinstance(p, FloatParam):
        return trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
    if isinstance(p, IntParam):
        return trial.suggest_int(key, p.low, p.high, log=p.log, step=p.step)
    return trial.suggest_categorical(key, p.choices)


# --------------------------------------------------------------------------- replaced trials


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
    retried = trial.system_attrs.get("retry_history")
    if retried:
        return int(retried[-1])
    src = trial.user_attrs.get("resume_of")
    return None if src is None else int(src)


def best_spec_yaml(study) -> str:
    """The best trial's values merged into the sweep's base spec: a ready spec file."""
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        raise SpecError(f"study {study.study_name!r} has no complete trial yet")
    base = stored_base_spec(study)
    if base is None:
        raise SpecError(f"study {study.study_name!r} was not made by cvae sweep run (no base spec stored)")
    b = study.best_trial
    data = apply_overrides(base, b.params)
    data["name"] = f"{data.get('name', 'experiment')}-best"
    spec = validate_spec(data, f"best trial {b.number}")
    header = (
        f"# Best trial {b.number} of study {study.study_name}: {fmt(b.value)} "
        f"({(study.metric_names or ['objective'])[0]}).\n"
        f"# Sweep file: {study.user_attrs.get('sweep_file', '?')}; values found:\n"
        + "".join(f"#   {k}: {v}\n" for k, v in b.params.items())
    )
    return header + dump_yaml(spec)
