"""The commands that give and list scores: ``score`` (score a run or a span attempt, or
take a score back with ``--delete``) and ``scores`` (list them), registered on the
``steptrace`` app by ``register(app)``.

A value on the command line is text: ``true``/``false`` is a boolean score, a number a
numeric one, anything else a category (``--type`` says which when the text alone
would mislead, e.g. the category ``"3"``). A value that cannot be a score is a usage
error (exit code 2); a target the store does not have exits with 1, as ``show`` does.
"""

from __future__ import annotations

import enum
import math
from dataclasses import fields
from typing import Annotated

import click
import typer
from rich.text import Text

import steptrace as st
from steptrace.cli.errors import CLIError
from steptrace.cli.names import short_prefix
from steptrace.cli.output import (
    FORMAT_HELP,
    Column,
    Format,
    make_console,
    one_line,
    output_format,
    print_dict_csv,
    print_json,
    print_table,
    score_text,
    score_value,
)
from steptrace.evals import scoring
from steptrace.store.scores import Score


class Source(enum.StrEnum):
    human = "human"
    code = "code"
    llm = "llm"


class Kind(enum.StrEnum):
    numeric = "numeric"
    boolean = "boolean"
    categorical = "categorical"


_TARGET_HELP = (
    "A run id (or prefix), RUN/SPAN, RUN/STEP (a step key such as draft_reply#0, or a step "
    "name the run ran once: its last attempt), or a span id: the run or span attempt scored."
)


def parse_value(text: str, kind: Kind | None = None) -> float | bool | str:
    """The score ``text`` gives: ``true``/``false`` → a boolean, a finite number → a
    number, other text → a category; ``kind`` forces one reading. ``ValueError`` says
    why ``text`` cannot be read as asked."""
    word = text.strip().lower()
    if kind is Kind.categorical:
        return text
    if word in ("true", "false"):
        if kind is Kind.numeric:
            raise ValueError(f"a numeric score is a number, not {text!r}")
        return word == "true"
    if kind is Kind.boolean:
        if word in ("1", "0"):
            return word == "1"
        raise ValueError(f"a boolean score is true or false, not {text!r}")
    try:
        number = float(word)
    except ValueError:
        if kind is Kind.numeric:
            raise ValueError(f"a numeric score is a number, not {text!r}") from None
        return text
    if not math.isfinite(number):
        raise ValueError(
            f"a score's value must be a finite number, not {text!r} "
            "(--type categorical gives it as a category)"
        )
    return number


def _target_text(store: st.Store, score: Score) -> str:
    run = short_prefix(store, score.run_id)
    if score.span_id is None:
        return f"run {run}"
    return f"{score.step} ({run}/{score.span_id})"


def score_command(
    target: Annotated[str, typer.Argument(metavar="TARGET", help=_TARGET_HELP)],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The score's name.")],
    value: Annotated[
        str | None,
        typer.Argument(
            metavar="VALUE",
            help="true/false, a number, or a category (not with --delete).",
            show_default=False,
        ),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="A label for a number or boolean.")
    ] = None,
    rationale: Annotated[
        str | None, typer.Option("--rationale", metavar="TEXT", help="Why this value.")
    ] = None,
    source: Annotated[Source, typer.Option("--source", help="Who scored.")] = Source.human,
    kind: Annotated[
        Kind | None,
        typer.Option("--type", help="Read VALUE as this kind (default: from the text)."),
    ] = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove the score NAME given by --source.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored score.")] = False,
) -> None:
    """Score a run or one span attempt (scoring it again with the same NAME and
    --source replaces the value), or remove a score with --delete."""
    if delete:
        if value is not None or label is not None or rationale is not None or kind is not None:
            raise click.UsageError("--delete takes TARGET and NAME (and --source) only")
        _delete(target, name, source.value, as_json)
        return
    if value is None:
        raise click.UsageError("give a VALUE (true/false, a number or a category), or --delete")
    try:
        given = parse_value(value, kind)
    except ValueError as exc:
        raise CLIError(str(exc), exit_code=2) from None
    with st.Store.open() as store:
        try:
            stored = store.score(
                target, name, given, label=label, rationale=rationale, source=source.value
            )
        except ValueError as exc:
            raise CLIError(str(exc), exit_code=2) from None
        scoring.export(store, stored)  # a log record, when OTEL_LOGS_EXPORTER says so
        where = _target_text(store, stored)
    if as_json:
        print_json(stored.to_dict())
        return
    make_console().print(Text.assemble(("scored ", "bold"), f"{where}: ", score_text(stored)))


def _delete(target: str, name: str, source: str, as_json: bool) -> None:
    with st.Store.open() as store:
        run_id, span_id, _ = store.target(target)
        deleted = store.delete_score(target, name, source)
        on = f"run {short_prefix(store, run_id)}" + (f" span {span_id}" if span_id else "")
    if as_json:
        gone = {"run_id": run_id, "span_id": span_id, "name": name, "source": source}
        print_json(gone | {"deleted": deleted})
        if not deleted:
            raise typer.Exit(1)
        return
    if not deleted:
        raise CLIError(f"no {source} score {name!r} on {on}")
    make_console().print(f"deleted the {source} score {name!r} on {on}")


_SCORE_FIELDS = [f.name for f in fields(Score)]


def scores_command(
    run_id: Annotated[
        str | None,
        typer.Argument(metavar="RUN_ID", help="Only this run's (an id or a prefix)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only scores of this name.")] = None,
    source: Annotated[Source | None, typer.Option("--source", help="Only these.")] = None,
    step: Annotated[
        str | None, typer.Option("--step", help="Only scores on this step's attempts.")
    ] = None,
    last: Annotated[
        int, typer.Option("--last", "-n", min=1, help="How many, last given first.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON score objects.")] = False,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
) -> None:
    """List scores, the last given (or changed) first."""
    fmt = output_format(fmt, as_json)
    with st.Store.open() as store:
        found = store.scores(
            run_id,
            name=name,
            source=source.value if source else None,
            step=step,
            limit=last,
        )
        prefixes = {r: short_prefix(store, r) for r in {s.run_id for s in found}}
        url = store.url
    if fmt is Format.json:
        print_json([s.to_dict() for s in found])
        return
    if fmt is Format.csv:
        print_dict_csv([s.to_dict() for s in found], _SCORE_FIELDS)
        return
    if not found:
        make_console().print(Text(f"no matching scores in {url}"))
        return
    rows = [
        [
            Text(prefixes[s.run_id], style="cyan"),
            Text("(run)", style="dim") if s.span_id is None else Text(f"{s.step} {s.span_id[:8]}"),
            Text(one_line(s.name)),
            Text(one_line(score_value(s.value))),
            Text(one_line(s.label or "") if s.kind != "categorical" else ""),
            Text(s.source),
            Text(one_line(s.rationale or "")),
            Text(s.updated_at[:19].replace("T", " ")),
        ]
        for s in found
    ]
    columns = [
        Column("run", fold=False),
        Column("target"),
        Column("name"),
        Column("value"),
        Column("label"),
        Column("source", fold=False),
        Column("rationale", max_chars=160, cut=True),
        Column("updated", fold=False),
    ]
    print_table(make_console(), columns, rows, whole="--json")


def register(app: typer.Typer) -> None:
    """Add the commands to the ``steptrace`` app."""
    app.command("score")(score_command)
    app.command("scores")(scores_command)
