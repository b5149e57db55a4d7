"""The ``cvae`` command: parse, call, print. Logic lives in the modules it calls.

Exit codes: 0 done, 1 the run failed (the message says why), 2 bad input (the message names the
file, key or value and what is allowed), 130 / 143 stopped by ctrl-c / SIGTERM after saving a
checkpoint that ``cvae train --resume`` continues. torch and wandb are imported inside the commands
that need them, so ``cvae --help`` answers fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cvae.console import err_console, handle_errors, make_console, schedule_table
from cvae.errors import UserError
from cvae.sweep.cli import sweep_app

app = typer.Typer(
    help="Train, track and search the Lab4 pose-conditioned video CVAE.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Dataset tools: synthesize the dancer, check a folder.", no_args_is_help=True)
spec_app = typer.Typer(help="Experiment specs: show a resolved spec, print the JSON schema.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(spec_app, name="spec")
app.add_typer(sweep_app, name="sweep")

SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a spec key: --set train.epochs=3 (repeatable).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="torch threads (default: the CPUs this process may use minus those other work keeps busy; "
        "OMP_NUM_THREADS if set).",
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="auto | cpu | cuda | cuda:N (default: the run's train.device, as trained).")
]


# --------------------------------------------------------------------------- train


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def train(
    ctx: typer.Context,
    spec: Annotated[Path | None, typer.Argument(help="Experiment spec YAML (omit with --resume).")] = None,
    set_: SetOpt = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run folder (default runs/<name>; under a W&B sweep agent runs/wandb-sweeps/<sweep>/<run>)."),
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in the run folder.")] = False,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a spec. Extra --key=value arguments (the W&B agent form) override spec keys."""
    apply_threads(threads, quiet)
    from cvae.spec import command_line_layers, load_spec_origins
    from cvae.wandb_agent import agent_run_dir, sweep_agent_overrides

    layers = command_line_layers(set_ or [], sweep_agent_overrides(), ctx.args)
    if resume is not None:
        if spec is not None or any(values for _, values in layers):
            raise UserError("--resume continues a run with its saved spec; give no SPEC or overrides with it")
        if not (resume / "spec.yaml").is_file():
            raise UserError(f"{resume}: no run to resume here (spec.yaml missing)")
        spec_obj, origins = load_spec_origins(resume / "spec.yaml")
        from cvae.data_root import check_run_data

        check_run_data(resume, spec_obj, strict=True)  # the data it trained on, or bad input
        folder = resume
    else:
        if spec is None:
            raise UserError("missing SPEC: cvae train experiments/quickstart.yaml (or --resume RUN_DIR)")
        spec_obj, origins = load_spec_origins(spec, layers=layers)
        folder = run_dir or agent_run_dir() or Path("runs") / spec_obj.name
    run_training(spec_obj, folder, resume is not None, overwrite, quiet, origins)


def apply_threads(requested: int | None, quiet: bool) -> int:
    """Choose the command's torch threads (cvae/threads.py); say so when other work takes CPUs."""
    from cvae.threads import usable_cpus, use_threads

    n, why = use_threads(requested)
    if n < usable_cpus() and why != "--threads" and not quiet:
        err_console.print(f"threads: {n} ({why}; --threads N to choose)", markup=False)
    return n


def run_training(spec_obj, folder: Path, resume: bool, overwrite: bool, quiet: bool, origins=None) -> dict:
    from cvae import run_folder
    from cvae.console import ConsoleTracker
    from cvae.data_root import check_request
    from cvae.training import train
    from cvae.wandb_tracker import from_spec

    console = make_console(quiet)
    wandb_tracker = from_spec(spec_obj, console)
    check_request(spec_obj, origins)  # a mistyped data.root stops here: nothing written, nothing generated
    run_folder.prepare(folder, resume, overwrite)
    summary = train(spec_obj, folder, [ConsoleTracker(console), wandb_tracker], resume=resume, console=console)
    if "best/val_psnr" in summary:
        console.print(
            f"done: best val PSNR {summary['best/val_psnr']:.2f} dB at epoch {summary['best/epoch']}; "
            f"run folder {folder}"
        )
    return summary


# --------------------------------------------------------------------------- evaluate / predict


