"""The commands that look after the store itself: ``status`` (runs by status, spill
journals, write-trouble reports), ``migrate`` (apply pending schema migrations) and
``prune`` (retention), registered on the ``steptrace`` app by
``register(app)``. All act on the configured store (``--store`` or
``STEPTRACE_STORE``) and take ``--json``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

import steptrace as st
from steptrace.cli.errors import CLIError
from steptrace.cli.output import make_console, print_json
from steptrace.config import get_config
from steptrace.masking import mask_text, url_secrets
from steptrace.query.where import QueryError
from steptrace.store import journal
from steptrace.store.migrations import MIGRATIONS
from steptrace.store.schema import describe, migrate_store

_JSON_HELP = "Print JSON."


def migrate_command(
    as_json: Annotated[bool, typer.Option("--json", help=_JSON_HELP)] = False,
) -> None:
    """Apply the schema migrations the store lacks (creating it if needed); says which
    were applied, or that the schema is current."""
    url = get_config().store_url()
    applied = migrate_store(url)
    if as_json:
        print_json({"store": describe(url), "applied": applied, "current": MIGRATIONS[-1].name})
        return
    console = make_console()
    if applied:
        for name in applied:
            console.print(f"applied {name}")
        console.print(f"{describe(url)}: schema is now at {MIGRATIONS[-1].name}")
    else:
        console.print(f"{describe(url)}: schema is current ({MIGRATIONS[-1].name})")


def prune_command(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Delete runs that started before this long ago (30d, 12h, 2w) or an "
            "ISO-8601 time.",
        ),
    ],
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only runs of this workflow.")
    ] = None,
    keep_failed: Annotated[
        bool, typer.Option("--keep-failed", help="Keep failed runs, however old.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="Runs deleted per transaction.")
    ] = 500,
    as_json: Annotated[bool, typer.Option("--json", help=_JSON_HELP)] = False,
) -> None:
    """Delete old runs with their spans, LLM calls and logs, a batch of runs per
    transaction (writers in other processes keep going)."""
    from steptrace.store.retention import prune  # kept off the path of `steptrace --help`

    try:
        result = prune(
            get_config().store_url(),
            older_than,
            workflow=workflow,
            keep_failed=keep_failed,
            dry_run=dry_run,
            batch_runs=batch,
        )
    except QueryError as exc:
        raise CLIError(f"--older-than: {exc}") from None
    if as_json:
        print_json(result.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    scope = f" of {workflow}" if workflow else ""
    kept = ", failed runs kept" if keep_failed else ""
    details: list[Any] = [
        f"{verb} {result.runs:,} runs{scope} started before {result.cutoff}{kept}, with "
        f"{result.spans:,} spans, {result.llm_calls:,} LLM calls and {result.logs:,} log records"
    ]
    if not dry_run and result.batches:
        details.append(f" in {result.batches} transaction(s)")
    make_console().print("".join(details))


def status_command(
    reports: Annotated[
        int, typer.Option("--reports", min=0, help="How many recent write-trouble reports.")
    ] = 5,
    as_json: Annotated[bool, typer.Option("--json", help=_JSON_HELP)] = False,
) -> None:
    """The store's state: runs by status (interrupted ones included), the spill journals
    waiting to be written, live writer processes, recent reports of write trouble
    (records spilled, quarantined or lost) from every process, and where spans are
    exported (credentials masked)."""
    # Imported here: the OTLP module pulls in the SDK, which `steptrace --help` never needs.
    from steptrace.otel.otlp import describe_config, export_secrets

    url = get_config().store_url()
    with st.Store.open(url) as store:  # opening it sweeps interrupted runs, replays orphans
        state = store.status(reports)
    by_status, writers, recent = state["runs"], state["writers"], state["reports"]
    journals = journal.pending(journal.spill_dir(url))
    # Reports written by an older steptrace may hold an unmasked error text.
    secrets = (*url_secrets(url), *export_secrets())
    for row in recent:
        if row.get("last_error"):
            row["last_error"] = mask_text(str(row["last_error"]), secrets)
    otlp = describe_config()
    status: dict[str, Any] = {
        "store": describe(url),
        "schema": state["schema"],
        "runs": by_status,
        "writers": writers,
        "journals": journals,
        "reports": recent,
        "health": st.health(),
        "otlp": otlp,
    }
    if as_json:
        print_json(status)
        return
    console = make_console()
    console.print(f"store     {status['store']} (schema {status['schema']})")
    counts = " · ".join(f"{name} {n:,}" for name, n in by_status.items()) or "none"
    console.print(f"runs      {counts}")
    console.print(f"writers   {len(writers)} live process(es)")
    if journals:
        total = sum(j["bytes"] for j in journals)
        live = sum(1 for j in journals if j["live"])
        console.print(
            f"spill     {len(journals)} journal(s), {total:,} bytes waiting ({live} of live "
            "processes: they write them when the store takes writes again)"
        )
    else:
        console.print("spill     nothing waiting: every spilled record is in the store")
    if recent:
        console.print("reports   (newest first)")
        for row in recent:
            console.print(
                f"  {row['reported_at'][:19]}  {row['process']}: {row['written']:,} written, "
                f"{row['spilled']:,} spilled, {row['replayed']:,} replayed, "
                f"{row['quarantined']:,} quarantined, {row['lost']:,} lost"
                + (f" — {row['last_error']}" if row["last_error"] else "")
            )
    else:
        console.print("reports   no write trouble reported")
    if otlp["endpoints"]:
        where = ", ".join(f"{url} ({name})" for name, url in otlp["endpoints"].items())
        headers = ", ".join(f"{name}={value}" for name, value in otlp["headers"].items())
        console.print(
            f"spans     OTLP {otlp['protocol']} to {where}"
            + (f"; headers {headers}" if headers else ""),
            markup=False,
        )
    else:
        console.print("spans     not exported (no OTEL_EXPORTER_OTLP_ENDPOINT)")


def register(app: typer.Typer) -> None:
    """Add the commands to the ``steptrace`` app."""
    app.command("status")(status_command)
    app.command("migrate")(migrate_command)
    app.command("prune")(prune_command)
