"""The terminal: consoles, progress bars for long work, number formatting and the one table helper.

When output is not a terminal (CI logs, a file), rich draws no live bars and text stays plain.
``quiet`` consoles print nothing but errors.

Tables (``table``): every table of the ``cvae`` commands. No number or word is ever split: numeric
columns keep their whole width, text columns wrap at spaces and are never narrower than their
longest word, the room a terminal has left goes to the columns that want more, and a table too wide
for the terminal even so is printed as one block of ``column: value`` lines per row instead.
Lines of ``key value`` fields (``Fields``: the epoch lines of ``cvae train``, a sweep's events) wrap
between fields, never inside one.
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


def _lines(cell: str) -> list[str]:
    return cell.splitlines() or [""]


def _longest_word(texts: Sequence[str]) -> int:
    return max((len(w) for t in texts for w in t.split()), default=0)


# What the frame takes around n columns: a space each side of every column, a border between two,
# and the outer borders (framed) or none, without the outermost spaces (edgeless, for narrow terminals).
FRAMED, EDGELESS = (lambda n: 3 * n + 1), (lambda n: 3 * n - 3)


class FoldingTable:
    """A rich renderable: the table as it is when it fits the width it is given, its text columns
    narrowed (never below their longest word) when that makes it fit, without its outer frame when
    only that makes it fit, else one block of ``column: value`` lines per row. Either way no cell
    is cut and no word or number split."""

    def __init__(self, title: str, columns: Sequence[Col], rows: Sequence[Sequence[str]], notes: Sequence[str]):
        self.title, self.columns, self.rows, self.notes = title, list(columns), [list(r) for r in rows], list(notes)

    def _ranges(self) -> list[tuple[int, int]]:
        """(narrowest, natural) width of each column: a numeric column's longest line both; a text
        column's longest word and longest line, its header's included."""
        out = []
        for i, c in enumerate(self.columns):
            texts = [c.header] + [r[i] for r in self.rows]
            natural = max(1, max(len(line) for t in texts for line in _lines(t)))
            out.append((natural, natural) if c.numeric else (max(1, _longest_word(texts)), natural))
        return out

    def widths(self, width: int, frame=FRAMED) -> list[int] | None:
        """Each column's width on a terminal ``width`` columns wide: the natural ones where the table
        fits; else every column at least its narrowest, the room left shared in proportion to what
        each wants more; None where even the narrowest do not fit."""
        ranges = self._ranges()
        room = width - frame(len(ranges))
        low, high = sum(lo for lo, _ in ranges), sum(hi for _, hi in ranges)
        if high <= room:
            return [hi for _, hi in ranges]
        if low > room:
            return None
        extra, wanted = room - low, high - low
        widths = [lo + extra * (hi - lo) // wanted for lo, hi in ranges]
        for i in sorted(range(len(ranges)), key=lambda i: widths[i] - ranges[i][1]):  # the rounding's leftovers
            if sum(widths) < room and widths[i] < ranges[i][1]:
                widths[i] += 1
        return widths

    def _frame(self, **kw):
        from rich.table import Table
        from rich.text import Text

        caption = Text(" ".join(self.notes)) if self.notes else None
        # a title or note never narrower than its longest word
        return Table(
            title=Text(self.title),
            caption=caption,
            caption_justify="left",
            min_width=_longest_word([self.title, *self.notes]),
            **kw,
        )

    def _table(self, widths: list[int], edge: bool = True):
        from rich.text import Text

        t = self._frame(show_edge=edge, pad_edge=edge)
        for c, width in zip(self.columns, widths, strict=True):
            if c.numeric:
                t.add_column(c.header, justify="right", no_wrap=True, width=width)
            else:
                t.add_column(c.header, width=width, overflow="fold")
        for r in self.rows:
            t.add_row(*map(Text, r))  # cells are text, never rich markup: "[0.2, 0.6]" stays as it is
        return t

    def _blocks(self):
        from rich.text import Text

        t = self._frame(show_header=False)
        header = max(len(line) for c in self.columns for line in _lines(c.header))
        t.add_column("column", style="bold", no_wrap=True, width=header)
        t.add_column("value", overflow="fold")  # folds only a word longer than the terminal is wide
        for n, r in enumerate(self.rows):
            for i, (c, cell) in enumerate(zip(self.columns, r, strict=True)):
                last = i == len(self.columns) - 1 and n < len(self.rows) - 1
                t.add_row(Text(c.header), Text(cell), end_section=last)
        return t

    def __rich_console__(self, console, options):
        width = options.max_width
        if (widths := self.widths(width)) is not None:
            chosen = self._table(widths)
        elif (widths := self.widths(width, EDGELESS)) is not None:
            chosen = self._table(widths, edge=False)
        else:
            chosen = self._blocks()
        # The commands' consoles soft-wrap (a long message stays one line); a table's cells, title and
        # notes wrap to the table instead.
        yield from console.render(chosen, options.update(no_wrap=False, overflow="fold"))


class Fields:
    """Fields (``"loss 0.0376"``, ``"val PSNR 24.10 dB (...)"``) on one line, ``sep`` between them,
    where they fit the terminal; else on as many lines as needed, continuation lines indented. A
    field moves to the next line whole; only a field longer than a line is broken, at its spaces."""

    def __init__(
        self, fields: Sequence[str], sep: str = "  ", indent: str = "  ", lead: str = "", style: str | None = None
    ):
        self.fields, self.sep, self.indent, self.lead, self.style = [f for f in fields if f], sep, indent, lead, style

    def lines(self, width: int) -> list[str]:
        out: list[str] = []
        line = ""  # the line being filled: "" before its first field

        def begin() -> str:
            return self.indent if out else self.lead

        for field in self.fields:
            if line and len(line) + len(self.sep) + len(field) <= width:
                line += self.sep + field
                continue
            if line:
                out.append(line)
            line = begin() + field
            if len(line) > width:  # longer than a line alone: break it at its spaces
                line = begin()
                for word in field.split():
                    if line.strip() and len(line) + 1 + len(word) > width:
                        out.append(line)
                        line = begin()
                    line += (" " if line.strip() else "") + word
        if line.strip():
            out.append(line)
        return out

    def __str__(self) -> str:
        return self.lead + self.sep.join(self.fields)

    def __rich_console__(self, console, options):
        from rich.segment import Segment

        style = console.get_style(self.style) if self.style else None
        for line in self.lines(options.max_width):
            yield Segment(line, style)
            yield Segment.line()


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