@app.command()
@handle_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run folder made by cvae train.")],
    ckpt: Annotated[str, typer.Option(help="Checkpoint: best or last.")] = "best",
    pose_shift: Annotated[int | None, typer.Option(help="Rotate the poses by K frames (default: a quarter).")] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Roll out every val video; write per-frame PSNR (CSV, PNG) and the GIF; print the references."""
    apply_threads(threads, quiet)
    from cvae.evaluate import evaluate_run

    console = make_console(quiet)
    report = evaluate_run(run_dir, ckpt, pose_shift, console, device)
    console.print(report.table())


@app.command()
@handle_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run folder made by cvae train.")],
    data: Annotated[Path, typer.Option(help="Dataset root holding test/test_img and test/test_label.")],
    out: Annotated[Path, typer.Option(help="Output folder for GIFs and submission.csv.")],
    ckpt: Annotated[str, typer.Option(help="Checkpoint: best or last.")] = "best",
    overwrite: Annotated[bool, typer.Option(help="Replace files already in --out.")] = False,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Roll out every test video from its first frame and poses: a GIF each and submission.csv."""
    apply_threads(threads, quiet)
    from cvae.evaluate import predict_run

    console = make_console(quiet)
    written = predict_run(run_dir, data, out, ckpt, overwrite, console, device)
    console.print(f"wrote {len(written)} GIFs and {out / 'submission.csv'}")


@app.command()
@handle_errors
def score(
    submission: Annotated[Path, typer.Argument(help="submission.csv written by cvae predict.")],
    data: Annotated[Path, typer.Option(help="Dataset root whose val videos are the truth.")],
    frame_size: Annotated[str, typer.Option(help="Frame size HxW of the submission.")] = "32x64",
) -> None:
    """Score predictions of `cvae data val-as-test` videos against the real val frames."""
    from rich.table import Table

    from cvae.evaluate import score_submission

    try:
        size = tuple(int(v) for v in frame_size.lower().split("x"))
        assert len(size) == 2
    except (ValueError, AssertionError):
        raise UserError(f"--frame-size {frame_size!r}: expected HxW, e.g. 32x64") from None
    scores = score_submission(submission, data, size)
    table = Table(title=f"{submission} against the val frames of {data} (mean PSNR over frames 1..T-1, dB)")
    for col in ("video", "prediction", "repeat first frame", "mean frame"):
        table.add_column(col, justify="right")
    for name, s in scores.items():
        table.add_row(name, f"{s['psnr']:.2f}", f"{s['repeat_first']:.2f}", f"{s['mean_frame']:.2f}")
    make_console(False).print(table)


# --------------------------------------------------------------------------- compare / report

RunsArg = Annotated[
    list[str], typer.Argument(help="Run folders, globs (runs/report_*) or sweep folders (their trials/*).")
]


