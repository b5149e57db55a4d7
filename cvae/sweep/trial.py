"""One Optuna trial: the base spec plus the trial's values, started by the same ``cvae.launch`` as
``cvae train`` into ``<sweep folder>/trials/<trial number>``, reported to the pruner every epoch
that validates, tracked as one W&B run (group = the study, name = the trial number, the study and
the trial's number and values in its config under ``trial.*``, through ``tracking.wandb``).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from cvae import history, run_folder
from cvae.code_version import describe
from cvae.errors import Pruned, Stopped, signals_held
from cvae.history import REFERENCE_NAMES
from cvae.placement import GPU_KEY, given_gpu
from cvae.spec import validate_spec
from cvae.sweep.dashboard import run_info
from cvae.sweep.file import Sweep, trial_spec_dict
from cvae.sweep.study import resume_source, suggest
from cvae.tracking.wandb_run import RUN_ID_FILE

MAX_REASON_CHARS = 2000  # a trial's fail_reason attribute: the message, cut to a readable length


def scored_row(rows: list[dict[str, Any]], metric: str, direction: str, which: str) -> dict[str, Any]:
    """The epoch row that scores a run: the one with the best or the last value of ``metric``."""
    scored = [r for r in rows if isinstance(r.get(metric), int | float)]
    if not scored:
        raise RuntimeError(f"the run logged no {metric} on any epoch")
    if which == "last":
        return scored[-1]
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda r: float(r[metric]))


def record_references(trial, row: dict[str, Any]) -> None:
    """The trivial predictors' and the shifted-pose rollout's PSNR at the scored epoch, on the trial:
    a score below the mean frame (a blur that ignores the pose) is a model that does not animate."""
    refs = {k: float(row[k]) for k in REFERENCE_NAMES if isinstance(row.get(k), int | float)}
    if refs:
        trial.set_user_attr("references", refs)
    if "val/psnr" in row and "val/psnr_mean_frame" in refs:
        trial.set_user_attr("vs_mean_frame", float(row["val/psnr"]) - refs["val/psnr_mean_frame"])


def run_epoch_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch rows of a run folder's history."""
    return history.epoch_rows(history.read(Path(run_dir) / history.FILE))


class PruningCallback:
    """``trial.report(metric, epoch)`` after every epoch that logged the metric; raises ``Pruned``
    when the pruner says so, before the last epoch (after it, pruning would save no training and
    only hide the trial's score from the sampler). A resumed trial first reports the epochs its run
    folder already holds."""

    def __init__(self, trial, metric: str, run_dir: Path, epochs: int | None = None) -> None:
        self.trial, self.metric, self.run_dir, self.epochs = trial, metric, run_dir, epochs
        self.reported: set[int] = set()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """``epoch``: the epoch just finished, counted from 1. A stop that arrives meanwhile waits until
        the storage holds the report."""
        with signals_held():
            self._on_epoch_end(epoch, metrics)

    def _on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self.reported:  # backfill epochs trained before a resume
            for row in run_epoch_rows(self.run_dir):
                if row["epoch"] < epoch and self.metric in row:
                    self._report(float(row[self.metric]), row["epoch"])
        if self.metric not in metrics:
            return
        value = float(metrics[self.metric])
        self._report(value, epoch)
        if epoch != self.epochs and self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", epoch)
            raise Pruned(f"pruned after epoch {epoch}: {self.metric} {value:.4g}")

    def _report(self, value: float, step: int) -> None:
        if step not in self.reported:
            self.trial.report(value, step)
            self.reported.add(step)


