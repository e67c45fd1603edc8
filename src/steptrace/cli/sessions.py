"""The command that lists sessions: ``sessions`` (the conversations or user journeys
runs were grouped in, the most recently active first), registered on the ``steptrace``
app by ``register(app)``. A session's runs are ``steptrace runs --session ID``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

import steptrace as st
from steptrace.cli.app import SinceFilter, UntilFilter, WorkflowFilter
from steptrace.cli.errors import CLIError
from steptrace.cli.names import check_workflow
from steptrace.cli.output import (
    FORMAT_HELP,
    STATUS_MARKS,
    Column,
    Format,
    make_console,
    note,
    output_format,
    print_dict_csv,
    print_json,
    print_table,
)
from steptrace.query.where import QueryError

_CSV_HEADERS = (
    "session_id",
    "runs",
    "first_started_at",
    "last_started_at",
    "last_ended_at",
    "statuses",
    "workflows",
)


def sessions_command(
    workflow: WorkflowFilter = None,
    last: Annotated[
        int, typer.Option("--last", "-n", min=1, help="How many, the most recently active first.")
    ] = 20,
    offset: Annotated[
        int, typer.Option("--offset", min=0, help="Skip this many first (the next page).")
    ] = 0,
    since: SinceFilter = None,
    until: UntilFilter = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON session objects.")] = False,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
) -> None:
    """List sessions (runs grouped by their session id), the one whose last run started
    most recently first: runs, first and last start, statuses, workflows (of the runs the
    filters choose). A session's runs: `runs --session SESSION_ID`."""
    fmt = output_format(fmt, as_json)
    with st.Store.open() as store:
        try:
            found = store.sessions(workflow, last, offset, since=since, until=until)
            if workflow is not None and not found:
                check_workflow(store, workflow)
            full = len(found) == last
            total = (
                store.count_sessions(workflow, since=since, until=until)
                if full
                else offset + len(found)
            )
        except QueryError as exc:
            raise CLIError(str(exc)) from None
        url = store.url
    more = ""
    if total > offset + len(found):
        more = (
            f"showing {offset + 1:,}–{offset + len(found):,} of {total:,} sessions; "
            f"--last N for more, --offset {offset + last} for the next page"
        )
    if fmt is not Format.table:
        if fmt is Format.json:
            print_json(found)
        else:
            print_dict_csv(
                [
                    {
                        **s,
                        "statuses": " ".join(f"{k}={n}" for k, n in s["statuses"].items()),
                        "workflows": " ".join(s["workflows"]),
                    }
                    for s in found
                ],
                _CSV_HEADERS,
            )
        if more:
            note(more)
        return
    console = make_console()
    if not found:
        filtered = workflow or since or until or offset
        console.print(Text(f"no {'matching ' if filtered else ''}sessions in {url}"))
        return
    rows = [
        (
            Text(s["session_id"], style="magenta"),
            Text(f"{s['runs']:,}"),
            Text(s["first_started_at"][:19].replace("T", " ")),
            Text(s["last_started_at"][:19].replace("T", " ")),
            _statuses(s["statuses"]),
            Text(", ".join(s["workflows"])),
        )
        for s in found
    ]
    columns = [
        Column("session"),
        Column("runs", justify="right", fold=False),
        Column("first run", fold=False),
        Column("last run", fold=False),
        Column("statuses"),
        Column("workflows"),
    ]
    print_table(console, columns, rows, whole="--json")
    if more:
        note(more)


def _statuses(statuses: dict[str, int]) -> Text:
    """``3 succeeded, 1 failed``, each in its status's colour."""
    text = Text()
    for status, n in statuses.items():
        if text:
            text.append(", ")
        text.append(f"{n} {status}", style=STATUS_MARKS.get(status, ("?", "yellow"))[1])
    return text


def register(app: typer.Typer) -> None:
    """Add the command to the ``steptrace`` app."""
    app.command("sessions")(sessions_command)
