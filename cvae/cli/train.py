"""``cvae train``: a spec with its overrides (or a run folder to resume), handed to ``cvae.launch``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cvae.cli.common import QuietOpt, SetOpt, ThreadsOpt, apply_threads, handle_errors
from cvae.errors import UserError
from cvae.terminal import make_console


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
    from cvae import run_folder
    from cvae.launch import launch
    from cvae.spec import command_line_layers, load_spec_origins
    from cvae.tracking.wandb_agent import agent_run_dir, sweep_agent_overrides

    layers = command_line_layers(set_ or [], sweep_agent_overrides(), ctx.args)
    if resume is not None:
        if spec is not None or any(values for _, values in layers):
            raise UserError("--resume continues a run with its saved spec; give no SPEC or overrides with it")
        if not run_folder.is_run(resume):
            raise UserError(f"{resume}: no run to resume here ({run_folder.SPEC_FILE} missing)")
        spec_obj, origins = load_spec_origins(resume / run_folder.SPEC_FILE)
        folder = resume
    else:
        if spec is None:
            raise UserError("missing SPEC: cvae train experiments/quickstart.yaml (or --resume RUN_DIR)")
        spec_obj, origins = load_spec_origins(spec, layers=layers)
        folder = run_dir or agent_run_dir() or Path("runs") / spec_obj.name
    console = make_console(quiet)
    summary = launch(spec_obj, folder, resume=resume is not None, overwrite=overwrite, origins=origins, console=console)
    if "best/val_psnr" in summary:
        console.print(
            f"done: best val PSNR {summary['best/val_psnr']:.2f} dB at epoch {summary['best/epoch']}; "
            f"run folder {folder}"
        )
