"""Weights & Biases tracker: one W&B run per run folder, offline by default.

The W&B files live inside the run folder (``RUN/wandb/...``) and the run id in
``RUN/wandb_run_id.txt``, so ``cvae train --resume RUN`` continues the same W&B run and
``wandb sync RUN/wandb`` uploads it later. W&B is a side channel: any W&B failure warns once and
turns this tracker into a no-op; training (and the local history) goes on.

``wandb`` is imported inside methods only: importing this module costs nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import sys
import warnings
from pathlib import Path
from typing import Any

from cvae import history
from cvae.redact import redact
from cvae.run_folder import run_name
from cvae.spec import flatten
from cvae.tracking.tracker import Tracker
from cvae.tracking.wandb_files import last_logged_step

DEFAULT_PROJECT = "cvae-sweeps"
DEFAULT_JOB_TYPE = "train"  # sweeps set trial, confirm and reproduce (cvae/sweep/, cvae/runs/reproduce.py)
RUN_ID_FILE = "wandb_run_id.txt"
RUN_URL_FILE = "wandb_run_url.txt"  # online runs only: where the run is on the W&B server
LOG_MODEL = ("best", "all", "none")
PRUNED_TAG = "pruned"
OVERRIDES_KEY = "overrides"  # tracking.wandb.config's `key=value` list of a run's command-line overrides

# W&B's modes and its aliases for them.
_MODES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
    "shared": "shared",
}


# --- config -----------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    """Package versions for the run's config; never imports torch (slow) if nobody has yet."""
    from importlib import metadata

    import wandb

    versions = {"versions.python": sys.version.split()[0], "versions.wandb": wandb.__version__}
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["versions.torch"] = str(getattr(torch, "__version__", "unknown"))
        cuda = getattr(getattr(torch, "version", None), "cuda", None)
        if cuda:
            versions["versions.cuda"] = str(cuda)
    for package in ("torch", "optuna"):
        if f"versions.{package}" not in versions:
            try:
                versions[f"versions.{package}"] = metadata.version(package)
            except metadata.PackageNotFoundError:
                pass
    return versions


def _plain(value: Any) -> Any:
    """Config values W&B stores as they are: paths and other objects become strings."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple, dict)) and not value)


def run_config(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The flat, redacted config a W&B run gets: the spec plus where and with what code it ran.
    ``tracking.wandb.*`` settings left unset (null or empty) stay out: they say nothing about the run."""
    from cvae.code_version import code_version

    flat = {
        k: _plain(v)
        for k, v in flatten(config).items()
        if not k.startswith("tracking.wandb.config") and not (k.startswith("tracking.wandb.") and _empty(v))
    }
    flat["run_dir"] = str(Path(run_dir).resolve())
    if "device" not in flat and "train.device" in flat:
        flat["device"] = flat["train.device"]
    flat.update(_versions())
    code = code_version()
    if code.get("version"):
        flat["versions.cvae_sweeps"] = code["version"]
    if code.get("commit"):  # the commit of cvae-sweeps' own checkout, not of the directory it ran in
        flat["git_commit"] = code["commit"]
        if "dirty" in code:
            flat["git_dirty"] = code["dirty"]
    return redact(flat)


def resolve_mode(mode: str | None) -> str:
    """``None`` -> ``WANDB_MODE`` (or ``WANDB_DISABLED=true``) -> ``offline``; aliases normalised."""
    source = "mode"
    if mode is None:
        if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
            return "disabled"
        mode, source = os.environ.get("WANDB_MODE") or "offline", "WANDB_MODE"
    resolved = _MODES.get(mode.strip().lower())
    if resolved is None:
        raise ValueError(f"W&B {source} {mode!r} is not one of: online, offline, disabled")
    return resolved


# --- the tracker ------------------------------------------------------------------------------


