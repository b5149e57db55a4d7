"""What optuna-dashboard shows of a sweep: each finished trial's validation GIF and per-frame PSNR plot
as Optuna artifacts, a Note on its page (its score beside the trivial references and the
shifted-pose rollout, its run folder and W&B run), the base spec as the study's Note, and the server.

Artifacts live in a file-system store, ``<sweep folder>/artifacts`` unless the sweep file's
``artifacts`` names another folder: with a ``postgresql://`` storage shared by several machines it
must be a folder every machine reaches at the same path (a shared file system), or the trials of
other machines show no media. optuna-dashboard reads its Notes from the study's system attributes,
where ``optuna_dashboard.save_note`` puts them.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

import yaml

from cvae import run_folder
from cvae.errors import UserError
from cvae.history import REFERENCE_NAMES
from cvae.tracking.wandb_run import RUN_ID_FILE, RUN_URL_FILE


def artifact_dir(sweep) -> Path:
    return Path(sweep.spec.artifacts) if sweep.spec.artifacts else sweep.out_dir / "artifacts"


def artifact_store(folder: Path):
    from optuna.artifacts import FileSystemArtifactStore

    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def publish_trial(
    trial, folder: Path, run_dir: Path, row: dict[str, Any], metric: str, pruned_after: int | None = None
) -> None:
    """Upload the trial's GIF and plot of its scored epoch (``row``) and write its Note; ``trial`` is
    the running Trial (Optuna takes artifacts of unfinished trials only); ``pruned_after``: the epoch
    after which the pruner stopped it."""
    import optuna_dashboard
    from optuna.artifacts import upload_artifact

    store = artifact_store(folder)
    epoch = row["epoch"]
    study_id = trial.storage.get_study_id_from_name(trial.study.study_name)
    links = []
    gif = run_dir / "media" / f"val_epoch{epoch:03d}.gif"
    if not gif.is_file():  # media of the best epoch only (tracking.media: end) where another epoch scores
        gif = max((run_dir / "media").glob("val_epoch*.gif"), default=gif)
    for label, path in (
        ("validation rollout", gif),
        ("per-frame PSNR", run_dir / "plots" / "val_psnr.png"),
    ):
        if path.is_file():
            aid = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
            links.append(f"![{label}](/artifacts/{study_id}/{trial._trial_id}/{aid})")
    optuna_dashboard.save_note(trial, trial_note(trial.number, run_dir, row, metric, links, pruned_after))


def trial_note(
    number: int, run_dir: Path, row: dict[str, Any], metric: str, media: list[str], pruned_after: int | None = None
) -> str:
    """The Markdown of a trial's Note."""
    lines = [f"**{metric} {row[metric]:.2f}** at epoch {row['epoch']} (trial {number})", ""]
    if pruned_after is not None:
        lines[:1] = [
            f"**Pruned** after epoch {pruned_after} (trial {number}): the pruner stopped it there, so its score "
            f"is of the epochs it trained: **{metric} {row[metric]:.2f}** at epoch {row['epoch']}"
        ]
    if metric == "val/psnr":
        lines += ["| predictor | mean PSNR (dB) |", "|---|---|", f"| this trial | {row[metric]:.2f} |"]
        for key, name in REFERENCE_NAMES.items():
            if isinstance(row.get(key), int | float):
                what = "the same model, poses shifted in time" if key.endswith("shifted_pose") else name
                lines.append(f"| {what} | {row[key]:.2f} |")
        lines.append("")
    lines.append(f"Run folder: `{run_dir.resolve()}`  ")
    info = run_info(run_dir)
    run_id, url = info.get("wandb_run_id"), info.get("wandb_url")
    if url:
        lines.append(f"W&B run: [{run_id}]({url})")
    elif run_id:
        lines.append(f"W&B run: `{run_id}`, offline (upload: `cvae sync {run_dir.resolve()}`)")
    return "\n".join(lines + ["", *media]) + "\n"


def study_note(study, sweep) -> None:
    """The study's Note: the sweep file, the objective and the base spec as YAML (the same as the
    sweep folder's base_spec.yaml, which the study's ``base_spec_file`` attribute names)."""
    import optuna_dashboard

    o = sweep.spec.objective
    body = (
        f"Sweep file `{sweep.path}`; objective: {o.direction} {o.metric} ({o.epoch} epoch of each trial).\n\n"
        f"Base spec (`{sweep.base_path}` with the sweep's overrides):\n\n```yaml\n"
        + yaml.safe_dump(sweep.base, sort_keys=False)
        + "```\n"
    )
    optuna_dashboard.save_note(study, body)


def check_port(host: str, port: int) -> None:
    """A port another program listens on is bad input, said before the server starts."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"--port {port}: already in use on {host}; choose another with --port") from None
            raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None


def serve(storage, folder: Path | None, host: str, port: int) -> None:
    """optuna-dashboard on ``host:port`` for ``storage``, with the sweep's artifacts when it has any."""
    import optuna_dashboard

    check_port(host, port)
    store = artifact_store(folder) if folder is not None and folder.is_dir() else None
    try:
        optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)
    except OSError as e:  # the port was taken between the check and the server's start
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port}: already in use on {host}; choose another with --port") from None
        raise


def run_info(run_dir: Path) -> dict[str, Any]:
    """What a trial records about its run: the W&B run (id, URL when online) and the device it trained on."""
    out: dict[str, Any] = {}
    for key, name in (("wandb_run_id", RUN_ID_FILE), ("wandb_url", RUN_URL_FILE)):
        if (run_dir / name).is_file():
            out[key] = (run_dir / name).read_text().strip()
    device = run_folder.read_summary(run_dir).get("device")
    if device:
        out["device"] = device
    return out
