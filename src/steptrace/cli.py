"""The ``steptrace`` command line (also ``python -m steptrace``).

The CLI is an *application*: it installs the OpenTelemetry SDK (``OTEL_*``
variables, an OTLP exporter only when configured) and logging, runs or reads
workflows through the public API, and at the end of a command that recorded runs
flushes the store and shuts the tracer provider down so every span is exported.

A mistake the user can fix (a bad id, bad ``--input``, a misconfigured store or
exporter) is one ``error: …`` line on stderr and a non-zero exit code; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import importlib.util
import inspect
import json
import logging
import os
import shlex
import shutil
import sys
import traceback
import typing
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import click
import orjson
import pydantic
import typer
import typer.main
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

import steptrace as st
from steptrace import export as export_tables
from steptrace.cli_output import FORMAT_HELP, Column, Format, output_format, print_table
from steptrace.cli_output import console as output_console
from steptrace.cli_output import note as _note
from steptrace.cli_output import print_dict_csv as _print_dict_csv
from steptrace.config import get_config
from steptrace.masking import mask_text, mask_url, url_secrets
from steptrace.record import stored_name
from steptrace.store.model import RunRecord, SpanView
from steptrace.where import QueryError


class CLIError(Exception):
    """A mistake on the command line: reported as one line, without a traceback."""


@dataclass
class _Options:
    debug: bool = False
    store: str | None = None
    """The ``--store`` given on the command line (repeated in the commands we suggest)."""
    secrets: tuple[str, ...] = ()
    """Credentials a command was given (``export-otlp --endpoint/--header``), masked in
    every message as the store's and the OTLP variables' are."""


_options = _Options()


class Status(enum.StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    running = "running"
    interrupted = "interrupted"


app = typer.Typer(
    name="steptrace",
    help="Trace AI workflows step by step: run them, list runs, look inside one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console() -> Console:
    return output_console()


def _masked(text: str) -> str:
    """``text`` for the terminal: the store's and the OTLP export's credentials masked
    (an error's text may echo them: libpq quotes the URL it could not parse)."""
    from steptrace.otlp import export_secrets

    try:
        secrets = (*url_secrets(get_config().store_url()), *export_secrets(), *_options.secrets)
    except Exception:  # a message must get out whatever the configuration
        secrets = ()
    return mask_text(text, secrets)


def mask_in_messages(secrets: Sequence[str]) -> None:
    """Mask ``secrets`` (credentials a command was given) in every message from now on,
    as the store's and the OTLP variables' are."""
    _options.secrets = (*_options.secrets, *secrets)


def _store_option() -> list[str]:
    """``--store URL`` as given, for the commands we suggest (its password masked)."""
    return ["--store", mask_url(_options.store)] if _options.store else []


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
    _options.debug = debug
    _options.store = store
    if store is not None:
        st.configure(store=store)
    _configure_logging(debug)
    from steptrace.otlp import configure_sdk

    configure_sdk()


class _BriefFormatter(logging.Formatter):
    """One line per record: a failing exporter is reported, not dumped as a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        if _options.debug or not record.exc_info:
            return _masked(super().format(record))
        exc = record.exc_info[1]
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return _masked(f"{super().format(record)} ({type(exc).__name__}: {exc})")
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


def _finish_recording() -> None:
    """Write every record and export every span before the process exits; say plainly
    if spans could not be exported (the store has them all)."""
    from steptrace.otlp import export_counts, shutdown_sdk

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


# --- demo ---------------------------------------------------------------------------


@app.command()
def demo(
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="How many runs to make.")] = 20,
) -> None:
    """Run the bundled support-ticket triage workflow N times and say where to look next."""
    from steptrace.examples import triage

    console = _console()
    if not _options.debug and not triage.log.handlers:
        # Recorded in the store; the terminal shows the summary.
        triage.log.addHandler(logging.NullHandler())
        triage.log.propagate = False
    try:
        with console.status(f"running the triage workflow {runs} times…"):
            results = triage.run_demo(runs)
    finally:
        _finish_recording()
    with st.Store.open() as store:
        records = [store.run(r.run_id) for r in results]
        failed = next((r for r in records if r.status == "failed"), None)
        example = failed or records[0]
        prefix = _short_prefix(store, example.run_id)
    _print_demo_summary(console, records)
    command = [*_self_command(), *_store_option()]
    heading = "Look at a failed run:" if failed else "All runs succeeded. Look at one:"
    console.print(Text("\n" + heading, style="bold"))
    console.print("  " + shlex.join([*command, "show", prefix]), soft_wrap=True, markup=False)
    listing = [*command, "runs", *(["--status", "failed"] if failed else [])]
    console.print("  " + shlex.join(listing), soft_wrap=True, markup=False)
    console.print(Text("\nAsk across runs, or browse them:", style="bold"))
    for question in (["dist", "classify", "category"], ["stats", "triage"], ["ui"]):
        console.print("  " + shlex.join([*command, *question]), soft_wrap=True, markup=False)


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


def _short_prefix(store: st.Store, run_id: str) -> str:
    """The shortest prefix of at least 8 characters that names this run alone."""
    for length in range(8, len(run_id)):
        try:
            if store.resolve(run_id[:length]) == run_id:
                return run_id[:length]
        except st.RunNotFound:
            continue
    return run_id


def _self_command() -> list[str]:
    """How to invoke this steptrace again: ``steptrace`` when that is the one on PATH,
    else the command as it was invoked."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "steptrace"
    on_path = shutil.which("steptrace")
    if os.path.basename(argv0) == "__main__.py":  # python -m steptrace
        executable = os.path.abspath(sys.executable)
        if on_path and os.path.dirname(os.path.abspath(on_path)) == os.path.dirname(executable):
            return ["steptrace"]
        for name in ("python", "python3"):
            found = shutil.which(name)
            if found and os.path.abspath(found) == executable:
                return [name, "-m", "steptrace"]
        return [sys.executable, "-m", "steptrace"]
    invoked = shutil.which(argv0) or argv0
    if on_path and os.path.abspath(on_path) == os.path.abspath(invoked):
        return ["steptrace"]
    return [argv0]


# --- run ----------------------------------------------------------------------------


_TARGET_HELP = "e.g. myapp.flows:triage or path/to/flows.py:triage"
_INPUT_HELP = "Keyword arguments as a JSON object, or positional ones as a JSON array."


@app.command("run")
def run_command(
    target: Annotated[str, typer.Argument(metavar="MODULE:WORKFLOW", help=_TARGET_HELP)],
    input_json: Annotated[
        str, typer.Option("--input", "-i", metavar="JSON", help=_INPUT_HELP)
    ] = "{}",
) -> None:
    """Run a @steptrace.workflow once and print its run id, status and output."""
    from steptrace.decorators import spec_of

    workflow = _load_workflow(target)
    try:
        spec = spec_of(workflow)
    except TypeError as exc:
        raise CLIError(f"{target}: {exc}") from None
    args, kwargs = _arguments(spec.fn, spec.signature, input_json)
    try:
        if inspect.iscoroutinefunction(spec.fn):
            result = asyncio.run(st.arun(workflow, *args, **kwargs))
        else:
            result = st.run(workflow, *args, **kwargs)
    finally:
        _finish_recording()
    with st.Store.open() as store:
        record = store.run(result.run_id)
        prefix = _short_prefix(store, record.run_id)
    console = _console()
    console.print(Text.assemble(("run     ", "bold"), record.run_id), soft_wrap=True)
    duration = f"  {_duration(record.duration_ms)}"
    console.print(Text.assemble(("status  ", "bold"), _status(record.status), duration))
    if record.status == "succeeded":
        console.print(Text("output", style="bold"))
        _print_json(record.output)
    command = [*_self_command(), *_store_option()]
    show_command = shlex.join([*command, "show", prefix])
    console.print(Text.assemble(("show    ", "bold"), show_command), soft_wrap=True)
    if record.status != "succeeded":
        error = record.error or {}
        if _options.debug:  # the workflow's own traceback, as stored
            sys.stderr.write(str(error.get("traceback", "")))
        raise CLIError(
            f"run {prefix} failed: {error.get('type', 'Error')}: {error.get('message', '')}"
        )


def _load_workflow(target: str) -> Callable[..., Any]:
    """Import ``module:attr`` or ``path/to/file.py:attr`` (cwd on ``sys.path``)."""
    location, sep, attr = target.rpartition(":")
    if not sep or not location or not attr:
        raise CLIError(f"{target!r} is not MODULE:WORKFLOW (e.g. myapp.flows:triage)")
    if location.endswith(".py") or os.sep in location or "/" in location:
        module = _import_file(location)
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as exc:
            if exc.name and location.startswith(exc.name):
                raise CLIError(f"cannot import {location!r}: {exc}") from exc
            raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"{location!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise CLIError(f"{target}: {attr!r} is not a @steptrace.workflow")
    return typing.cast(Callable[..., Any], obj)


def _import_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise CLIError(f"no such file: {path}")
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:  # as `python path/to/file.py` would
        sys.path.insert(0, directory)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else "__steptrace_target__"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the module's annotations through it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


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


# --- runs and show ------------------------------------------------------------------


@app.command("runs")
def runs_command(
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only runs of this workflow.")
    ] = None,
    status: Annotated[Status | None, typer.Option("--status", "-s", help="Only these.")] = None,
    last: Annotated[int, typer.Option("--last", "-n", min=1, help="How many, newest first.")] = 20,
    offset: Annotated[
        int, typer.Option("--offset", min=0, help="Skip this many first (the next page).")
    ] = 0,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            metavar="PREDICATE",
            help="Only runs where e.g. 'classify.output.label = billing' or "
            "'classify.attempts > 1' (repeatable: all must hold).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="TIME", help="Started at or after: ISO-8601 or 2h, 7d…"),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", metavar="TIME", help="Started before: ISO or 2h…")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Only runs with this tag (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON run objects.")] = False,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
) -> None:
    """List runs, newest first (a note on stderr says when more match)."""
    fmt = output_format(fmt, as_json)
    filters: dict[str, Any] = {
        "workflow": workflow,
        "status": status.value if status else None,
        "since": since,
        "until": until,
        "tag": tag,
        "where": where,
    }
    with st.Store.open() as store:
        try:
            records = store.runs(last=last, offset=offset, **filters)
            if workflow is not None and not records:
                check_workflow(store, workflow)
            # Counting is one more query: only when the page is full.
            full = len(records) == last
            total = store.count_runs(**filters) if full else offset + len(records)
        except QueryError as exc:
            raise CLIError(str(exc)) from None
        more = ""
        if total > offset + len(records):
            shown = f"{offset + 1:,}–{offset + last:,}" if offset else f"{last:,}"
            matching = "matching " if any(filters.values()) else ""
            more = (
                f"showing {shown} of {total:,} {matching}runs; --last N for more, "
                f"--offset {offset + last} for the next page"
            )
        if fmt is not Format.table:
            summaries = [r.summary() for r in records]
            if fmt is Format.json:
                _print_json(summaries)
            else:
                _print_dict_csv(summaries, export_tables.TABLES["runs"])
            if more:
                _note(more)
            return
        if not records:
            filtered = workflow or status or where or since or until or tag or offset
            _console().print(Text(f"no {'matching ' if filtered else ''}runs in {store.url}"))
            return
        rows = [
            (
                Text(_short_prefix(store, r.run_id), style="cyan"),
                Text(r.workflow),
                _status(r.status),
                Text(r.started_at[:19].replace("T", " ")),
                Text(_duration(r.duration_ms)),
                Text(_one_line(f"{r.error.get('type')}: {r.error.get('message', '')}"))
                if r.error
                else Text(""),
            )
            for r in records
        ]
        columns = [
            Column("run", fold=False),
            Column("workflow"),
            Column("status", fold=False),
            Column("started", fold=False),
            Column("duration", justify="right", fold=False),
            Column("error", max_chars=_ERROR_CHARS, cut=True),
        ]
        print_table(_console(), columns, rows, whole="`show RUN_ID` or --json")
        if more:
            _note(more)


