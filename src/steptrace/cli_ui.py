"""``steptrace ui``: the web UI on 127.0.0.1 (``steptrace.ui``), registered on the
``steptrace`` app by ``register(app)``. The UI's packages are an extra; without them
the command says how to install them."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from steptrace.cli import CLIError
from steptrace.config import get_config

_PORT_DEFAULT = 8765


def ui_command(
    store: Annotated[
        str | None,
        typer.Option("--store", metavar="URL", help="Store path or URL (default: the global one)."),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; beyond loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = _PORT_DEFAULT,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            help="Every request must carry it (default: $STEPTRACE_UI_TOKEN).",
        ),
    ] = None,
    trace_url: Annotated[
        str | None,
        typer.Option(
            "--trace-url",
            metavar="TEMPLATE",
            help="Link runs to a trace viewer, e.g. 'http://jaeger:16686/trace/{trace_id}' "
            "(default: $STEPTRACE_UI_TRACE_URL).",
        ),
    ] = None,
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser.")] = False,
) -> None:
    """Serve the web UI: runs, a run's waterfall and spans, diff, compare, stats."""
    try:
        from steptrace import ui
    except ImportError as exc:
        raise CLIError(f"the web UI needs its extra: pip install 'steptrace[ui]' ({exc})") from None
    token = token or os.environ.get("STEPTRACE_UI_TOKEN") or None
    trace_url = trace_url or os.environ.get("STEPTRACE_UI_TRACE_URL") or None
    ui.serve(
        store or get_config().store_url(),
        host=host,
        port=port,
        token=token,
        trace_url=trace_url,
        open_browser=not no_open,
    )


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)
