"""``steptrace export-otlp``: re-send stored runs to an OTLP endpoint (backfill)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

import steptrace as st
from steptrace.cli.app import Status, mask_in_messages
from steptrace.cli.errors import CLIError
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
    from steptrace.otel.otlp import export_secrets

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
    unreachable = _unreachable(url)
    if unreachable:  # at once, rather than after the exporter's retries (~7 s)
        shown = mask_url(traces_endpoint(url))
        raise CLIError(
            mask_text(f"the OTLP endpoint {shown} cannot be reached: {unreachable}", secrets)
        )
    with _exporter_quiet() as heard:
        try:
            sent = export_runs(runs, url, headers or None)
        except RuntimeError as exc:
            reason = _reason(heard) or _unreachable(url)
            message = f"{exc}: {reason}" if reason else str(exc)
            raise CLIError(mask_text(message, secrets)) from None
    target = mask_url(traces_endpoint(url))
    sys.stdout.write(f"sent {len(runs):,} run(s), {sent:,} span(s) to {target}\n")


_EXPORTER_LOGGER = "opentelemetry.exporter.otlp"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[list[str]]:
    """Keep the OTLP exporter's own warnings (one per retry) off the terminal while
    ``export-otlp`` sends: the command reports the failure once, with their reason."""
    logger = logging.getLogger(_EXPORTER_LOGGER)
    collect = _Collect()
    saved = logger.propagate
    logger.addHandler(collect)
    logger.propagate = False
    try:
        yield collect.messages
    finally:
        logger.propagate = saved
        logger.removeHandler(collect)


def _reason(messages: list[str]) -> str:
    """Why the exporter failed, in a few words, from the last of its warnings."""
    for message in reversed(messages):
        errno = re.search(r"\[Errno -?\d+\] ([^\"')]+)", message)
        if errno:
            return errno.group(1).strip().lower()
        if "Failed to export" in message and "timeout" not in message:
            return " ".join(message.split())[:200]
        if "Transient error" in message:
            return " ".join(message.split())[:200]
    return ""


def _unreachable(url: str) -> str:
    """Why ``url``'s host cannot be reached (``connection refused``…), or ``""`` when it
    can: the exporter gives no reason when its timeout ends its retries."""
    import socket
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=2):
            return ""
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "strerror", None) or exc).lower()


def register(app: typer.Typer) -> None:
    app.command("export-otlp")(export_otlp_command)
