"""``cvae data``: synthesize the dancer, check a dataset folder, write val videos as test videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cvae.cli.common import QuietOpt, handle_errors
from cvae.errors import UserError
from cvae.terminal import make_console

data_app = typer.Typer(help="Dataset tools: synthesize the dancer, check a folder.", no_args_is_help=True)


@data_app.command("synth")
@handle_errors
def data_synth(
    out: Annotated[Path, typer.Argument(help="Output folder (the Lab4 layout is written there).")],
    preset: Annotated[str, typer.Option(help="tiny | small | lab4")] = "small",
    seed: Annotated[int, typer.Option(help="Seed of the dances and the look.")] = 0,
    appearance: Annotated[str, typer.Option(help="same (one dancer, like the lab) | varied")] = "same",
    layout: Annotated[
        str,
        typer.Option(
            help="videos: a subfolder per train and val video (clips never cross two dances) | flat: one numbered "
            "sequence per split, the lab's own layout, the only one the template's Dataset_Dance reads."
        ),
    ] = "videos",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate the synthetic dancer dataset in the Lab4 layout, and its test videos' true frames (held out,
    in test_truth/, outside the layout)."""
    from cvae.data.synth import synthesize
    from cvae.terminal import task

    console = make_console(quiet)
    with task(console, f"synthesizing {preset} -> {out}") as update:
        info = synthesize(
            out, preset, seed=seed, appearance=appearance, overwrite=overwrite, progress=update, layout=layout
        )
    console.print(f"wrote {out}: {info}")


@data_app.command("val-as-test")
@handle_errors
def data_val_as_test(
    root: Annotated[Path, typer.Argument(help="Dataset root with a val split.")],
    out: Annotated[Path, typer.Argument(help="New folder for the test layout.")],
    pose_shift: Annotated[int | None, typer.Option(help="Rotation of the shifted copy (default: a quarter).")] = None,
) -> None:
    """Write each val video as test videos: its first frame with its poses, and with rotated poses."""
    from cvae.data.tools import val_as_test

    names = val_as_test(root, out, pose_shift)
    make_console(False).print(f"wrote {out}/test: videos {', '.join(names)}")


@data_app.command("check")
@handle_errors
def data_check(root: Annotated[Path, typer.Argument(help="Dataset root in the Lab4 layout.")]) -> None:
    """Count videos and frames per split and report any problem found (exit 2 if any)."""
    from cvae.data.tools import check_dataset

    console = make_console(False)
    problems = check_dataset(root, console)
    if problems:
        raise UserError(f"{root}: {len(problems)} problem(s) found:\n  " + "\n  ".join(problems))
