"""How the command line prints: tables that keep every column at any width, the same
rows as JSON or CSV, and the one-line renderings of values every command shares (a
run's status with its mark, a duration, a value cut to a line).

A table is laid out by ``print_table``: at its natural width when that fits; else
its text columns fold inside their cells (key and number columns never do); else,
when not even the headers fit or a cell would fold into more than a few lines, one
block per row (``column  value`` lines, like psql's expanded display). A column
is never dropped and a cell never cut without a note on stderr saying how to see it
whole. Output that is not a terminal (piped, redirected) has no width unless
``COLUMNS`` sets one: lines are never cut to 80.
"""

from __future__ import annotations

import csv
import enum
import io
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
import orjson
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from steptrace.store.scores import Score

PIPE_WIDTH = 100_000
"""The width of output that is not a terminal when ``COLUMNS`` is not set: unlimited
(so nothing printed through this console may expand to the full width)."""
_GAP = 2
"""Characters between two columns of the tables below."""
_FOLD_FLOOR = 6
"""A folding column is not made narrower than this (or its header)."""
_MAX_FOLD_LINES = 6
"""A table whose cells would fold into more lines than this is printed as blocks."""


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


FORMAT_HELP = "table (fits the terminal), json, or csv (one row per line, a header first)."


def output_format(fmt: Format | None, as_json: bool) -> Format:
    """The format asked for: ``--json`` is a shortcut for ``--format json``."""
    if as_json and fmt not in (None, Format.json):
        raise click.UsageError(f"--json and --format {fmt} disagree: give one of them")
    return Format.json if as_json else (fmt or Format.table)


def make_console(*, stderr: bool = False) -> Console:
    """A rich console for the CLI: the terminal's width, or no width limit when the
    output is piped and ``COLUMNS`` is not set."""
    con = Console(highlight=False, stderr=stderr)
    if not con.is_terminal and not os.environ.get("COLUMNS"):
        con.width = PIPE_WIDTH
    return con