class WandbTracker(Tracker):
    """Logs to one W&B run. Steps: ``train/*`` against the optimizer step (W&B's step);
    ``val/*``, ``epoch/*`` and ``perf/*`` against ``epoch`` (send ``epoch`` in the same row).
    The summary of ``val/psnr`` is its maximum over the run (``{"max": x}`` in W&B's files).
    """

    def __init__(
        self,
        mode: str | None = "offline",
        project: str | None = None,
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
        notes: str | None = None,
        console: Any = None,
        extra_config: dict[str, Any] | None = None,
        log_model: str = "best",
    ) -> None:
        if log_model not in LOG_MODEL:
            raise ValueError(f"log_model must be one of {', '.join(LOG_MODEL)}, got {log_model!r}")
        self.log_model_policy = log_model
        self._model_logged: dict[str, Any] | None = None  # the metadata of the version logged last
        self.mode = resolve_mode(mode)
        self.project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.entity = entity  # None: wandb reads WANDB_ENTITY itself
        # Free text the spec passes to W&B: passwords in URLs are masked as in the config.
        self.group = redact(group)
        self.job_type = redact(job_type) or DEFAULT_JOB_TYPE
        self.tags = redact(list(tags)) if tags else None
        self.name = redact(name)
        self.notes = redact(notes)
        self.extra_config = dict(extra_config or {})
        self.console = console
        self.run_dir: Path | None = None
        self.run_id: str | None = None
        self._set_data_dir = False  # WANDB_DATA_DIR set by this tracker, unset when it finishes
        self.error: str | None = None  # set by the first failure; the tracker is a no-op after it
        self._run: Any = None
        # Smallest step the next row may use: W&B drops rows whose step goes backwards.
        self._min_step = 0

    @property
    def active(self) -> bool:
        return self._run is not None and self.error is None

    # -- failure handling

    def _fail(self, what: str, exc: BaseException) -> None:
        """Warn once, then stop talking to W&B for the rest of the run."""
        if self.error is not None:
            return
        self.error = f"{what}: {type(exc).__name__}: {exc}"
        where = f" (run folder {self.run_dir})" if self.run_dir is not None else ""
        message = f"W&B tracking is off for the rest of this run{where}: {self.error}. Training goes on."
        if self.console is not None:
            try:
                self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)
                return
            except Exception:
                pass
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    # -- Tracker interface

    def start(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        if self.mode == "disabled" or self.error is not None:
            return
        self.run_dir = Path(run_dir)
        try:
            self._start(self.run_dir, config, resume)
        except Exception as exc:
            self._fail("starting the W&B run failed", exc)

    def _start(self, run_dir: Path, config: dict[str, Any], resume: bool) -> None:
        import wandb

        # Create the W&B folder ourselves: an unusable one fails here, with a plain message.
        wandb_dir = run_dir / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(wandb_dir, os.W_OK):
            raise PermissionError(f"{wandb_dir} is not writable")
        # W&B stages the files of logged tables (the per-frame PSNR) under $WANDB_DATA_DIR, else the
        # user's home, and its records point there: keep them in the run folder, so a folder copied
        # to another machine still holds every file it refers to. A WANDB_DATA_DIR of the user's wins.
        if "WANDB_DATA_DIR" not in os.environ:
            os.environ["WANDB_DATA_DIR"] = str(wandb_dir.resolve())
            self._set_data_dir = True

        # The run folder's W&B run, whenever it has one: a run resumed before its first checkpoint trains
        # from the start but stays the same W&B run (a fresh run folder has no id file).
        id_file = run_dir / RUN_ID_FILE
        run_id = None
        if id_file.exists():
            run_id = id_file.read_text().strip() or None
            if run_id:
                # Rows after a resume must come after every row already written.
                last = last_logged_step(run_dir, run_id)
                self._min_step = last + 1 if last is not None else 0
        if run_id is None:
            run_id = os.environ.get("WANDB_RUN_ID") or _new_run_id()

        # Under a sweep agent (WANDB_SWEEP_ID), wandb.init replaces config values with the
        # agent's parameters and uses the agent's run id; both are fine here.
        # W&B keeps the command line (sys.argv) in the run's metadata: mask URL passwords in it.
        argv = sys.argv[:]
        sys.argv[1:] = [redact(a) for a in argv[1:]]
        try:
            run = wandb.init(
                # Absolute: the process that writes the logs (wandb-core) may not share our working
                # folder. A child of a process that already used W&B inherits WANDB_SERVICE and logs
                # through its parent's wandb-core, which would resolve a relative folder against its
                # own and write nothing here.
                dir=str(run_dir.resolve()),
                mode=self.mode,
                project=self.project,
                entity=self.entity,
                group=self.group,
                job_type=self.job_type,
                tags=self.tags,
                name=self.name or run_name(None, run_dir),
                notes=self.notes,
                config=run_config({**config, **self.extra_config}, run_dir),
                id=run_id,
                resume="allow",
                # Each tracker owns its run: never hand back (or finish) another tracker's run.
                reinit="create_new",
                settings=wandb.Settings(silent=True),
            )
        finally:
            sys.argv[:] = argv
        self._run = run
        self.run_id = run.id
        id_file.write_text(run.id + "\n")
        if self.mode == "online" and getattr(run, "url", None):
            (run_dir / RUN_URL_FILE).write_text(run.url + "\n")
        # Online resumes know the server's next step.
        self._min_step = max(self._min_step, int(getattr(run, "starting_step", 0) or 0))

        run.define_metric("epoch")
        run.define_metric("val/*", step_metric="epoch")
        run.define_metric("val/psnr", step_metric="epoch", summary="max")
        run.define_metric("epoch/*", step_metric="epoch")
        run.define_metric("perf/*", step_metric="epoch")
        if resume:
            self._backfill(run_dir)

    def _backfill(self, run_dir: Path) -> None:
        """Log again the rows of ``history.jsonl`` that W&B lost. A SIGKILL loses what wandb-core
        had not yet written (often the whole killed segment); the local history (already cut back
        to the checkpoint by the trainer) is complete, so rows past W&B's last step are re-sent."""
        for row in history.read(run_dir / history.FILE):
            step = row.pop("step", None)
            if isinstance(step, int) and step >= self._min_step:
                self._run.log(row, step=self._step(step))

    def _step(self, step: int) -> int:
        """A step W&B will keep: never below the last one (a late row joins the current row)."""
        step = max(int(step), self._min_step)
        self._min_step = step
        return step

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.active:
            return
        try:
            self._run.log(dict(metrics), step=self._step(step))
        except Exception as exc:
            self._fail("logging metrics failed", exc)

    def log_media(self, key: str, path: Path, step: int) -> None:
        if not self.active:
            return
        try:
            import wandb

            path = Path(path)
            suffix = path.suffix.lower().lstrip(".")
            # A new media object every call: W&B reuses the first file of a re-logged object.
            if suffix in ("gif", "mp4", "webm", "ogg"):
                media = wandb.Video(str(path), format=suffix)
            elif suffix in ("png", "jpg", "jpeg"):
                media = wandb.Image(str(path))
            else:
                raise ValueError(f"cannot log {path.name}: expected .gif, .mp4, .webm, .png or .jpg")
            self._run.log({key: media}, step=self._step(step))
        except Exception as exc:
            self._fail(f"logging media {key!r} failed", exc)

    def log_curve(self, key: str, xs: list[float], ys: list[float], x_name: str, y_name: str, step: int) -> None:
        if not self.active:
            return
        try:
            import wandb

            table = wandb.Table(columns=[x_name, y_name], data=[[x, y] for x, y in zip(xs, ys, strict=True)])
            plot = wandb.plot.line(table, x_name, y_name, title=key)
            self._run.log({key: plot}, step=self._step(step))
        except Exception as exc:
            self._fail(f"logging curve {key!r} failed", exc)

    def log_model(self, path: Path, metadata: dict[str, Any], final: bool) -> None:
        """``tracking.wandb.log_model``: ``all`` logs each best checkpoint as it is written; ``best`` logs
        the run's best once, when it ends (unless that version is logged already)."""
        policy = self.log_model_policy
        if not self.active or policy == "none" or (policy == "best" and not final) or self._model_logged == metadata:
            return
        try:
            self._log_artifact(Path(path), metadata)
            self._model_logged = dict(metadata)
        except Exception as exc:
            self._fail("logging the model artifact failed", exc)

    def _log_artifact(self, path: Path, metadata: dict[str, Any]) -> None:
        import wandb

        run = self._run.name or "run"
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", run if run.endswith(str(self.run_id)) else f"{run}-{self.run_id}")
        artifact = wandb.Artifact(name, type="model", metadata=_plain(redact(metadata)))
        artifact.add_file(str(path), name=path.name)  # copied into W&B's staging folder: later writes do not touch it
        self._run.log_artifact(artifact, aliases=["best", "latest"])

    def summary(self, values: dict[str, Any]) -> None:
        if not self.active:
            return
        try:
            for k, v in values.items():
                self._run.summary[k] = v
        except Exception as exc:
            self._fail("setting the summary failed", exc)

    def finish(self, status: str = "finished", reason: str | None = None) -> None:
        run, self._run = self._run, None
        try:
            self._finish(run, status, reason)
        finally:
            if self._set_data_dir:
                os.environ.pop("WANDB_DATA_DIR", None)
                self._set_data_dir = False

    def _finish(self, run, status: str, reason: str | None) -> None:
        if run is None:
            return
        if self.error is not None:
            # Close what is left quietly (the warning was given already), saying why it stopped.
            try:
                run.summary["status"] = status
                run.summary["tracker_error"] = self.error
                run.finish(exit_code=1 if status == "failed" else 0)
            except Exception:
                pass
            return
        try:
            # One vocabulary with summary.json: finished, pruned, stopped (all W&B "finished", exit 0)
            # or failed (exit 1, W&B "failed").
            run.summary["status"] = status
            if status == "pruned":  # a tag W&B users filter by
                run.tags = tuple(dict.fromkeys([*run.tags, PRUNED_TAG]))
            if status == "stopped" and (reason or "").startswith("SIGTERM"):
                run.mark_preempting()  # a W&B sweep may requeue it; it resumes with cvae train --resume
            if status == "failed":
                run.summary["failure_reason"] = reason or "unknown"
                run.finish(exit_code=1)
            else:
                run.summary["failure_reason"] = None  # a resumed run that finished: no longer failed
                run.summary["stop_reason"] = reason
                run.finish(exit_code=0)
        except Exception as exc:
            self._fail("finishing the run failed", exc)


def _new_run_id() -> str:
    """8 lower-case letters and digits, like W&B's own ids."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


# --- wiring from a spec -----------------------------------------------------------------------


MAX_TAG = 64  # W&B refuses longer tags


def override_tags(config: dict[str, Any]) -> list[str]:
    """The ``key=value`` overrides a run was started with (``tracking.wandb.config.overrides``, set by
    ``cvae.launch.note_overrides``) as W&B tags; one longer than W&B allows is in the config only."""
    overrides = config.get(OVERRIDES_KEY)
    if not isinstance(overrides, list):
        return []
    return [t for t in overrides if isinstance(t, str) and 0 < len(t) <= MAX_TAG]


def from_spec(spec: Any, console: Any = None) -> WandbTracker:
    """The W&B tracker that ``spec.tracking.wandb`` asks for (W&B env vars fill unset values)."""
    from cvae.errors import SpecError

    w = spec.tracking.wandb
    try:
        return WandbTracker(
            mode=w.mode,
            project=w.project,
            entity=w.entity,
            group=w.group,
            job_type=w.job_type,
            tags=list(dict.fromkeys([*w.tags, *override_tags(w.config)])),
            name=w.name,  # None: the run folder's name (a sweep agent's run: its run id, the folder's name)
            notes=w.notes,
            console=console,
            extra_config=w.config,
            log_model=w.log_model,
        )
    except ValueError as e:
        raise SpecError(f"tracking.wandb.mode: {e}") from None
