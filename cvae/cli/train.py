"""``cvae train``: a spec with its overrides (or a run folder to resume), handed to ``cvae.launch``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cvae.cli.common import QuietOpt, SetOpt, ThreadsOpt, apply_threads, handle_errors
from cvae.errors import SpecError, UserError
from cvae.terminal import Fields, make_console

if TYPE_CHECKING:
    from cvae.spec import Layer


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
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from these weights (train.init_from): a cvae checkpoint or one saved by the template's "
            "Trainer; the run begins at epoch 1 with its spec's optimizer and schedules."
        ),
    ] = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a spec. Extra --key=value arguments (the W&B agent form) override spec keys."""
    apply_threads(threads, quiet)
    from cvae import run_folder
    from cvae.launch import launch, note_overrides
    from cvae.spec import load_spec_origins
    from cvae.tracking.wandb_agent import agent_run_dir, sweep_agent_overrides

    layers = command_line_layers(set_ or [], sweep_agent_overrides(), ctx.args)
    if init_from is not None:
        layers.append(("--init-from", {"train.init_from": str(init_from)}))
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
        spec_obj = note_overrides(spec_obj, [key for _, values in layers for key in values])
        folder = run_dir or agent_run_dir() or Path("runs") / spec_obj.name
    console = make_console(quiet)
    summary = launch(spec_obj, folder, resume=resume is not None, overwrite=overwrite, origins=origins, console=console)
    if "best/val_psnr" in summary:
        best = f"done: best val PSNR {summary['best/val_psnr']:.2f} dB at epoch {summary['best/epoch']};"
        console.print(Fields([best, f"run folder {folder}"], sep=" "))
    from cvae.training.validation import heldout_line

    if (line := heldout_line(summary)) is not None:
        console.print(Fields([line]))


def split_cli_overrides(args: list[str]) -> list[str]:
    """Turn `--a.b=value` arguments (W&B agent `${args}` form) into `a.b=value` overrides."""
    out = []
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise SpecError(f"unexpected argument {arg!r}: overrides are --set key=value or --key=value")
        out.append(arg[2:])
    return out


def command_line_layers(
    set_items: Sequence[str], agent_params: dict[str, Any], extra_args: Sequence[str]
) -> list[Layer]:
    """The override layers of ``cvae train``, later wins: ``--set key=value`` items, then a W&B
    sweep agent's parameter file (``WANDB_SWEEP_PARAM_PATH``), then ``--key=value`` arguments (what
    the agent's ``${args}`` expands to)."""
    from cvae.spec import parse_override

    return [
        ("--set", dict(parse_override(o) for o in set_items)),
        ("the W&B sweep's parameter file", dict(agent_params)),
        ("--key=value arguments", dict(parse_override(o) for o in split_cli_overrides(list(extra_args)))),
    ]
