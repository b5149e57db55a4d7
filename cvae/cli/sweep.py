"""``cvae sweep ...``: run, inspect and export sweeps (logic in the modules of ``cvae.sweep``).

optuna, torch and wandb are imported inside the commands, so ``cvae --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cvae.cli.common import GpusOpt, QuietOpt, handle_errors
from cvae.errors import Stopped, UserError
from cvae.history import with_unit
from cvae.terminal import Fields, make_console

sweep_app = typer.Typer(
    help="Search spec settings with Optuna (one machine or many), inspect studies, export W&B sweeps.",
    no_args_is_help=True,
)

SweepArg = Annotated[Path, typer.Argument(help="Sweep file (sweeps/*.yaml).")]
OptSweepArg = Annotated[Path | None, typer.Argument(help="Sweep file (or give --storage and --study).")]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        help="Optuna storage: a journal file, sqlite:///FILE or postgresql://USER:PW@HOST/DB "
        "(default: the journal in the sweep folder)."
    ),
]
StudyOpt = Annotated[str | None, typer.Option(help="Study name (default: the sweep file's name).")]
DirOpt = Annotated[Path | None, typer.Option("--dir", help="Sweep folder (default runs/sweeps/<study>).")]


@sweep_app.command("run")
@handle_errors
def run(
    sweep_file: SweepArg,
    n_trials: Annotated[
        int | None, typer.Option(help="Trials in the study in all (default: the sweep's budget).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes on this machine.")] = 1,
    gpus: GpusOpt = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    out_dir: DirOpt = None,
    timeout: Annotated[float | None, typer.Option(help="Start no new trial after this many seconds.")] = None,
    worker_index: Annotated[int, typer.Option(hidden=True)] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Run (or continue) a sweep: each trial trains the base spec with the trial's values."""
    from cvae.placement import assign_gpus
    from cvae.redact import redact
    from cvae.sweep.file import budget, load_sweep
    from cvae.sweep.progress import watching
    from cvae.sweep.status import status
    from cvae.sweep.study import load_study, storage_url
    from cvae.sweep.workers import RunOptions, run_worker, run_workers

    console = make_console(quiet)
    sweep = load_sweep(sweep_file, study, out_dir)
    if n_trials is not None and n_trials < 1:
        raise UserError(f"--n-trials must be at least 1, got {n_trials}")
    sweep.check_data()
    opts = RunOptions(storage_url(sweep, storage), n_trials, timeout or sweep.spec.budget.timeout, worker_index)
    if worker_index == 0:
        limit = budget(sweep, n_trials)
        trials = f"{'up to ' + str(limit) if limit else 'unlimited'} trials,"
        where = [f"storage {redact(opts.url)},", f"trials in {sweep.trials_dir}"]
        console.print(Fields([f"sweep {sweep.study}:", trials, f"{workers} worker(s),", *where], sep=" "))
    assigned = assign_gpus(workers, gpus) if worker_index == 0 else []
    if assigned and worker_index == 0:
        console.print(f"GPUs of the workers: {', '.join(assigned)}", markup=False)
    metric = sweep.spec.objective.metric
    try:  # the trials' progress: live on a terminal, a line per event in a log (the first worker's console only)
        with watching(opts.url, sweep.study, metric, console if worker_index == 0 else None, sweep.epochs()) as w:
            if workers == 1 and not assigned:
                run_worker(sweep, opts, console, on_ready=w.ready.set)
                code = 0
            else:
                code = run_workers(sweep, opts, workers, console, assigned, on_ready=w.ready.set)
    except KeyboardInterrupt as e:
        how = e.how if isinstance(e, Stopped) else "Ctrl-C"
        console.print(
            f"interrupted ({how}): the interrupted trials resume from their checkpoints on the next `cvae sweep run`"
        )
        raise typer.Exit(e.exit_code if isinstance(e, Stopped) else 130) from None
    if worker_index == 0:
        _print_summary(console, status(load_study(opts.url, sweep.study), importance=False))
    if code:
        raise typer.Exit(code)


def _print_summary(console: Console, st: dict) -> None:
    states = ", ".join(f"{n} {s.lower()}" for s, n in st["states"].items() if n)
    console.print(
        Fields(
            [
                f"study {st['study']}: {st['n_trials']} trials ({states or 'none'});",
                f"{st['epochs_spent']} epochs trained",
            ],
            sep=" ",
        )
    )
    if st["best"]:
        b = st["best"]
        params = ", ".join(f"{k}={v}" for k, v in b["params"].items())
        score = f"{st['metric']} {with_unit(st['metric'], b['value'])}"
        console.print(Fields([f"best: trial {b['number']}, {score}", f"({params})"], sep=" "))


