"""``steptrace ui``: the web UI on 127.0.0.1 (``steptrace.ui``), registered on the
``steptrace`` app by ``register(app)``. The UI's packages are an extra; without them
the command says how to install them.

The token comes from ``--token``, ``--token-file PATH`` or ``STEPTRACE_UI_TOKEN``: a
command line is visible to every user of the machine (``ps``), a file or the
environment is not."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from steptrace.cli.errors import CLIError
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
            help="Every request must carry it (default: $STEPTRACE_UI_TOKEN). Other users "
            "of this machine can read a command line (ps): prefer STEPTRACE_UI_TOKEN or "
            "--token-file.",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="PATH",
            help="Read the token from this file (its first line; keep it readable by you only).",
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
    token = ui_token(token, token_file)
    trace_url = trace_url or os.environ.get("STEPTRACE_UI_TRACE_URL") or None
    ui.serve(
        store or get_config().store_url(),
        host=host,
        port=port,
        token=token,
        trace_url=trace_url,
        open_browser=not no_open,
    )


def ui_token(given: str | None, path: Path | None) -> str | None:
    """The token from ``--token``, ``--token-file`` or ``STEPTRACE_UI_TOKEN`` (in that
    order; both options at once is a mistake). ``CLIError`` for a file that cannot be
    read or holds no token."""
    if given is not None and path is not None:
        raise CLIError("give --token or --token-file, not both")
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                line = f.readline()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CLIError(f"cannot read the token file {str(path)!r}: {reason}") from None
        token = line.strip()
        if not token:
            raise CLIError(
                f"the token file {str(path)!r} is empty: put the token on its first line"
            )
        return token
    if given is not None:
        if not given.strip():
            raise CLIError("--token is empty")
        return given
    return os.environ.get("STEPTRACE_UI_TOKEN") or None


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)