_ERROR_CHARS = 160
"""A run's error in `runs` is cut to this (with a note): `show` and --json have it."""


def check_workflow(store: st.Store, workflow: str) -> None:
    """Raise a CLIError listing the workflows when the store has no runs of
    ``workflow``."""
    known = store.workflows()
    if stored_name(workflow) not in known:
        raise CLIError(
            f"no workflow named {workflow!r} in {store.url}; "
            + (f"workflows: {', '.join(known)}" if known else "the store has no runs")
        )


def check_step(store: st.Store, step: str, workflow: str | None = None) -> None:
    """Raise a CLIError listing the steps when none named ``step`` was recorded (in runs
    of ``workflow``)."""
    if workflow is not None:
        check_workflow(store, workflow)
    known = store.step_names(workflow)
    if stored_name(step) not in known:
        scope = f" in workflow {workflow!r}" if workflow else ""
        raise CLIError(
            f"no step named {step!r}{scope}; "
            + (f"steps: {', '.join(known)}" if known else "no steps are recorded")
        )


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id or a prefix of one.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Show one run as a tree: steps and their attempts, LLM and tool calls, logs."""
    with st.Store.open() as store:
        record = store.run(run_id)
    if as_json:
        _print_json(record.to_dict())
        return
    console = _console()
    tree = run_tree(record)
    console.print(tree)
    cut = _cut_lines(tree, console.width)
    if cut:
        _note(
            f"{cut:,} value(s) were cut to one line (…): "
            f"{shlex.join(['show', run_id, '--json'])} prints them whole"
        )


def _cut_lines(tree: Tree, width: int, depth: int = 0) -> int:
    """How many one-line values of ``tree`` are cut: abbreviated, or longer than the
    width left after the tree's guides (4 columns a level)."""
    cut = 0
    label = tree.label
    if isinstance(label, Text) and label.no_wrap:
        cut += label.plain.endswith("…") or label.cell_len + 4 * depth > width
    for child in tree.children:
        cut += _cut_lines(child, width, depth + 1)
    return cut


