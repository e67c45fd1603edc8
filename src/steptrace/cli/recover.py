"""``steptrace recover``: resume the interrupted runs of durable workflows
(``steptrace.recovery``), once or, with ``--watch``, every few seconds until SIGINT or
SIGTERM; registered on the ``steptrace`` app by ``register(app)``.

It prints a line per run as it ends (its id, workflow, outcome, resume count, time) and
a summary; ``--json`` prints the same as one JSON object, or with ``--watch`` as JSON
lines (one per run, then ``{"summary": …}``). A signal lets the run in progress finish
first (a second SIGINT stops at once). Without ``--watch`` the exit status is 1 when a
run failed again or was skipped.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import orjson
import typer
from rich.text import Text

import steptrace as st
from steptrace.cli.app import finish_recording, options
from steptrace.cli.errors import masked
from steptrace.cli.names import check_workflow
from steptrace.cli.output import format_duration, make_console, note, print_json, styled_status
from steptrace.config import get_config
from steptrace.masking import mask_url
from steptrace.recovery import Outcome, Summary, recover, watch
from steptrace.store.schema import missing


def recover_command(
    watch_: Annotated[
        bool,
        typer.Option(
            "--watch", help="Keep watching (a service) until SIGINT or SIGTERM, not one pass."
        ),
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=0.05, metavar="SECONDS", help="With --watch: seconds between passes."
        ),
    ] = 5.0,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, help="At most N runs per pass (default: all)."),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only runs of this workflow.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (with --watch: a JSON object per line).")
    ] = False,
) -> None:
    """Resume interrupted runs of durable workflows, oldest first (each run by one
    recoverer, however many run at once)."""
    url = get_config().store_url()
    if workflow is not None and not watch_ and not missing(url):
        with st.Store.open() as store:
            check_workflow(store, workflow)
    report = _Report(as_json, streaming=watch_)
    with _stopping_on_signals() as stop:
        try:
            if watch_:
                note(
                    f"watching {mask_url(url)} for interrupted durable runs every "
                    f"{interval:g} s; SIGINT or SIGTERM stops after the run in progress"
                )
                summary = watch(
                    interval_s=interval,
                    limit=limit,
                    workflow=workflow,
                    stop=stop,
                    on_outcome=report.outcome,
                    on_error=_warn,
                )
            else:
                summary = Summary()
                for outcome in recover(
                    limit=limit, workflow=workflow, stop=stop, on_outcome=report.outcome
                ):
                    summary.add(outcome)
                summary.finish()
        finally:
            finish_recording()
    report.summary(summary, mask_url(url))
    if not watch_ and (summary.failed or summary.skipped):
        raise typer.Exit(1)


_STATUS_WIDTH = len("✓ succeeded")


class _Report:
    """Prints outcomes as they come, then the summary."""

    def __init__(self, as_json: bool, *, streaming: bool) -> None:
        self.as_json = as_json
        self.streaming = streaming
        self.outcomes: list[dict[str, Any]] = []
        self.console = make_console()

    def outcome(self, outcome: Outcome) -> None:
        if self.as_json:
            if self.streaming:
                _json_line(outcome.to_dict())
            else:
                self.outcomes.append(outcome.to_dict())
            return
        status = (
            Text("– skipped", style="yellow")
            if outcome.status == "skipped"
            else styled_status(outcome.status)
        )
        status.pad_right(_STATUS_WIDTH - status.cell_len)
        line = Text.assemble(
            status,
            "  ",
            outcome.run_id,
            "  ",
            (outcome.workflow or "?", "bold"),
            f"  resume {outcome.resume_count}",
            f"  {format_duration(outcome.seconds * 1000)}",
        )
        if outcome.error:
            line.append(f"  {masked(outcome.error, options.secrets)}", style="dim")
        self.console.print(line, soft_wrap=True)

    def summary(self, summary: Summary, store: str) -> None:
        data = summary.to_dict()
        if self.as_json:
            if self.streaming:
                _json_line({"summary": data})
            else:
                print_json({"store": store, "runs": self.outcomes, "summary": data})
            return
        if not summary.runs:
            self.console.print(f"no interrupted durable runs to recover in {store}", soft_wrap=True)
            return
        self.console.print(
            Text.assemble(
                (f"recovered {summary.runs} run{'s' if summary.runs != 1 else ''}", "bold"),
                f" in {format_duration(summary.seconds * 1000)}: ",
                (f"{summary.succeeded} succeeded", "green" if summary.succeeded else ""),
                ", ",
                (f"{summary.failed} failed", "red" if summary.failed else ""),
                ", ",
                (f"{summary.skipped} skipped", "yellow" if summary.skipped else ""),
            ),
            soft_wrap=True,
        )


def _json_line(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


def _warn(exc: Exception) -> None:
    note(
        masked(f"could not recover runs: {type(exc).__name__}: {exc}", options.secrets)
        + "; trying again"
    )


@contextmanager
def _stopping_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM (the work in progress goes on to its end; a
    second SIGINT raises ``KeyboardInterrupt`` as usual); the handlers before are put
    back after."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()  # nothing printed here: the main thread may be printing

    previous: dict[signal.Signals, Callable[..., Any] | int | None] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def register(app: typer.Typer) -> None:
    """Add the command to the ``steptrace`` app."""
    app.command("recover")(recover_command)
