"""The terminal: consoles, progress bars for long work, number formatting and the one table helper.

When output is not a terminal (CI logs, a file), rich draws no live bars and text stays plain.
``quiet`` consoles print nothing but errors.

Tables (``table``): every table of the ``cvae`` commands. A number is never cut: numeric columns
keep their whole width, text columns wrap (at spaces, long words folded), and a table too wide for
the terminal even so is printed as one block of ``column: value`` lines per row instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def make_console(quiet: bool = False) -> Console:
    return Console(quiet=quiet, highlight=False, soft_wrap=True)


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def task(console: Console | None, description: str, total: int | None = None) -> Iterator:
    """A progress bar for long work; yields ``update(done, total)``. No-op when console is None."""
    if console is None or console.quiet or not console.is_terminal:  # no live bars in logs
        yield lambda done, total=None: None
        return
    with make_progress(console) as progress:
        tid = progress.add_task(description, total=total, info="")

        def update(done: int, total: int | None = None) -> None:
            progress.update(tid, completed=done, total=total)

        yield update


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}"
    return str(value)


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Col:
    """A table column: ``numeric`` ones are right-aligned and never wrapped; ``short`` is the header
    shown where the name is long, the name then goes into the legend under the table."""

    name: str
    numeric: bool = False
    short: str | None = None

    @property
    def header(self) -> str:
        return self.short or self.name


TEXT_MIN_WIDTH = 10  # a text column narrower than this reads badly: fold the table into blocks first


class FoldingTable:
    """A rich renderable: the table as it is when it fits the width it is given, else one block of
    ``column: value`` lines per row. Either way no cell is cut."""

    def __init__(self, title: str, columns: Sequence[Col], rows: Sequence[Sequence[str]], notes: Sequence[str]):
        self.title, self.columns, self.rows, self.notes = title, list(columns), [list(r) for r in rows], list(notes)

    def _needed(self) -> int:
        width = 1
        for i, c in enumerate(self.columns):
            cells = [r[i] for r in self.rows]
            if c.numeric:
                longest = max([len(c.header)] + [max(map(len, s.splitlines() or [""])) for s in cells])
            else:
                longest = min(TEXT_MIN_WIDTH, max([len(c.header)] + [len(s) for s in cells]))
            width += longest + 3  # a space each side and a border
        return width

    def _table(self):
        from rich.table import Table
        from rich.text import Text

        t = Table(
            title=Text(self.title), caption=Text(" ".join(self.notes)) if self.notes else None, caption_justify="left"
        )
        for i, c in enumerate(self.columns):
            if c.numeric:
                width = max([len(c.header)] + [max(map(len, r[i].splitlines() or [""])) for r in self.rows])
                t.add_column(c.header, justify="right", no_wrap=True, min_width=width)
            else:
                t.add_column(c.header, overflow="fold")
        for r in self.rows:
            t.add_row(*map(Text, r))  # cells are text, never rich markup: "[0.2, 0.6]" stays as it is
        return t

    def _blocks(self):
        from rich.table import Table
        from rich.text import Text

        caption = Text(" ".join(self.notes)) if self.notes else None
        t = Table(title=Text(self.title), caption=caption, caption_justify="left", show_header=False)
        t.add_column("column", style="bold", overflow="fold")
        t.add_column("value", overflow="fold")
        for n, r in enumerate(self.rows):
            for i, (c, cell) in enumerate(zip(self.columns, r, strict=True)):
                last = i == len(self.columns) - 1 and n < len(self.rows) - 1
                t.add_row(Text(c.header), Text(cell), end_section=last)
        return t

    def __rich_console__(self, console, options):
        chosen = self._table() if self._needed() <= options.max_width else self._blocks()
        # The commands' consoles soft-wrap (a long message stays one line); a table's title and notes
        # wrap to the table instead.
        yield from console.render(chosen, options.update(no_wrap=False, overflow="fold"))


def table(
    title: str,
    columns: Sequence[str | Col],
    rows: Sequence[Sequence[Any]],
    notes: Sequence[str] = (),
) -> FoldingTable:
    """The table of a command: ``columns`` (names or ``Col``), ``rows`` of cells (str() of each), and
    notes under it; the legend of the short headers is added to the notes."""
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    legend = [f"{c.short}: {c.name}." for c in cols if c.short and c.short != c.name]
    return FoldingTable(title, cols, [[str(v) for v in r] for r in rows], [*legend, *notes])


def render(renderable, width: int = 80) -> str:
    """What a renderable prints on a terminal ``width`` columns wide, from a console like the commands'
    (``make_console``): for tests and docs."""
    import io

    console = Console(file=io.StringIO(), width=width, highlight=False, soft_wrap=True, color_system=None)
    console.print(renderable)
    return console.file.getvalue()