_MARKS = {
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "running": ("…", "yellow"),
    "interrupted": ("⚠", "magenta"),
    "incomplete": ("◐", "yellow"),
}


def run_tree(record: RunRecord) -> Tree:
    """The run as a rich tree: run → steps/attempts → LLM and tool calls, with logs."""
    tree = Tree(
        Text.assemble(
            ("run ", "bold"),
            (record.run_id, "cyan"),
            "  ",
            (record.workflow, "bold"),
            "  ",
            _status(record.status),
            f"  {_duration(record.duration_ms)}  ",
            (record.started_at, "dim"),
        )
    )
    _value(tree, "input", record.input)
    ids = {s.span_id for s in record.spans}
    children: dict[str, list[SpanView]] = defaultdict(list)
    for span in record.spans:
        parent = span.parent_span_id
        children[parent if parent in ids else record.span_id].append(span)
    for span in children[record.span_id]:
        _add_span(tree, span, children)
    if record.status == "succeeded":
        _value(tree, "output", record.output)
    if record.error:
        _error(tree, record.error)
    return tree


def _add_span(parent: Tree, span: SpanView, children: dict[str, list[SpanView]]) -> None:
    mark, style = _MARKS.get(span.status, ("?", "yellow"))
    label = Text.assemble((f"{mark} ", style), (f"{span.kind} ", "dim"), (span.name, "bold"))
    if span.kind == "llm" and span.llm:
        llm = span.llm
        label.append(f"  {llm['provider']}", style="dim")
        if llm.get("input_tokens") is not None:
            label.append(f"  {llm['input_tokens']}→{llm.get('output_tokens')} tokens")
        if llm.get("cost_usd") is not None:
            label.append(f"  ${llm['cost_usd']:.6f}".rstrip("0").rstrip("."))
        if llm.get("time_to_first_chunk_ms") is not None:
            label.append(f"  first chunk {_duration(llm['time_to_first_chunk_ms'])}", style="dim")
        if llm.get("incomplete"):
            label.append("  stream abandoned", style="yellow")
    elif span.attempt is not None and (span.attempt > 1 or span.status == "failed"):
        label.append(f"  attempt {span.attempt}", style="yellow")
    label.append(f"  {_duration(span.duration_ms)}", style="dim")
    node = parent.add(label)
    if span.kind == "llm" and span.llm:
        for message in span.llm.get("messages") or []:
            if isinstance(message, dict):
                _value(node, str(message.get("role", "message")), message.get("content"))
        if span.status in ("succeeded", "incomplete"):
            _value(node, "response", span.llm.get("response"))
        for call in span.llm.get("tool_calls") or []:
            _value(node, f"tool call {call.get('name')} [{call.get('id')}]", call.get("arguments"))
    else:
        call_id = span.attributes.get("gen_ai.tool.call.id")
        request = "request" if call_id is None else f"request [{call_id}]"
        _value(node, request if span.kind == "tool" else "input", span.input)
    # Child spans and log lines, interleaved in time order.
    items: list[tuple[str, int, Any]] = [(c.started_at, 0, c) for c in children[span.span_id]]
    items += [(str(entry.get("ts", "")), 1, entry) for entry in span.logs]
    for _, is_log, item in sorted(items, key=lambda i: (i[0], i[1])):
        if is_log:
            level = str(item.get("level", ""))
            line = Text.assemble(
                ("log ", "dim"),
                (
                    level,
                    {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}.get(level, "blue"),
                ),
                (f" {item.get('logger', '')}: ", "dim"),
                _abbrev(str(item.get("message", "")), 300),
            )
            line.no_wrap, line.overflow = True, "ellipsis"
            node.add(line)
        else:
            _add_span(node, item, children)
    if span.kind != "llm" and (span.status == "succeeded" or span.output is not None):
        name = {"tool": "response"}.get(span.kind, "output")
        _value(node, name if span.status == "succeeded" else f"{name} (rejected)", span.output)
    if span.error:
        _error(node, span.error)