def make_objective(sweep: Sweep, study_name: str, lock=None, worker: str = ""):
    """The Optuna objective: one training run per trial. ``lock`` (held while the trial is created)
    is released once the trial exists; ``worker`` is recorded on the trial."""

    def objective(trial) -> float:
        import optuna

        from cvae.launch import launch

        if lock is not None:
            lock.release()  # the trial exists now: other workers may ask for theirs
        run_dir = sweep.trials_dir / str(trial.number)
        # Every write to the shared storage (suggest() records the parameters) is held: a stop waits
        # until it is whole. Only training (and the pruner's callback, itself held) takes stops at once.
        with signals_held():
            params = {key: suggest(trial, key, p) for key, p in sweep.spec.search.items()}
            trial.set_user_attr("run_dir", str(run_dir.resolve()))
            trial.set_user_attr("worker", worker)
            trial.set_user_attr("code_version", describe())  # workers on other machines may run other code
            if (gpu := given_gpu()) is not None:  # the GPU this worker was given (--gpus)
                trial.set_user_attr(GPU_KEY, gpu)
        o = sweep.spec.objective
        try:
            extra = trial_tracking(sweep, study_name, trial.number, params)
            spec = validate_spec(trial_spec_dict(sweep, params, extra), f"trial {trial.number}")
            resume = resume_replaced_trial(sweep, trial, run_dir)
            callbacks = [PruningCallback(trial, o.metric, run_dir, spec.train.epochs)]
            try:
                launch(spec, run_dir, resume=resume, overwrite=True, callbacks=callbacks)
            finally:
                with signals_held():
                    for key, value in run_info(run_dir).items():  # the W&B run and the device, whatever the end
                        trial.set_user_attr(key, value)
            row = scored_row(run_epoch_rows(run_dir), o.metric, o.direction, o.epoch)
            with signals_held():
                record_references(trial, row)
                publish(trial, sweep, run_dir, row, o.metric)
            return float(row[o.metric])
        except Pruned as e:  # the run folder and W&B say pruned; Optuna learns it the way it expects
            with signals_held(), contextlib.suppress(RuntimeError):  # no epoch validated: nothing to show
                row = scored_row(run_epoch_rows(run_dir), o.metric, o.direction, o.epoch)
                publish(trial, sweep, run_dir, row, o.metric, trial.user_attrs.get("pruned_at_epoch"))
            raise optuna.TrialPruned(str(e)) from None
        except KeyboardInterrupt as e:
            how = e.how if isinstance(e, Stopped) else "Ctrl-C"
            with signals_held():  # a SIGTERM after the Ctrl-C (a scheduler's) waits for the record
                trial.set_user_attr("fail_reason", f"interrupted ({how}); resumes on the next `cvae sweep run`")
                trial.set_user_attr("interrupted", True)
            raise
        except Exception as e:
            with signals_held():
                trial.set_user_attr("fail_reason", f"{e.__class__.__name__}: {e}"[:MAX_REASON_CHARS])
            raise
        finally:
            with signals_held(), contextlib.suppress(Exception):
                trial.set_user_attr("epochs_done", len(run_epoch_rows(run_dir)))

    return objective


def trial_tracking(sweep: Sweep, study: str, number: int, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's name, and its W&B run's name, group, job type, tags and config: ``quick-t7`` in group
    ``quick``, job type ``trial``, tagged with the study, the study and trial in its config."""
    tags = list(sweep.base_spec().tracking.wandb.tags)
    return {
        "name": f"{sweep.base.get('name', 'experiment')}-t{number}",
        "tracking.wandb.group": study,
        "tracking.wandb.name": f"{study}-t{number}",
        "tracking.wandb.job_type": "trial",
        "tracking.media": "end",  # the scored epoch's GIF and plot once the trial ends: nothing reads them before
        "tracking.test_at_end": False,  # held-out test videos are confirm's: a search never reads them
        "tracking.wandb.tags": [*tags, study] if study not in tags else tags,
        "tracking.wandb.config": {"trial": {"study": study, "number": number, "params": params}},
    }


def publish(
    trial, sweep: Sweep, run_dir: Path, row: dict[str, Any], metric: str, pruned_after: int | None = None
) -> None:
    """The trial's media and Note for optuna-dashboard; a failure there warns and loses nothing else."""
    import warnings

    from cvae.sweep.dashboard import artifact_dir, publish_trial

    try:
        publish_trial(trial, artifact_dir(sweep), run_dir, row, metric, pruned_after)
    except Exception as e:  # the dashboard's extras must never fail a trial
        warnings.warn(f"trial {trial.number}: optuna-dashboard media not stored: {e}", RuntimeWarning, stacklevel=2)


def resume_replaced_trial(sweep: Sweep, trial, run_dir: Path) -> bool:
    """Whether the trial resumes a replaced trial's run: then its folder is a copy of that one's
    (``launch`` prepares a fresh folder otherwise)."""
    # A running Trial shows no system attrs (where a heartbeat retry is marked): read them
    # from the study's record of it.
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    src = resume_source(frozen)
    if src is not None and src != trial.number:
        source = sweep.trials_dir / str(src)
        if run_folder.checkpoint_path(source).exists() and run_folder.is_run(source):
            if run_dir.exists():
                shutil.rmtree(run_dir)
            shutil.copytree(source, run_dir)
            # The retry is a W&B run of its own (name = its trial number).
            for name in ("wandb", RUN_ID_FILE):
                p = run_dir / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            trial.set_user_attr("resumed_from", src)
            return True
    return False
