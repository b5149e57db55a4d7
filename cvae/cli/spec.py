"""``cvae spec``: a resolved spec as YAML, its schedules per epoch, the JSON schema of specs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cvae.cli.common import SetOpt, handle_errors
from cvae.errors import UserError
from cvae.terminal import make_console

spec_app = typer.Typer(help="Experiment specs: show a resolved spec, print the JSON schema.", no_args_is_help=True)


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

    from cvae.data.clips import steps_per_epoch_of
    from cvae.training.schedules import run_schedule

    steps, where = steps_per_epoch_of(spec_obj)
    rows = run_schedule(spec_obj, steps)
    if plot is not None:
        from cvae.tracking.media import plot_schedule

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


def schedule_table(spec_obj, rows: list[dict], where: str):
    """The table of ``cvae spec show --schedule``."""
    from cvae.terminal import Col, table

    kl, tf = spec_obj.kl_annealing, spec_obj.teacher_forcing
    if kl.type == "none":
        kl_text = f"KL none (beta {kl.max_beta:g} throughout)"
    else:
        top = f", up to beta {kl.max_beta:g}" if kl.max_beta != 1 else ""
        kl_text = f"KL {kl.type} ({kl.cycles} cycles, ratio {kl.ratio:g}, per {kl.unit}{top})"
    title = (
        f"{spec_obj.name}: {kl_text}; teacher forcing {tf.ratio:g}, -{tf.decay_step:g}/{tf.unit} from {tf.unit} "
        f"{tf.decay_start}, coin per {tf.mode}; {where}"
    )
    columns = [Col(c, numeric=True) for c in ("epoch", "steps", "beta", "tfr")]
    if "beta_last" in rows[0]:
        columns += [Col("beta at the epoch's end", True, "beta end"), Col("tfr at the epoch's end", True, "tfr end")]
    if "coin" in rows[0]:
        columns += [Col("coin", numeric=True), Col("the epoch is teacher-forced", short="forced")]
    cells = []
    for r in rows:
        row = [r["epoch"], r["steps"], f"{r['beta']:.4g}", f"{r['tfr']:.4g}"]
        if "beta_last" in r:
            row += [f"{r['beta_last']:.4g}", f"{r['tfr_last']:.4g}"]
        if "coin" in r:
            row += [f"{r['coin']:.3f}", "yes" if r["teacher_forced"] else "no"]
        cells.append(row)
    return table(title, columns, cells)
