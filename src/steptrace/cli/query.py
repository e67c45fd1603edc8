"""The commands that ask questions across runs: ``dist``, ``stats``, ``diff``,
``compare``, ``sql``, ``export`` and ``index``, registered on the ``steptrace`` app
by ``register(app)``.

Each prints a rich rendering, or with ``--json`` exactly what the matching
``Store`` method returns. A malformed question (a bad ``--where``, field path or
SQL) is a one-line ``error: …`` like every other command's.
"""

from __future__ import annotations

import base64
import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.text import Text

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
from steptrace.cli.diffs import print_diff
from steptrace.cli.errors import CLIError
from steptrace.cli.names import check_step, check_workflow, short_prefix
from steptrace.cli.output import (
    FORMAT_HELP,
    Column,
    Format,
    abbrev,
    format_duration,
    make_console,
    one_line,
    output_format,
    print_csv,
    print_dict_csv,
    print_json,
    print_table,
    styled_status,
)
from steptrace.query.compare import Comparison
from steptrace.query.distribution import Distribution
from steptrace.query.overview import RunWindow
from steptrace.query.scores import RUN_STEP, ScoreStats
from steptrace.query.stats import StepStats
from steptrace.query.where import QueryError, score_name
from steptrace.store import SQL_TIMEOUT_S

F = TypeVar("F", bound=Callable[..., Any])

_JSON_HELP = "Print JSON (the shape the Store method returns)."
SQL_LIMIT_ROWS = 10_000
"""Rows ``steptrace sql`` shows unless ``--limit`` says otherwise."""
_BAR_WIDTH = 30
_VALUE_CHARS = 200
"""A value in a `dist` or `sql` table is cut to this (with a note): --json has it whole."""


