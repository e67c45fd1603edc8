"""The ``steptrace`` typer app and its global options (``--store``, ``--debug``,
``--version``): what they set for the command that runs (``options``), the option
types several commands share (the run filters of ``runs`` and ``export``, declared
once here), and how a command that recorded runs ends (``finish_recording``).

The command modules register their commands on ``app``; ``steptrace.cli`` does that
for every one of them and holds the entry point.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console

import steptrace as st
from steptrace.cli.errors import masked
from steptrace.masking import mask_url


@dataclass
class Options:
    """The global options of the command being run."""

    debug: bool = False
    store: str | None = None
    """The ``--store`` given on the command line (repeated in the commands we suggest)."""
    secrets: tuple[str, ...] = ()
    """Credentials a command was given (``export-otlp --endpoint/--header``), masked in
    every message as the store's and the OTLP variables' are."""


options = Options()
"""Set by the app's callback before any command runs."""


class Status(enum.StrEnum):
    """The run statuses ``--status`` accepts."""

    succeeded = "succeeded"
    failed = "failed"
    running = "running"
    interrupted = "interrupted"


class LLMChoice(enum.StrEnum):
    """Where LLM calls of a run made from a recording are answered (``--llm``)."""

    live = "live"
    recorded = "recorded"


# The run filters (``Store.runs``'s), as ``runs`` and ``export`` take them.
WorkflowFilter = Annotated[
    str | None, typer.Option("--workflow", "-w", help="Only runs of this workflow.")
]
StatusFilter = Annotated[Status | None, typer.Option("--status", "-s", help="Only these.")]
WhereFilter = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        metavar="PREDICATE",
        help="Only runs where e.g. 'classify.output.label = billing', "
        "'classify.attempts > 1' or 'score.helpful < 0.5' (repeatable: all must hold).",
    ),
]
SinceFilter = Annotated[
    str | None,
    typer.Option("--since", metavar="TIME", help="Started at or after: ISO-8601 or 2h, 7d…"),
]
UntilFilter = Annotated[
    str | None, typer.Option("--until", metavar="TIME", help="Started before: ISO or 2h…")
]
TagFilter = Annotated[
    list[str] | None,
    typer.Option("--tag", metavar="TAG", help="Only runs with this tag (repeatable)."),
]
ForkedFromFilter = Annotated[
    str | None,
    typer.Option(
        "--forked-from", metavar="RUN_ID", help="Only forks of this run (an id or a prefix)."
    ),
]
ReplayOfFilter = Annotated[
    str | None,
    typer.Option(
        "--replay-of", metavar="RUN_ID", help="Only replays of this run (an id or a prefix)."
    ),
]
DerivedFilter = Annotated[
    bool, typer.Option("--derived", help="Only runs made from another: forks and replays.")
]
SessionFilter = Annotated[
    str | None,
    typer.Option("--session", metavar="SESSION_ID", help="Only runs of this session (exact id)."),
]


def run_filters(
    store: st.Store,
    workflow: str | None,
    status: Status | None,
    since: str | None,
    until: str | None,
    tag: list[str] | None,
    where: list[str] | None,
    forked_from: str | None,
    replay_of: str | None,
    derived: bool,
) -> dict[str, Any]:
    """The ``Store.runs`` keyword arguments the filter options give; a run id of
    ``--forked-from``/``--replay-of`` may be a prefix of a stored run's (``RunNotFound``
    when it names none, or several)."""
    return {
        "workflow": workflow,
        "status": status.value if status else None,
        "since": since,
        "until": until,
        "tag": tag,
        "where": where,
        "forked_from": None if forked_from is None else store.resolve(forked_from),
        "replay_of": None if replay_of is None else store.resolve(replay_of),
        "derived": derived,
    }


app = typer.Typer(
    name="steptrace",
    help="Trace AI workflows step by step: run them, list runs, look inside one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def mask_in_messages(secrets: Sequence[str]) -> None:
    """Mask ``secrets`` (credentials a command was given) in every message from now on,
    as the store's and the OTLP variables' are."""
    options.secrets = (*options.secrets, *secrets)


def store_option() -> list[str]:
    """``--store URL`` as given, for the commands we suggest (its password masked)."""
    return ["--store", mask_url(options.store)] if options.store else []


_STORE_HELP = "Store path or URL (default: $STEPTRACE_STORE, else ./.steptrace/steptrace.db)."


def version() -> str:
    """steptrace's version: ``steptrace.__version__`` when the package defines it, else
    the installed distribution's."""
    found = getattr(st, "__version__", None)
    if isinstance(found, str):
        return found
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("steptrace")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"steptrace {version()}\n")
        raise typer.Exit()


@app.callback()
def _setup(
    store: Annotated[str | None, typer.Option("--store", metavar="URL", help=_STORE_HELP)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print steptrace's version and exit.",
        ),
    ] = False,
) -> None:
    options.debug = debug
    options.store = store
    if store is not None:
        st.configure(store=store)
    _configure_logging(debug)
    # Imported here: the OTLP module pulls in the SDK, which `steptrace --help` never needs.
    from steptrace.otel.otlp import configure_sdk
    from steptrace.store.engines import record_export_report

    configure_sdk(report=record_export_report)


def finish_recording() -> None:
    """At the end of a command that recorded runs: write every record and export every
    span before the process exits; say plainly if spans could not be exported (the
    store has them all)."""
    # Imported here: the OTLP module pulls in the SDK, which `steptrace --help` never needs.
    from steptrace.otel.otlp import export_counts, shutdown_sdk

    if not st.flush():
        logging.getLogger("steptrace").warning("steptrace: not all records were written in time")
    shutdown_sdk()
    counts = export_counts()
    if counts.dropped:
        Console(stderr=True, highlight=False).print(
            f"[yellow]{counts.dropped:,} spans were not exported[/] ({counts.describe()}); "
            "the store has them all: re-send with [bold]steptrace export-otlp[/] "
            "--since … --endpoint …"
        )


class _BriefFormatter(logging.Formatter):
    """One line per record: a failing exporter is reported, not dumped as a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        if options.debug or not record.exc_info:
            return masked(super().format(record), options.secrets)
        exc = record.exc_info[1]
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return masked(
                f"{super().format(record)} ({type(exc).__name__}: {exc})", options.secrets
            )
        finally:
            record.exc_info, record.exc_text = saved


def _configure_logging(debug: bool) -> None:
    root = logging.getLogger()
    if root.handlers:  # the host process configured logging already
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO if debug else logging.WARNING)
    handler.setFormatter(_BriefFormatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    # INFO records must be created for steps to capture them; the handler decides
    # what reaches the terminal.
    root.setLevel(logging.INFO)
