"""The commands that run workflows: ``demo`` (the bundled triage workflow, N times)
and ``run`` (any ``@steptrace.workflow``, once, with ``--input`` as its arguments),
registered on the ``steptrace`` app by ``register(app)``.

Both record runs, so both end by flushing the store and shutting the tracer provider
down (every span exported, or a line saying how many were not), then print what to
look at next.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import shlex
import sys
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
import pydantic
import typer
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

import steptrace as st
from steptrace.cli.app import finish_recording, options, store_option
from steptrace.cli.errors import CLIError
from steptrace.cli.names import short_prefix
from steptrace.cli.output import format_duration, make_console, print_json, styled_status
from steptrace.cli.workflows import load_workflow, self_command
from steptrace.config import get_config
from steptrace.decorators import workflow_spec
from steptrace.masking import mask_url
from steptrace.sessions import checked
from steptrace.store.model import RunRecord

# --- demo ---------------------------------------------------------------------------


def demo_command(
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="How many runs to make.")] = 20,
    eject: Annotated[
        Path | None,
        typer.Option(
            "--eject",
            help="Write the demo workflow's source to this file (to edit it and act on "
            "recorded runs with --entry FILE_STEM:triage) instead of running it.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Run the bundled support-ticket triage workflow N times and say where to look next."""
    from steptrace.examples import triage

    console = make_console()
    if eject is not None:
        _eject_demo(console, Path(triage.__file__), eject)
        return
    if not options.debug and not triage.log.handlers:
        # Recorded in the store; the terminal shows the summary.
        triage.log.addHandler(logging.NullHandler())
        triage.log.propagate = False
    try:
        with console.status(f"running the triage workflow {runs} times…"):
            results = triage.run_demo(runs)
    finally:
        finish_recording()
    with st.Store.open() as store:
        records = [store.run(r.run_id) for r in results]
        failed = next((r for r in records if r.status == "failed"), None)
        example = failed or records[0]
        prefix = short_prefix(store, example.run_id)
    _print_demo_summary(console, records)
    command = [*self_command(), *store_option()]
    heading = "Look at a failed run:" if failed else "All runs succeeded. Look at one:"
    console.print(Text("\n" + heading, style="bold"))
    console.print("  " + shlex.join([*command, "show", prefix]), soft_wrap=True, markup=False)
    listing = [*command, "runs", *(["--status", "failed"] if failed else [])]
    console.print("  " + shlex.join(listing), soft_wrap=True, markup=False)
    console.print(Text("\nAsk across runs, or browse them:", style="bold"))
    for question in (["dist", "classify", "category"], ["stats", "triage"], ["ui"]):
        console.print("  " + shlex.join([*command, *question]), soft_wrap=True, markup=False)


def _eject_demo(console: Console, source: Path, target: Path) -> None:
    if target.exists():
        raise typer.BadParameter(f"{target} exists; give another file name", param_hint="--eject")
    if target.suffix != ".py" or not target.stem.isidentifier():
        raise typer.BadParameter(
            f"{target.name} is not an importable module name (like triage_demo.py)",
            param_hint="--eject",
        )
    target.write_text(source.read_text())
    entry = f"{target.stem}:triage"
    console.print(
        f"Wrote the demo workflow to {target}. Edit it (its prompts are at the top), then:"
    )
    command = [*self_command(), *store_option()]
    for example in (
        ["fork", "RUN_ID", "--from", "draft_reply", "--entry", entry],
        ["replay", "--workflow", "triage", "--last", "50", "--entry", entry],
    ):
        console.print("  " + shlex.join([*command, *example]), soft_wrap=True, markup=False)
    if target.parent.resolve() != Path.cwd().resolve():
        console.print(f"(run them from {target.parent}, or put it on PYTHONPATH)")


def _print_demo_summary(console: Console, records: Sequence[RunRecord]) -> None:
    """What the demo did, counted from the stored runs."""
    spans = [s for r in records for s in r.spans]
    counts = {
        "runs": len(records),
        "succeeded": sum(r.status == "succeeded" for r in records),
        "failed": sum(r.status == "failed" for r in records),
        "steps retried": sum(
            n > 1 for r in records for n in Counter(s.step_key for s in r.steps()).values()
        ),
        "LLM calls": sum(s.kind == "llm" for s in spans),
        "tool calls": sum(s.kind == "tool" for s in spans),
        "log lines": sum(len(s.logs) for s in spans),
    }
    categories = Counter(
        s.output["category"]
        for r in records
        for s in r.steps("classify")
        if s.status == "succeeded" and isinstance(s.output, dict) and "category" in s.output
    )
    rows: list[tuple[str, Text]] = [
        (label, Text(str(n), style={"succeeded": "green", "failed": "red"}.get(label, "")))
        for label, n in counts.items()
    ]
    rows.append(("categories", Text(", ".join(f"{c} {n}" for c, n in sorted(categories.items())))))
    rows.append(("store", Text(mask_url(get_config().store_url()))))
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if endpoint:
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        rows.append(("spans", Text(f"sent to {mask_url(endpoint)} (OTLP {protocol})")))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, value)
    console.print(Text(f"Ran the triage workflow {len(records)} times.", style="bold"))
    console.print(Padding(grid, (0, 0, 0, 2), expand=False))