def _questions(fn: F) -> F:
    """Report a malformed question as a one-line error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except QueryError as exc:
            raise CLIError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _count(n: int) -> str:
    return f"{n:,}"


def _share(x: float) -> str:
    return f"{x:.1%}"


def _bar(share: float, top: float, width: int = _BAR_WIDTH) -> Text:
    eighths = round(width * 8 * (share / top if top else 0.0))
    full, rest = divmod(eighths, 8)
    return Text("█" * full + ("▏▎▍▌▋▊▉"[rest - 1] if rest else ""), style="cyan")


# --- dist -----------------------------------------------------------------------------


@_questions
def dist_command(
    step: Annotated[str, typer.Argument(metavar="STEP", help="A step (or tool) name.")],
    field: Annotated[
        str,
        typer.Argument(
            metavar="FIELD",
            help="A dotted path into the step's output, e.g. classification or meta.label "
            "(input.x for its input; . for the whole output), or score.NAME for a score "
            "(STEP run: the runs' own scores).",
        ),
    ],
    last: Annotated[
        int, typer.Option("--last", "-n", min=1, help="Over the last N runs that ran STEP.")
    ] = 1000,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only runs of this workflow.")
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Values to draw.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help=_JSON_HELP)] = False,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
) -> None:
    """The distribution of a field of a step's output over the last N runs that ran the
    step; or of a score (FIELD score.NAME; STEP run for the run's own scores) over the
    last N runs that have it."""
    fmt = output_format(fmt, as_json)
    scored = score_name(field) is not None
    with st.Store.open() as store:
        result = store.distribution(step, field, last=last, workflow=workflow)
        if not result["occurrences"]:
            if not (scored and step == RUN_STEP):
                check_step(store, step, workflow)
        elif not result["values"]:
            _check_field(store, result, workflow)
    if fmt is Format.json:
        print_json(result)
    elif fmt is Format.csv:
        rows: list[list[Any]] = [
            [v["value"], v["count"], v["share"], False] for v in result["values"]
        ]
        if result["missing"]:
            rows.append([None, result["missing"], result["missing"] / result["occurrences"], True])
        print_csv(("value", "count", "share", "missing"), rows)
    else:
        _print_distribution(result, top, last, workflow, scored=scored)


def _check_field(store: st.Store, d: Distribution, workflow: str | None) -> None:
    """Raise a CLIError naming the fields there are when ``d``'s field is in no
    occurrence of its step."""
    field = d["field"]
    parent = field.rpartition(".")[0]
    fields: set[str] = set()
    try:
        around = store.distribution(d["step"], parent or ".", last=d["runs"], workflow=workflow)
    except QueryError:
        around = None
    for v in around["values"] if around else []:
        if isinstance(v["value"], dict):
            fields.update(v["value"])
    where = f"{parent} of {d['step']}'s output" if parent else f"{d['step']}'s output"
    known = ", ".join(sorted(fields)) or "none (not an object)"
    raise CLIError(
        f"no field {field!r} in {d['step']}'s output over the last {d['runs']:,} runs that "
        f"ran it; fields of {where}: {known}"
    )


def _print_distribution(
    d: Distribution, top: int, last: int, workflow: str | None, *, scored: bool = False
) -> None:
    console = make_console()
    n = d["runs"]
    runs = f"run{'' if n == 1 else 's'}" + (f" of {workflow}" if workflow else "")
    window = f"the last {_count(n)} {runs}" if n >= last else f"all {_count(n)} {runs}"
    which = "with this score" if scored else f"that ran {d['step']}"
    counted = "scores" if scored else "occurrences"
    title = Text.assemble(
        (f"{d['step']}.{d['field'] or 'output'}", "bold"),
        f"  over {window} {which}",
        f" ({_count(last)} asked for)" if n < last else "",
        f", {_count(d['occurrences'])} {counted}" if d["occurrences"] != d["runs"] else "",
    )
    console.print(title)
    if not d["occurrences"]:
        none = "no runs have this score" if scored else "no runs executed this step"
        console.print(Text(none, style="dim"))
        return
    shown = d["values"][:top]
    rows: list[list[Text]] = [
        [Text(abbrev(v["value"], 10_000)), Text(_count(v["count"])), Text(_share(v["share"]))]
        for v in shown
    ]
    shares = [v["share"] for v in shown]
    if d["missing"]:
        rows.append(
            [
                Text("(missing)", style="dim"),
                Text(_count(d["missing"])),
                Text(_share(d["missing"] / d["occurrences"])),
            ]
        )
        shares.append(d["missing"] / d["occurrences"])
    columns = [
        Column("value", max_chars=_VALUE_CHARS),
        Column("count", justify="right", fold=False),
        Column("share", justify="right", fold=False),
    ]
    # The bars take what room the numbers leave (they are drawn, not data).
    used = max([5, *(min(r[0].cell_len, _VALUE_CHARS) for r in rows)]) + 5 + 6 + 3 * 3
    bar_width = min(_BAR_WIDTH, console.width - used)
    if bar_width >= 5:
        peak = max(shares)
        columns.append(Column("", fold=False))
        for row, share in zip(rows, shares, strict=True):
            row.append(_bar(share, peak, bar_width))
    print_table(console, columns, rows)
    hidden = len(d["values"]) - len(shown)
    if hidden:
        console.print(Text(f"… and {hidden:,} more values (--top, --json)", style="dim"))
    numeric = d["numeric"]
    if numeric:
        console.print(
            Text.assemble(
                ("numeric ", "bold"),
                f"n={_count(numeric['count'])}  min {numeric['min']:g}  p50 {numeric['p50']:g}  "
                f"p95 {numeric['p95']:g}  max {numeric['max']:g}  mean {numeric['mean']:g}",
            )
        )


# --- stats ----------------------------------------------------------------------------


@_questions
def stats_command(
    workflow: Annotated[
        str | None, typer.Argument(metavar="[WORKFLOW]", help="Only runs of this workflow.")
    ] = None,
    last: Annotated[int, typer.Option("--last", "-n", min=1, help="Over the last N runs.")] = 1000,
    scores: Annotated[
        bool,
        typer.Option(
            "--scores",
            help="Also the scores given in those runs, per step and name: how many, "
            "their mean (a boolean's: the share of true), the labels. JSON: "
            '{"steps": …, "scores": …}; CSV: the score rows.',
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=_JSON_HELP)] = False,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
) -> None:
    """Per-step count, failure and retry rates, p50/p95/p99 duration, tokens and cost,
    over the last N runs (the table's title says which runs those were); with
    --scores, the scores given in those runs too."""
    fmt = output_format(fmt, as_json)
    with st.Store.open() as store:
        stats = store.step_stats(workflow, last=last)
        if workflow is not None and not stats:
            check_workflow(store, workflow)
        window = store.run_window(workflow, last) if fmt is Format.table else None
        given = store.score_stats(workflow, last=last) if scores else None
    if fmt is Format.json:
        print_json(stats if given is None else {"steps": stats, "scores": given})
    elif fmt is Format.csv and given is not None:
        print_dict_csv([dict(s) for s in given], list(ScoreStats.__annotations__))
    elif fmt is Format.csv:
        print_dict_csv([dict(s) for s in stats], list(StepStats.__annotations__))
    else:
        assert window is not None
        _print_stats(stats, workflow, last, window)
        if given is not None:
            _print_score_stats(given)


def _window(workflow: str | None, last: int, window: RunWindow) -> str:
    """What a window of runs covered: ``last 100 runs of triage, 2026-11-29 10:02 →
    2026-11-30 12:00`` (and how many were asked for when fewer exist)."""
    n = window["runs"]
    scope = f" of {workflow}" if workflow else ""
    text = f"the last {_count(n)} run{'' if n == 1 else 's'}{scope}"
    if n < last:
        text = f"all {_count(n)} run{'' if n == 1 else 's'}{scope} ({_count(last)} asked for)"
    first, newest = window["first_started_at"], window["last_started_at"]
    if first and newest:
        text += f", {first[:16].replace('T', ' ')} → {newest[:16].replace('T', ' ')}"
    return text


def _print_stats(
    stats: list[StepStats], workflow: str | None, last: int, window: RunWindow
) -> None:
    console = make_console()
    console.print(
        Text(f"steps of {_window(workflow, last, window)}, most time first", style="bold")
    )
    if not stats:
        console.print(Text("no steps recorded", style="dim"))
        return
    rows: list[list[Text]] = []
    for s in stats:
        tokens = (s["input_tokens"] or 0) + (s["output_tokens"] or 0) if s["llm_calls"] else None
        cells: list[Text | str] = [
            Text(s["step"] + (" (tool)" if s["kind"] == "tool" else "")),
            _count(s["count"]),
            Text(_share(s["failure_rate"]), style="red" if s["failed"] else "dim"),
            Text(_share(s["retry_rate"]), style="yellow" if s["retried"] else "dim"),
            format_duration(s["p50_ms"]),
            format_duration(s["p95_ms"]),
            format_duration(s["p99_ms"]),
            _count(tokens) if tokens is not None else "–",
            f"${s['cost_usd']:.4f}" if s["cost_usd"] is not None else "–",
        ]
        rows.append([c if isinstance(c, Text) else Text(c) for c in cells])
    numbers = ("count", "failed", "retried", "p50", "p95", "p99", "tokens", "cost")
    columns = [Column("step"), *(Column(h, justify="right", fold=False) for h in numbers)]
    print_table(console, columns, rows)


def _print_score_stats(given: list[ScoreStats]) -> None:
    console = make_console()
    console.print(Text("scores given in the same runs", style="bold"))
    if not given:
        console.print(Text("no scores", style="dim"))
        return
    rows: list[list[Text]] = []
    for s in given:
        mean = s["mean"]
        if mean is None:
            shown = "–"
        elif s["kind"] == "boolean":
            shown = f"{_share(mean)} true"
        else:
            shown = f"{mean:.4g}"
        labels = " · ".join(f"{one_line(x['label'])} {_share(x['share'])}" for x in s["labels"][:3])
        if len(s["labels"]) > 3:
            labels += f" · +{len(s['labels']) - 3}"
        rows.append(
            [
                Text("(run)", style="dim") if s["step"] is None else Text(s["step"]),
                Text(one_line(s["name"])),
                Text(s["kind"], style="dim"),
                Text(_count(s["count"])),
                Text(shown),
                Text(labels),
            ]
        )
    columns = [
        Column("step"),
        Column("score"),
        Column("kind", fold=False),
        *(Column(h, justify="right", fold=False) for h in ("count", "mean")),
        Column("labels"),
    ]
    print_table(console, columns, rows)


# --- diff -----------------------------------------------------------------------------


@_questions
def diff_command(
    run_a: Annotated[str, typer.Argument(metavar="RUN_A", help="A run id or prefix.")],
    run_b: Annotated[str, typer.Argument(metavar="RUN_B", help="A run id or prefix.")],
    show_all: Annotated[bool, typer.Option("--all", help="List unchanged steps too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=_JSON_HELP)] = False,
    fmt: Annotated[
        Format | None,
        typer.Option("--format", "-f", help=FORMAT_HELP + " CSV: one row per step."),
    ] = None,
) -> None:
    """Step-by-step structural diff of two runs: status, attempts, durations, inputs,
    outputs and LLM calls."""
    fmt = output_format(fmt, as_json)
    with st.Store.open() as store:
        result = store.diff(run_a, run_b)
        prefixes = (
            short_prefix(store, result["a"]["run_id"]),
            short_prefix(store, result["b"]["run_id"]),
        )
    if fmt is Format.json:
        print_json(result)
    elif fmt is Format.csv:
        print_csv(
            _DIFF_HEADERS,
            [
                [
                    step["key"],
                    step["kind"],
                    step["only_in"],
                    step["status"]["a"],
                    step["status"]["b"],
                    step["attempts"]["a"],
                    step["attempts"]["b"],
                    step["duration_ms"]["a"],
                    step["duration_ms"]["b"],
                    step["changed"],
                    [c["path"] for c in step["changes"]],
                ]
                for step in result["steps"]
            ],
        )
    else:
        print_diff(result, prefixes, show_all)


_DIFF_HEADERS = (
    "key",
    "kind",
    "only_in",
    "status_a",
    "status_b",
    "attempts_a",
    "attempts_b",
    "duration_ms_a",
    "duration_ms_b",
    "changed",
    "changed_paths",
)


# --- compare --------------------------------------------------------------------------


@_questions
def compare_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id or prefix.")],
    baseline: Annotated[
        int,
        typer.Option(
            "--baseline", "-b", min=1, help="Against the last N successful runs of its workflow."
        ),
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help=_JSON_HELP)] = False,
    fmt: Annotated[
        Format | None, typer.Option("--format", "-f", help=FORMAT_HELP + " CSV: the findings.")
    ] = None,
) -> None:
    """How a run differs from the last N successful runs of its workflow."""
    fmt = output_format(fmt, as_json)
    with st.Store.open() as store:
        result = store.compare(run_id, baseline=baseline)
        prefix = short_prefix(store, result["run_id"])
    if fmt is Format.json:
        print_json(result)
    elif fmt is Format.csv:
        findings: list[dict[str, Any]] = [dict(f) for f in result["findings"]]
        print_dict_csv(findings, ["kind", "step", "key", "detail", "score"])
    else:
        _print_comparison(result, prefix)


_KIND_STYLES = {
    "failed": "red",
    "missing_step": "red",
    "extra_step": "yellow",
    "new_value": "magenta",
    "rare_value": "magenta",
    "more_attempts": "yellow",
    "slow": "yellow",
    "cost": "yellow",
}


def _print_comparison(c: Comparison, prefix: str) -> None:
    console = make_console()
    console.print(
        Text.assemble(
            ("run ", "bold"),
            (prefix, "cyan"),
            f"  {c['workflow']}  ",
            styled_status(c["status"]),
            f"  against {c['baseline_runs']} successful run(s)",
            f" (of {c['baseline']} asked)" if c["baseline_runs"] < c["baseline"] else "",
        )
    )
    if not c["findings"]:
        console.print(Text("nothing unusual", style="green"))
        return
    rows = [
        [
            Text(f["kind"], style=_KIND_STYLES.get(f["kind"], "")),
            Text(f["key"] or "(run)"),
            Text(f["detail"]),
        ]
        for f in c["findings"]
    ]
    print_table(console, [Column("finding", fold=False), Column("step"), Column("detail")], rows)


# --- sql ------------------------------------------------------------------------------


@_questions
def sql_command(
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help="One SELECT statement (- reads it from stdin).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of objects.")] = False,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most N rows (a note says so).")
    ] = SQL_LIMIT_ROWS,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=0.001, metavar="SECONDS", help="Stop the query after this long."
        ),
    ] = SQL_TIMEOUT_S,
) -> None:
    """Read-only SQL over the store: the runs, spans, llm_calls, logs, scores,
    datasets, dataset_items, experiments and experiment_items tables and the steps
    and llm views.

    SQLite: a connection the engine keeps from writing. PostgreSQL: one query
    that reads (SELECT, WITH, VALUES, TABLE or EXPLAIN of one), calling no
    volatile function, in a read-only transaction, as a role that is not a
    superuser (docs/security.md says how to make one). A query stops at
    --timeout; at most --limit rows are shown; Ctrl-C stops it (exit code 130).
    """
    fmt = output_format(fmt, as_json)
    if query == "-":
        query = sys.stdin.read()
    try:
        with st.Store.open() as store:
            rows = store.sql(query, limit=limit + 1, timeout_s=timeout)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write("steptrace: interrupted; the query was stopped\n")
        raise typer.Exit(130) from None
    cut = len(rows) > limit
    rows = rows[:limit]
    if fmt is Format.csv:
        if rows:
            print_csv(list(rows[0]), [list(r.values()) for r in rows])
    elif fmt is Format.json:  # a BLOB (none in steptrace's tables) as base64 text
        print_json(
            [
                {
                    k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
                    for k, v in r.items()
                }
                for r in rows
            ]
        )
    else:
        _print_rows(rows)
    if cut:
        sys.stdout.flush()
        sys.stderr.write(f"note: showing the first {limit:,} rows; pass --limit N for more\n")


def _print_rows(rows: list[dict[str, Any]]) -> None:
    console = make_console()
    if not rows:
        console.print(Text("no rows", style="dim"))
        return
    columns = [Column(name, max_chars=_VALUE_CHARS) for name in rows[0]]
    print_table(console, columns, [[_cell(v) for v in row.values()] for row in rows])
    console.print(Text(f"{len(rows):,} row(s)", style="dim"))


def _cell(value: Any) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, str):
        return Text(value)
    if isinstance(value, bytes):
        return Text(f"<{len(value)} bytes>", style="dim")
    if isinstance(value, dict | list):
        return Text(orjson.dumps(value).decode())
    return Text(str(value))


# --- export ---------------------------------------------------------------------------


@_questions
def export_command(
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="jsonl, csv or parquet (needs pyarrow).")
    ] = "jsonl",
    table: Annotated[
        str, typer.Option("--table", "-t", help="runs, steps, spans, llm or scores.")
    ] = "steps",
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="FILE", help="Where to write (- : stdout).")
    ] = "-",
    workflow: WorkflowFilter = None,
    status: StatusFilter = None,
    where: WhereFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    tag: TagFilter = None,
    forked_from: ForkedFromFilter = None,
    replay_of: ReplayOfFilter = None,
    derived: DerivedFilter = False,
    session: SessionFilter = None,
    last: Annotated[
        int | None, typer.Option("--last", "-n", min=1, help="Only the last N runs.")
    ] = None,
    step: Annotated[
        str | None, typer.Option("--step", help="Only this step's rows (not runs).")
    ] = None,
) -> None:
    """Export runs, steps, spans, LLM calls or scores of the chosen runs as JSON Lines,
    CSV or Parquet."""
    if fmt == "parquet" and output == "-":
        raise CLIError("--format parquet needs --output FILE")
    with st.Store.open() as store:
        if step is not None:
            check_step(store, step, workflow)
        elif workflow is not None:
            check_workflow(store, workflow)
        options = run_filters(
            store, workflow, status, since, until, tag, where, forked_from, replay_of, derived
        )
        options["session"] = session
        if output == "-":
            n = store.export(sys.stdout.buffer, fmt, table, last=last, step=step, **options)
            sys.stdout.buffer.flush()
        else:
            n = store.export(output, fmt, table, last=last, step=step, **options)
    if output != "-":
        sys.stderr.write(f"wrote {n:,} row(s) of {table} to {output}\n")


# --- index ----------------------------------------------------------------------------


@_questions
def index_command(
    step: Annotated[str, typer.Argument(metavar="STEP")],
    field: Annotated[str, typer.Argument(metavar="FIELD", help="As for `dist`.")],
    drop: Annotated[bool, typer.Option("--drop", help="Drop the indexes instead.")] = False,
) -> None:
    """Index a step's field: `dist STEP FIELD` reads it from the index, and
    `runs --where` finds a rare value of it there (two expression indexes; building
    them reads the spans table)."""
    with st.Store.open() as store:
        if drop:
            dropped = store.drop_field_index(step, field)
            make_console().print(f"{'dropped' if dropped else 'no'} index for {step}.{field}")
        else:
            name = store.index_field(step, field)
            make_console().print(f"{step}.{field} is indexed ({name})")


def register(app: typer.Typer) -> None:
    """Add the commands to the ``steptrace`` app."""
    app.command("dist")(dist_command)
    app.command("stats")(stats_command)
    app.command("diff")(diff_command)
    app.command("compare")(compare_command)
    app.command("sql")(sql_command)
    app.command("export")(export_command)
    app.command("index")(index_command)