@app.command()
@handle_errors
def compare(
    runs: RunsArg,
    out: Annotated[Path, typer.Option(help="Folder for compare.csv and the PNG figures.")] = Path("compare"),
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Table of the settings that differ and the val PSNR of each run; curves and per-frame PSNR as PNG."""
    apply_threads(threads, quiet)
    from cvae.compare import compare_runs

    console = make_console(quiet)
    result = compare_runs(runs, out, console)
    console.print(result.table())
    for warning in result.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print("wrote " + ", ".join(str(p) for p in [out / "compare.csv", *result.figures]))


@app.command()
@handle_errors
def report(
    runs: Annotated[
        list[str] | None,
        typer.Argument(help="Run folders, globs (runs/report_*) or sweep folders; none with --reproduce."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNG figures.")] = Path("report"),
    reproduce: Annotated[
        str | None,
        typer.Option(help="Train the report's seven settings at this scale first: cpu (minutes) or full (a GPU job)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="--reproduce: runs trained at a time.")] = 2,
    set_: SetOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """The published analysis' figures (teacher forcing, KL annealing, per-frame PSNR) from report runs."""
    apply_threads(threads, quiet)
    from cvae.report import make_report

    console = make_console(quiet)
    if reproduce is not None:
        from cvae.reproduce import scaled_specs
        from cvae.run_queue import train_all
        from cvae.spec import parse_override

        if runs:
            raise UserError("--reproduce trains the report's runs itself; give no RUNS with it")
        specs = scaled_specs(reproduce, dict(parse_override(o) for o in set_ or []))
        run_dirs, failed = train_all(specs, Path("runs") / f"report-{reproduce}", workers, console)
        for line in failed:  # a setting that diverges is a finding: the figures show it up to its end
            console.print(f"warning: run failed: {line}", style="yellow", markup=False)
        runs = [str(p) for p in run_dirs]
    elif not runs:
        raise UserError("give the report's run folders (RUNS), or --reproduce cpu|full to train them")
    elif set_:
        raise UserError("--set goes with --reproduce")
    result = make_report(runs, out, console)
    console.print(result.table())
    for line in result.skipped:
        console.print(f"skipped: {line}")


# --------------------------------------------------------------------------- data


@data_app.command("synth")
@handle_errors
def data_synth(
    out: Annotated[Path, typer.Argument(help="Output folder (the Lab4 layout is written there).")],
    preset: Annotated[str, typer.Option(help="tiny | small | lab4")] = "small",
    seed: Annotated[int, typer.Option(help="Seed of the dances and the look.")] = 0,
    appearance: Annotated[str, typer.Option(help="same (one dancer, like the lab) | varied")] = "same",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate the synthetic dancer dataset in the Lab4 layout."""
    from cvae.console import task
    from cvae.synth import synthesize

    console = make_console(quiet)
    with task(console, f"synthesizing {preset} -> {out}") as update:
        info = synthesize(out, preset, seed=seed, appearance=appearance, overwrite=overwrite, progress=update)
    console.print(f"wrote {out}: {info}")


@data_app.command("val-as-test")
@handle_errors
def data_val_as_test(
    root: Annotated[Path, typer.Argument(help="Dataset root with a val split.")],
    out: Annotated[Path, typer.Argument(help="New folder for the test layout.")],
    pose_shift: Annotated[int | None, typer.Option(help="Rotation of the shifted copy (default: a quarter).")] = None,
) -> None:
    """Write each val video as test videos: its first frame with its poses, and with rotated poses."""
    from cvae.data_root import val_as_test

    names = val_as_test(root, out, pose_shift)
    make_console(False).print(f"wrote {out}/test: videos {', '.join(names)}")


@data_app.command("check")
@handle_errors
def data_check(root: Annotated[Path, typer.Argument(help="Dataset root in the Lab4 layout.")]) -> None:
    """Count videos and frames per split and report any problem found (exit 2 if any)."""
    from cvae.data_root import check_dataset

    console = make_console(False)
    problems = check_dataset(root, console)
    if problems:
        raise UserError(f"{root}: {len(problems)} problem(s) found:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------- spec


@spec_app.command("show")
@handle_errors
def spec_show(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="Experiment spec YAML.")],
    set_: SetOpt = None,
    schedule: Annotated[
        bool, typer.Option("--schedule", help="Print beta and the teacher-forcing ratio of every epoch instead.")
    ] = False,
    plot: Annotated[Path | None, typer.Option(help="With --schedule: also draw it into this PNG.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="With --schedule: one JSON list, an object per epoch.")] = False,
) -> None:
    """Print the resolved spec (file, extends, overrides) as YAML, or with --schedule the KL and
    teacher-forcing schedules it would train with (no training, no data loading)."""
    from cvae.spec import dump_yaml, load_spec

    spec_obj = load_spec(spec, list(set_ or []))
    if not schedule:
        if plot is not None or json_:
            raise UserError("--plot and --json go with --schedule")
        sys.stdout.write(dump_yaml(spec_obj))
        return
    import json

    from cvae.lab4_layout import steps_per_epoch_of
    from cvae.schedules import run_schedule

    steps, where = steps_per_epoch_of(spec_obj)
    rows = run_schedule(spec_obj, steps)
    if plot is not None:
        from cvae.media import plot_schedule

        plot_schedule(plot, rows, f"{spec_obj.name}: KL weight and teacher forcing per epoch")
    if json_:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    console = make_console(False)
    console.print(schedule_table(spec_obj, rows, where))
    if plot is not None:
        console.print(f"wrote {plot}")


@spec_app.command("schema")
@handle_errors
def spec_schema() -> None:
    """Print the JSON schema of experiment specs."""
    import json

    from cvae.spec import ExperimentSpec

    sys.stdout.write(json.dumps(ExperimentSpec.model_json_schema(), indent=2) + "\n")


# --------------------------------------------------------------------------- bench


@app.command()
@handle_errors
def bench(
    spec: Annotated[Path, typer.Argument(help="Experiment spec YAML (widths, batch, clip).")] = Path(
        "experiments/quickstart.yaml"
    ),
    set_: SetOpt = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    quick: Annotated[bool, typer.Option(help="Few repeats, no compilation: a smoke run.")] = False,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            help="Time the bf16 settings. Default: where bf16 is native (avx512_bf16 or AMX; CUDA 8.0+); "
            "emulated bf16 runs many times slower than fp32.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Time the published loop against ours: train step, rollout, loader, FLOPs (docs/performance.md)."""
    import json

    from cvae import bench as b
    from cvae.bench_tables import tables
    from cvae.device import resolve_device
    from cvae.spec import load_spec

    spec_obj = load_spec(spec, list(set_ or []))
    result = b.run(spec_obj, resolve_device(device, "--device"), b.QUICK if quick else b.FULL, err_console, bf16)
    if json_:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    console = make_console(False)
    rendered, notes = tables(result)
    for table in rendered:
        console.print(table)
    for note in notes:
        console.print(note, markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
