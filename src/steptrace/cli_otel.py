"""``steptrace export-otlp``: re-send stored runs to an OTLP endpoint (backfill)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

import steptrace as st
from steptrace.cli import CLIError, Status, mask_in_messages
from steptrace.masking import mask_text, mask_url


def export_otlp_command(
    run_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[RUN_ID]...", help="Runs (ids or unique prefixes)."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            metavar="URL",
            help="OTLP/HTTP endpoint (default: OTEL_EXPORTER_OTLP_ENDPOINT).",
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", metavar="KEY=VALUE", help="Sent with every request."),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Without ids: runs of this workflow.")
    ] = None,
    status: Annotated[Status | None, typer.Option("--status", "-s")] = None,
    since: Annotated[str | None, typer.Option("--since", metavar="TIME")] = None,
    last: Annotated[int, typer.Option("--last", "-n", min=1, help="Without ids: how many.")] = 100,
) -> None:
    """Re-send stored runs to an OTLP endpoint with their original trace and span ids
    and timestamps (a backend added later, runs recorded while the collector was down)."""
    from steptrace.backfill import export_runs, traces_endpoint
    from steptrace.otlp import export_secrets

    url = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not url:
        raise CLIError("give --endpoint URL (or set OTEL_EXPORTER_OTLP_ENDPOINT)")
    headers = {}
    for item in header or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            # Not echoed: a header is usually a credential (`authorization: Bearer …`).
            name = (item.split(":", 1)[0].split() or [""])[0]
            raise CLIError(f"--header {name!r}…: use KEY=VALUE (the value is not shown)")
        headers[key.strip()] = value.strip()
    secrets = export_secrets(url, headers)
    mask_in_messages(secrets)
    with st.Store.open() as store:
        if run_ids:
            runs = [store.run(run_id) for run_id in run_ids]
        else:
            chosen = store.runs(
                workflow=workflow,
                status=status.value if status else None,
                since=since,
                last=last,
            )
            runs = [store.run(r.run_id) for r in chosen]
    if not runs:
        raise CLIError("no runs match: nothing to send")
    try:
        sent = export_runs(runs, url, headers or None)
    except RuntimeError as exc:
        raise CLIError(mask_text(str(exc), secrets)) from None
    target = mask_url(traces_endpoint(url))
    sys.stdout.write(f"sent {len(runs):,} run(s), {sent:,} span(s) to {target}\n")


def register(app: typer.Typer) -> None:
    app.command("export-otlp")(export_otlp_command)