# --- run ----------------------------------------------------------------------------


_TARGET_HELP = "e.g. myapp.flows:triage or path/to/flows.py:triage"
_RUN_OPTIONS = ("traceparent", "session_id", "tags")
"""The keyword arguments ``st.run`` keeps for itself."""
_INPUT_HELP = "Keyword arguments as a JSON object, or positional ones as a JSON array."


def run_command(
    target: Annotated[str, typer.Argument(metavar="MODULE:WORKFLOW", help=_TARGET_HELP)],
    input_json: Annotated[
        str, typer.Option("--input", "-i", metavar="JSON", help=_INPUT_HELP)
    ] = "{}",
    session: Annotated[
        str | None,
        typer.Option("--session", metavar="SESSION_ID", help="Record the run in this session."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Add this tag to the run (repeatable)."),
    ] = None,
) -> None:
    """Run a @steptrace.workflow once and print its run id, status and output."""
    workflow = load_workflow(target)
    try:
        spec = workflow_spec(workflow)
    except TypeError as exc:
        raise CLIError(f"{target}: {exc}") from None
    args, kwargs = _arguments(spec.fn, spec.signature, input_json)
    clash = sorted(set(kwargs) & set(_RUN_OPTIONS))
    if clash:
        raise CLIError(
            f"{spec.name} takes {', '.join(clash)} as keyword-only argument(s): a run option "
            "of the same name is in the way; make it positional"
        )
    try:
        session_id = checked(session)
    except ValueError as exc:
        raise CLIError(f"--session: {exc}") from None
    run_options: dict[str, Any] = {"session_id": session_id, "tags": tag or ()}
    try:
        if inspect.iscoroutinefunction(spec.fn):
            result = asyncio.run(st.arun(workflow, *args, **run_options, **kwargs))
        else:
            result = st.run(workflow, *args, **run_options, **kwargs)
    finally:
        finish_recording()
    with st.Store.open() as store:
        record = store.run(result.run_id)
        prefix = short_prefix(store, record.run_id)
    console = make_console()
    console.print(Text.assemble(("run     ", "bold"), record.run_id), soft_wrap=True)
    duration = f"  {format_duration(record.duration_ms)}"
    console.print(Text.assemble(("status  ", "bold"), styled_status(record.status), duration))
    if record.status == "succeeded":
        console.print(Text("output", style="bold"))
        print_json(record.output)
    command = [*self_command(), *store_option()]
    show_command = shlex.join([*command, "show", prefix])
    console.print(Text.assemble(("show    ", "bold"), show_command), soft_wrap=True)
    if record.status != "succeeded":
        error = record.error or {}
        if options.debug:  # the workflow's own traceback, as stored
            sys.stderr.write(str(error.get("traceback", "")))
        raise CLIError(
            f"run {prefix} failed: {error.get('type', 'Error')}: {error.get('message', '')}"
        )


def _arguments(
    fn: Callable[..., Any], signature: inspect.Signature, text: str
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``--input`` as call arguments, each converted to its parameter's annotation."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(
            f"--input is not valid JSON ({exc}); give a JSON object of keyword arguments, "
            """e.g. --input '{"name": "Ada"}'"""
        ) from None
    if isinstance(value, dict):
        args, kwargs = [], value
    elif isinstance(value, list):
        args, kwargs = value, {}
    else:
        raise CLIError(
            "--input must be a JSON object (keyword arguments) or a JSON array (positional "
            f"arguments), not {type(value).__name__}"
        )
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise CLIError(f"--input does not fit {fn.__name__}{signature}: {exc}") from None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: pass the JSON values as they are
        hints = {}
    for name, given in bound.arguments.items():
        hint = hints.get(name)
        if hint is None:
            continue
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            bound.arguments[name] = tuple(_convert(name, hint, v) for v in given)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            bound.arguments[name] = {k: _convert(k, hint, v) for k, v in given.items()}
        else:
            bound.arguments[name] = _convert(name, hint, given)
    return bound.args, bound.kwargs


def _convert(name: str, hint: Any, value: Any) -> Any:
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(hint)
    except Exception:  # a type pydantic cannot build a schema for
        return value
    try:
        return adapter.validate_json(orjson.dumps(value))
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        type_name = getattr(hint, "__name__", str(hint))
        raise CLIError(f"--input: {name!r} is not a valid {type_name}: {problems}") from None


def register(app: typer.Typer) -> None:
    """Add the commands to the ``steptrace`` app."""
    app.command("demo")(demo_command)
    app.command("run")(run_command)
