"""The commands that list and open stored runs: ``runs`` (a page of runs, newest
first, filtered) and ``show`` (one run as a tree of steps, attempts, LLM and tool
calls and logs), registered on the ``steptrace`` app by ``register(app)``.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

import steptrace as st
from steptrace.cli.app import (
    DerivedFilter,
    ForkedFromFilter,
    ReplayOfFilter,
    SessionFilter,
    SinceFilter,
    StatusFilter,
    TagFilter,
    UntilFilter,
    WhereFilter,
    WorkflowFilter,
    run_filters,
)
from steptrace.cli.errors import CLIError
from steptrace.cli.names import check_workflow, short_prefix
from steptrace.cli.output import (
    FORMAT_HELP,
    STATUS_MARKS,
    Column,
    Format,
    abbrev,
    format_duration,
    make_console,
    note,
    one_line,
    output_format,
    print_dict_csv,
    print_json,
    print_table,
    score_text,
    styled_status,
)
from steptrace.query import export as export_tables
from steptrace.query.where import QueryError
from steptrace.store.model import DerivedRun, RunRecord, SpanView
from steptrace.store.scores import Score


def runs_command(
    workflow: WorkflowFilter = None,
    status: StatusFilter = None,
    last: Annotated[int, typer.Option("--last", "-n", min=1, help="How many, newest first.")] = 20,
    offset: Annotated[
        int, typer.Option("--offset", min=0, help="Skip this many first (the next page).")
    ] = 0,
    where: WhereFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    tag: TagFilter = None,
    forked_from: ForkedFromFilter = None,
    replay_of: ReplayOfFilter = None,
    derived: DerivedFilter = False,
    session: SessionFilter = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON run objects.")] = False,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
) -> None:
    """List runs, newest first (a note on stderr says when more match)."""
    fmt = output_format(fmt, as_json)
    with st.Store.open() as store:
        filters = run_filters(
            store, workflow, status, since, until, tag, where, forked_from, replay_of, derived
        )
        filters["session"] = session
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
                print_json(summaries)
            else:
                print_dict_csv(summaries, export_tables.TABLES["runs"])
            if more:
                note(more)
            return
        if not records:
            filtered = any(filters.values()) or offset
            make_console().print(Text(f"no {'matching ' if filtered else ''}runs in {store.url}"))
            return
        rows = [
            (
                Text(short_prefix(store, r.run_id), style="cyan"),
                Text(r.workflow),
                styled_status(r.status),
                Text(r.started_at[:19].replace("T", " ")),
                Text(format_duration(r.duration_ms)),
                Text(one_line(f"{r.error.get('type')}: {r.error.get('message', '')}"))
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
        print_table(make_console(), columns, rows, whole="`show RUN_ID` or --json")
        if more:
            note(more)


_ERROR_CHARS = 160
"""A run's error in `runs` is cut to this (with a note): `show` and --json have it."""