@sweep_app.command("status")
@handle_errors
def status_cmd(
    sweep_file: OptSweepArg = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    out_dir: DirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Trials by state, the best trial, and the running trials with their epoch."""
    from cvae.sweep.status import status, status_tables
    from cvae.sweep.study import load_study, resolve

    url, name, _ = resolve(sweep_file, storage, study, out_dir)
    st = status(load_study(url, name))
    if as_json:
        sys.stdout.write(json.dumps(st, default=str) + "\n")
        return
    console = make_console(False)
    for item in status_tables(st):
        console.print(item, markup=False) if isinstance(item, str) else console.print(item)


@sweep_app.command("confirm")
@handle_errors
def confirm(
    sweep_file: SweepArg,
    top: Annotated[int, typer.Option(min=1, help="Settings to confirm: the sweep's best distinct trials.")] = 3,
    seeds: Annotated[int, typer.Option(min=2, help="The most fresh seeds a setting gets (the base's too).")] = 5,
    min_seeds: Annotated[
        int | None,
        typer.Option(
            min=2, help="Racing: the seeds every setting gets before any verdict (default 3, at most --seeds)."
        ),
    ] = None,
    race: Annotated[
        bool,
        typer.Option(
            "--race/--no-race",
            help="Race: a setting whose verdict is settled stops getting seeds. --no-race: all settings on "
            "all seeds, one look.",
        ),
    ] = True,
    workers: Annotated[int, typer.Option(min=1, help="Runs trained at a time on this machine.")] = 2,
    gpus: GpusOpt = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    out_dir: DirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print confirm.json instead of the table.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Retrain the best settings and the base with fresh seeds; each against the base, by its interval."""
    from cvae.sweep.confirm import run_confirm
    from cvae.sweep.confirm_report import PLOT_FILE, RESULT_FILE, confirm_table, to_json
    from cvae.sweep.file import load_sweep
    from cvae.sweep.study import load_study, storage_url

    console = make_console(quiet or as_json)
    sweep = load_sweep(sweep_file, study, out_dir)
    sweep.check_data()
    if min_seeds is None:
        min_seeds = min(3, seeds)
    elif min_seeds > seeds:
        raise UserError(f"--min-seeds {min_seeds}: at most --seeds ({seeds})")
    study_obj = load_study(storage_url(sweep, storage), sweep.study)
    from cvae.placement import assign_gpus

    assigned = assign_gpus(workers, gpus)
    result = run_confirm(sweep, study_obj, top, seeds, workers, console, min_seeds, race, assigned)
    if as_json:
        sys.stdout.write(to_json(result) + "\n")
        return
    console.print(confirm_table(result))
    console.print(f"wrote {sweep.out_dir / RESULT_FILE} and {sweep.out_dir / PLOT_FILE}", markup=False)


@sweep_app.command("best")
@handle_errors
def best(
    sweep_file: OptSweepArg = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    out_dir: DirOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the spec here (default: stdout).")
    ] = None,
) -> None:
    """The best trial's values merged into the base spec: a spec ready for `cvae train`."""
    from cvae.sweep.study import best_spec_yaml, load_study, resolve

    url, name, _ = resolve(sweep_file, storage, study, out_dir)
    text = best_spec_yaml(load_study(url, name))
    if output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        Console(stderr=True).print(f"wrote {output}")


@sweep_app.command("dashboard")
@handle_errors
def dashboard(
    sweep_file: OptSweepArg = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    out_dir: DirOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (local only by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    artifacts: Annotated[
        Path | None,
        typer.Option(help="With --storage alone: the folder of the trials' media (the sweep file's artifacts)."),
    ] = None,
) -> None:
    """Serve optuna-dashboard for the sweep's storage, with the trials' media (Ctrl-C stops it)."""
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        raise UserError("optuna-dashboard is not installed: pip install optuna-dashboard") from None
    from cvae.redact import redact
    from cvae.sweep.dashboard import artifact_dir, serve
    from cvae.sweep.study import is_rdb, open_storage, resolve

    if sweep_file is None and storage is None:
        raise UserError("give a SWEEP file or --storage URL")
    url, _, sweep = resolve(sweep_file, storage, study, out_dir) if sweep_file is not None else (storage, None, None)
    if not is_rdb(url) and not Path(url).exists():
        raise UserError(f"{url}: no such journal file (run the sweep first)")
    folder = artifact_dir(sweep) if sweep is not None else artifacts
    print(f"optuna-dashboard for {redact(url)} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    serve(open_storage(url), folder, host, port)


@sweep_app.command("export-wandb")
@handle_errors
def export_wandb(
    sweep_file: SweepArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")] = None,
    only: Annotated[
        str | None,
        typer.Option(
            metavar="points|search",
            help="Of a sweep that enqueues points and searches after them (W&B sweeps cannot do both): "
            "a grid over its enqueued points, or its search alone.",
        ),
    ] = None,
    n_trials: Annotated[
        int | None, typer.Option(min=1, help="The budget, W&B's run_cap (default: the sweep's n_trials).")
    ] = None,
) -> None:
    """Write the sweep as a W&B sweep config with its budget (agents run `cvae train BASE --key=value ...`)."""
    from cvae.sweep.file import load_sweep
    from cvae.sweep.wandb_export import PARTS, wandb_sweep_yaml

    if only is not None and only not in PARTS:
        raise UserError(f"--only {only!r}: allowed: {', '.join(PARTS)}")
    text = wandb_sweep_yaml(load_sweep(sweep_file), n_trials=n_trials, only=only)
    if output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        Console(stderr=True).print(f"wrote {output}")
