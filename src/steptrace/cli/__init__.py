"""The ``steptrace`` command line (also ``python -m steptrace``).

The CLI is an *application*: it installs the OpenTelemetry SDK (``OTEL_*``
variables, an OTLP exporter only when configured) and logging, runs or reads
workflows through the public API, and at the end of a command that recorded runs
flushes the store and shuts the tracer provider down so every span is exported.

A mistake the user can fix (a bad id, bad ``--input``, a misconfigured store or
exporter) is one ``error: …`` line on stderr and a non-zero exit code; ``--debug``
adds the traceback.

The package: ``app`` (the typer app and its global options), ``output`` (how
everything prints), ``errors`` (``CLIError`` and the one-line report),
``names`` (run-id prefixes, unknown workflow and step names), ``diffs`` (how a diff of
two runs prints), ``workflows`` (importing and running workflows), and one module per
command group, each with a ``register(app)``. This module registers them, in the
order ``--help`` lists them, and holds the entry point; imports go one way, from
here down to the command modules and from them down to the shared ones.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

import typer.main

from steptrace.cli import (
    acting,
    datasets,
    experiments,
    otel,
    query,
    recover,
    run,
    runs,
    scores,
    sessions,
    store,
    ui,
)
from steptrace.cli.app import app, options
from steptrace.cli.errors import report

__all__ = ["app", "main"]

run.register(app)  # demo, run
runs.register(app)  # runs, show
sessions.register(app)  # sessions
query.register(app)  # dist, stats, diff, compare, sql, export, index
scores.register(app)  # score, scores
acting.register(app)  # resume, fork, replay
datasets.register(app)  # dataset add, list, show, rm, export, correct
experiments.register(app)  # experiment NAME, compare, list, show, rm
otel.register(app)  # export-otlp
ui.register(app)  # ui
store.register(app)  # status, migrate, prune
recover.register(app)  # recover


@functools.cache
def _command() -> Any:
    # Built once: typer reads every command's signature (~0.5 s), and a process that
    # calls ``main`` again (tests, an embedding application) need not pay it again.
    return typer.main.get_command(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``steptrace`` command line (``argv`` defaults to ``sys.argv[1:]``)."""
    command = _command()
    try:
        command.main(args=argv, prog_name="steptrace")
    except SystemExit:
        raise
    except Exception as exc:
        sys.exit(report(exc, debug=options.debug, secrets=options.secrets))