def show_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id or a prefix of one.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """Show one run as a tree: where it came from (a fork or replay of another run, how
    often it was resumed, its code) and the runs made from it; its scores; steps and
    their attempts (each with its scores), LLM and tool calls, logs."""
    with st.Store.open() as store:
        record = store.run(run_id)
        derived = store.derived(record.run_id)
    if as_json:
        print_json(record.to_dict() | {"derived": derived})
        return
    console = make_console()
    tree = run_tree(record, derived)
    console.print(tree)
    cut = _cut_lines(tree, console.width)
    if cut:
        note(
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


def run_tree(record: RunRecord, derived: Sequence[DerivedRun] = ()) -> Tree:
    """The run as a rich tree: run → its lineage (``_lineage``) and steps/attempts → LLM
    and tool calls, with logs."""
    tree = Tree(
        Text.assemble(
            ("run ", "bold"),
            (record.run_id, "cyan"),
            "  ",
            (record.workflow, "bold"),
            "  ",
            styled_status(record.status),
            f"  {format_duration(record.duration_ms)}  ",
            (record.started_at, "dim"),
        )
    )
    _lineage(tree, record, derived)
    for score in record.scores:
        if score.span_id is None:
            _score(tree, score)
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


def _lineage(tree: Tree, record: RunRecord, derived: Sequence[DerivedRun]) -> None:
    """The lines that say where the run came from and what was made from it, each only
    when there is something to say."""
    if record.forked_from:
        at = ((" at ", "dim"), record.forked_at) if record.forked_at else ()
        _line(tree, ("forked from ", "bold dim"), (record.forked_from, "cyan"), *at)
    if record.replay_of:
        _line(tree, ("replay of ", "bold dim"), (record.replay_of, "cyan"))
    if record.session_id:
        _line(tree, ("session ", "bold dim"), (record.session_id, "magenta"))
    if record.resume_count:
        n = record.resume_count
        _line(tree, (f"resumed {n} time{'' if n == 1 else 's'}", "yellow"))
    if record.entry_point:
        _value(tree, "entry point", record.entry_point)
    version: Any = record.code_version
    if version:
        if isinstance(version, dict):  # by name: PostgreSQL's JSONB keeps no key order
            parts = sorted(version.items())
            version = ", ".join(f"{k} {abbrev(v)}" for k, v in parts if v is not None)
        _value(tree, "code version", version)
    if derived:
        node = tree.add(Text("derived runs:", style="bold dim"))
        for run in derived:
            relation: str = run["relation"]
            if relation == "fork" and run["forked_at"]:
                relation += f" at {run['forked_at']}"
            _line(node, (run["run_id"], "cyan"), f"  {relation}  ", styled_status(run["status"]))


def _line(node: Tree, *parts: str | tuple[str, str] | Text) -> None:
    """A one-line child of ``node`` (cut to the terminal's width, like ``_value``)."""
    line = Text.assemble(*parts)
    line.no_wrap, line.overflow = True, "ellipsis"
    node.add(line)


def _add_span(parent: Tree, span: SpanView, children: dict[str, list[SpanView]]) -> None:
    mark, style = STATUS_MARKS.get(span.status, ("?", "yellow"))
    label = Text.assemble((f"{mark} ", style), (f"{span.kind} ", "dim"), (span.name, "bold"))
    if span.kind == "llm" and span.llm:
        llm = span.llm
        label.append(f"  {llm['provider']}", style="dim")
        if llm.get("input_tokens") is not None:
            label.append(f"  {llm['input_tokens']}→{llm.get('output_tokens')} tokens")
        if llm.get("cost_usd") is not None:
            label.append(f"  ${llm['cost_usd']:.6f}".rstrip("0").rstrip("."))
        if llm.get("time_to_first_chunk_ms") is not None:
            label.append(
                f"  first chunk {format_duration(llm['time_to_first_chunk_ms'])}", style="dim"
            )
        if llm.get("incomplete"):
            label.append("  stream abandoned", style="yellow")
    elif span.attempt is not None and (span.attempt > 1 or span.status == "failed"):
        label.append(f"  attempt {span.attempt}", style="yellow")
    label.append(f"  {format_duration(span.duration_ms)}", style="dim")
    node = parent.add(label)
    for score in span.scores:
        _score(node, score)
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
                abbrev(str(item.get("message", "")), 300),
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
    line = Text.assemble((f"{name} ", "bold dim"), abbrev(value, 300))
    line.no_wrap, line.overflow = True, "ellipsis"
    node.add(line)


def _score(node: Tree, score: Score) -> None:
    _line(node, ("score ", "bold dim"), score_text(score))


def _error(node: Tree, error: dict[str, Any]) -> None:
    lines = str(error.get("message", "")).splitlines()
    message = one_line(" ".join(x for x in lines if not x.startswith("    For further info")))
    node.add(Text.assemble(("error ", "bold red"), (f"{error.get('type')}: ", "red"), message))


def register(app: typer.Typer) -> None:
    """Add the commands to the ``steptrace`` app."""
    app.command("runs")(runs_command)
    app.command("show")(show_command)