def _value(node: Tree, name: str, value: Any) -> None:
    # One line each, cut to the terminal's width: `--json` has the full values.
    line = Text.assemble((f"{name} ", "bold dim"), _abbrev(value, 300))
    line.no_wrap, line.overflow = True, "ellipsis"
    node.add(line)


def _error(node: Tree, error: dict[str, Any]) -> None:
    lines = str(error.get("message", "")).splitlines()
    message = _one_line(" ".join(x for x in lines if not x.startswith("    For further info")))
    node.add(Text.assemble(("error ", "bold red"), (f"{error.get('type')}: ", "red"), message))


def _status(status: str) -> Text:
    mark, style = _MARKS.get(status, ("?", "yellow"))
    return Text(f"{mark} {status}", style=style)


def _duration(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _abbrev(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _print_json(value: Any) -> None:
    sys.stdout.flush()  # after what rich printed
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


# --- questions across runs (dist, stats, diff, compare, sql, export, index) -----------

from steptrace.cli_query import register as _register_query_commands  # noqa: E402

_register_query_commands(app)

from steptrace.cli_otel import register as _register_otel_commands  # noqa: E402

_register_otel_commands(app)

from steptrace.cli_ui import register as _register_ui_commands  # noqa: E402

_register_ui_commands(app)
from steptrace.cli_store import register as _register_store_commands  # noqa: E402

_register_store_commands(app)


# --- entry point --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``steptrace`` command line (``argv`` defaults to ``sys.argv[1:]``)."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="steptrace")
    except SystemExit:
        raise
    except Exception as exc:
        sys.exit(_report(exc))


def _report(exc: Exception) -> int:
    if isinstance(exc, click.UsageError):  # raised by a command's body: still exit code 2
        sys.stdout.flush()
        sys.stderr.write(f"error: {_masked(_one_line(exc.format_message()))}\n")
        return 2
    expected = isinstance(exc, CLIError | st.ConfigError | st.RunNotFound)
    if _options.debug:
        sys.stderr.write(_masked("".join(traceback.format_exception(exc))))
    message = _one_line(str(exc)) if expected else f"{type(exc).__name__}: {_one_line(str(exc))}"
    message = _masked(message)
    hint = "" if expected or _options.debug else " (run with --debug for the traceback)"
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}{hint}\n")
    return 1