def note(message: str) -> None:
    """One line on stderr, after what stdout has printed."""
    sys.stdout.flush()
    sys.stderr.write(f"note: {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"
    fold: bool = True
    """May wrap inside its cell when the table is too wide (else: always whole)."""
    max_chars: int | None = None
    """Longer cells are cut to this many characters, with a note."""
    cut: bool = False
    """When the table is too wide, cut this column's cells to its width, with a note,
    rather than fold them (a one-line summary such as an error message)."""


def print_table(
    con: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Text | str]],
    *,
    whole: str = "--json or --format csv",
) -> None:
    """Print ``rows`` under ``columns`` without ever losing a column (see the module
    docstring); ``whole`` says how to see cut cells whole."""
    cells = [[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]
    cut: set[str] = set()
    for row in cells:
        for column, cell in zip(columns, row, strict=True):
            if column.max_chars is not None and cell.cell_len > column.max_chars:
                cell.truncate(column.max_chars - 1)
                cell.append("…")
                cut.add(column.header)
    natural = [
        max([len(col.header), *(row[i].cell_len for row in cells)]) for i, col in enumerate(columns)
    ]
    overhead = _GAP * (len(columns) - 1)
    room = con.width - overhead
    widths = natural if sum(natural) <= room else _fitted(columns, cells, natural, room)
    if not widths:
        _print_blocks(con, columns, cells)
    for i, col in enumerate(columns[: len(widths)]):
        if col.cut and any(row[i].cell_len > widths[i] for row in cells):
            for row in cells:
                row[i].truncate(widths[i], overflow="ellipsis")
            cut.add(col.header)
    if widths:
        table = Table(
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            show_edge=False,
            padding=(0, 1),
            collapse_padding=True,
        )
        for col, width in zip(columns, widths, strict=True):
            table.add_column(
                col.header,
                justify=col.justify,  # type: ignore[arg-type]
                width=width,
                no_wrap=not col.fold or col.cut,
                overflow="ellipsis" if col.cut else "fold",
            )
        for row in cells:
            table.add_row(*row)
        con.print(table, crop=False)
    if cut:
        names = ", ".join(h for h in (c.header for c in columns) if h in cut)
        note(f"long values in {names} were cut (…): {whole} shows them whole")


def _fitted(
    columns: Sequence[Column], cells: list[list[Text]], natural: list[int], room: int
) -> list[int]:
    """Column widths that fit ``room`` with text folded, or ``[]`` when even the
    headers do not fit or a cell would fold into too many lines."""
    floor = [
        min(n, max(len(col.header), _FOLD_FLOOR)) if col.fold else n
        for n, col in zip(natural, columns, strict=True)
    ]
    if sum(floor) > room:
        return []
    widths = _share_out(floor, natural, room - sum(floor))
    folds = [
        -(-row[i].cell_len // max(1, widths[i]))
        for row in cells
        for i, col in enumerate(columns)
        if col.fold and not col.cut
    ]
    return [] if max(folds, default=1) > _MAX_FOLD_LINES else widths


def _share_out(floor: list[int], natural: list[int], spare: int) -> list[int]:
    """``floor`` widths grown toward ``natural`` by ``spare`` characters: the columns
    that lack least are made whole first, the rest share what is left evenly (so ids
    and names stay on one line and long text folds)."""
    widths = list(floor)
    pending = sorted(
        (i for i in range(len(widths)) if natural[i] > floor[i]),
        key=lambda i: natural[i] - floor[i],
    )
    while pending and spare > 0:
        share = spare // len(pending)
        first = pending[0]
        need = natural[first] - widths[first]
        if need <= share:
            widths[first] = natural[first]
            spare -= need
            pending.pop(0)
            continue
        for n, i in enumerate(pending):
            widths[i] += share + (1 if n < spare % len(pending) else 0)
        break
    return widths


def _print_blocks(con: Console, columns: Sequence[Column], rows: list[list[Text]]) -> None:
    """One block per row, ``header  value`` per line: for a table wider than the
    terminal even with its text folded."""
    label = max(len(c.header) for c in columns)
    for n, row in enumerate(rows, 1):
        con.print(Text(f"─[ row {n} ]" + "─" * max(0, min(con.width, 60) - 12), style="dim"))
        for col, cell in zip(columns, row, strict=True):
            line = Text.assemble((col.header.ljust(label), "bold"), "  ", cell)
            con.print(line, overflow="fold", crop=False)


def json_cell(value: Any) -> Any:
    """A value for CSV: text as is, numbers as numbers, anything nested as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value).decode()
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    return value


def print_csv(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows as CSV on stdout (RFC 4180, a header line first)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow([json_cell(v) for v in row])
    sys.stdout.flush()
    sys.stdout.write(out.getvalue())
    sys.stdout.flush()


def print_dict_csv(records: Sequence[dict[str, Any]], headers: Sequence[str] | None = None) -> None:
    """Dicts as CSV: their keys (in first-seen order unless ``headers``) as the columns."""
    if headers is None:
        seen: dict[str, None] = {}
        for record in records:
            seen.update(dict.fromkeys(record))
        headers = list(seen)
    print_csv(headers, [[r.get(h) for h in headers] for r in records])


STATUS_MARKS = {
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "running": ("…", "yellow"),
    "interrupted": ("⚠", "magenta"),
    "incomplete": ("◐", "yellow"),
    "completed": ("✓", "green"),
}
"""A run's, span's or experiment's status → its mark and rich style."""


def styled_status(status: str) -> Text:
    """``✓ succeeded`` in green, ``✗ failed`` in red…"""
    mark, style = STATUS_MARKS.get(status, ("?", "yellow"))
    return Text(f"{mark} {status}", style=style)


def format_duration(ms: float | None) -> str:
    """``850 µs``, ``12.5 ms``, ``3.20 s``; ``–`` for none."""
    if ms is None:
        return "–"
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def abbrev(value: Any, limit: int = 120) -> str:
    """``value`` on one line (JSON unless it is text), cut to ``limit`` characters with
    ``…``."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout, after what rich printed."""
    sys.stdout.flush()
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[], None]]:
    """A progress bar of ``total`` steps on stderr, when stderr is a terminal (and
    ``total`` is not 0); yields the function that advances it by one."""
    err = Console(stderr=True)
    if not err.is_terminal or not total:
        yield lambda: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # Lines printed on stdout go above the bar when stdout is the same terminal; piped,
    # they go their own way.
    with Progress(
        *columns, console=err, transient=True, redirect_stdout=sys.stdout.isatty()
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


RATIONALE_CHARS = 80
"""A score's rationale on its one line is cut to this (``--json`` has it whole)."""


def score_value(value: float | bool | str | None) -> str:
    """A score's value as given: ``true``/``false``, a number (``0.85``, ``3``), or the
    category."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def score_text(score: Score) -> Text:
    """One score on one line: ``helpful = 0.8 [good] (human) — the rationale, cut…``."""
    value = one_line(score_value(score.value))
    line = Text.assemble((one_line(score.name), "bold"), " = ", (value, "cyan"))
    if score.label is not None and score.kind != "categorical":
        line.append(f" [{one_line(score.label)}]")
    line.append(f" ({score.source})", style="dim")
    if score.rationale:
        line.append(f" — {abbrev(score.rationale, RATIONALE_CHARS)}", style="dim")
    return line
