"""``steptrace experiment …``: run today's code over a dataset and compare the results
(``steptrace.experimenting``, ``steptrace.evals.experiments``).

``steptrace experiment NAME --dataset D …`` runs an experiment: NAME is an argument of
the group itself. ``ExperimentGroup`` routes a first argument that is not one of the
subcommands (``compare``, ``list``, ``show``, ``rm``) to the hidden ``run`` command,
so ``experiment NAME …`` and ``experiment compare A B`` live side by side; an experiment
cannot be named like a subcommand.

Exit codes: 0 when the experiment completed (whatever its items' outcomes), 2 for a
request that cannot be carried out (nothing run), 130 when interrupted (the items done
so far kept).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.text import Text
from typer.core import TyperGroup

import steptrace as st
from steptrace import experimenting
from steptrace.cli.app import LLMChoice, finish_recording, store_option
from steptrace.cli.diffs import print_change
from steptrace.cli.errors import CLIError, refused
from steptrace.cli.output import (
    Column,
    abbrev,
    format_duration,
    make_console,
    note,
    print_json,
    print_table,
    progress,
    styled_status,
)
from steptrace.cli.workflows import load_callable, self_command
from steptrace.errors import EvaluationError, QueryError, ReentryError
from steptrace.evals import datasets, experiments
from steptrace.evals.datasets import SHORT_ID_CHARS
from steptrace.evals.experiments import Experiment, ExperimentComparison, ExperimentItem

BUILTIN_EVALUATORS = {"exact": experimenting.exact}
"""Evaluators ``--evaluator`` names without a module."""


class ExperimentGroup(TyperGroup):
    """``experiment NAME …`` runs an experiment; ``experiment COMMAND …`` a subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


experiment_app = typer.Typer(
    name="experiment",
    cls=ExperimentGroup,
    subcommand_metavar="NAME --dataset D [OPTIONS] | COMMAND [ARGS]...",
    help="Run today's code of a step over a dataset and judge each output against its "
    "reference: steptrace experiment NAME --dataset D [--step module:func] "
    "[--evaluator module:fn]… (see `steptrace experiment run --help`); then compare two "
    "experiments.",
    no_args_is_help=True,
)

_Json = Annotated[bool, typer.Option("--json", help="Print as JSON.")]


def _requests() -> Any:
    return refused(CLIError, EvaluationError, QueryError, ReentryError, st.RunNotFound)


def _evaluator(target: str) -> Any:
    found = BUILTIN_EVALUATORS.get(target)
    if found is not None:
        return found
    return load_callable(target, "function", "MODULE:FUNCTION (or a built-in: exact)")


def _command(*args: str) -> str:
    return shlex.join([*self_command(), *store_option(), *args])


# --- run --------------------------------------------------------------------------------


def run_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The new experiment's name.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="The dataset to run over.")],
    step: Annotated[
        str | None,
        typer.Option(
            "--step",
            metavar="MODULE:FUNC",
            help="The step to run (default: the dataset's step in the module of its source "
            "runs' workflow).",
        ),
    ] = None,
    evaluator: Annotated[
        list[str] | None,
        typer.Option(
            "--evaluator",
            "-e",
            metavar="MODULE:FN",
            help="Judge each output with fn(output, reference=…, input=…) (repeatable; "
            "default: exact, the output equals the reference).",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Items run at a time.")
    ] = 1,
    llm: Annotated[
        LLMChoice,
        typer.Option("--llm", help="LLM calls live, or answered from the source runs."),
    ] = LLMChoice.live,
    from_step: Annotated[
        bool,
        typer.Option(
            "--from-step",
            help="Fork each item's source run at its step: the workflow runs from there.",
        ),
    ] = False,
    as_json: _Json = False,
) -> None:
    """Run today's code of the dataset's step on each item's input, record each run
    (tagged experiment:NAME), and score each output with the evaluators against the
    item's reference."""
    with _requests():  # what can be refused is, before anything is recorded
        with st.Store.open() as store:
            experimenting.new_name(store, name)
            total = len(datasets.items(store, dataset))
        fn = None if step is None else load_callable(step, "function", "MODULE:FUNC")
        judges = [_evaluator(e) for e in evaluator or []]
    result: Experiment | None = None
    interrupted = False
    try:
        with progress(0 if as_json else total, f"experiment {name}") as advance, _requests():

            def on_item(_: ExperimentItem) -> None:
                advance()

            result = experimenting.experiment(
                name,
                dataset,
                fn,
                evaluators=judges,
                concurrency=concurrency,
                llm=llm.value,
                from_step=from_step,
                on_item=None if as_json else on_item,
            )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        finish_recording()
    if result is None:  # interrupted
        with st.Store.open() as store:
            if not experiments.exists(store, name):
                raise typer.Exit(130)
            result = experiments.load(store, name)
    if as_json:
        print_json(result.to_dict())
    else:
        _print_result(result)
    if interrupted:
        raise typer.Exit(130)


def _print_result(e: Experiment) -> None:
    console = make_console()
    summary = e.summary()
    console.print(
        Text.assemble(
            ("experiment ", "bold"),
            (e.name, "cyan"),
            "  ",
            styled_status(e.status),
            f"  {summary['items']} item(s): {summary['succeeded']} succeeded, "
            f"{summary['failed']} failed",
        ),
        soft_wrap=True,
    )
    console.print(
        Text(f"dataset {e.dataset}, {e.mode} {e.target}, llm {e.params.get('llm')}", "dim"),
        soft_wrap=True,
    )
    metrics = _metrics(summary, e.evaluators)
    width = max(len(m.label) for m in metrics)
    for m in metrics:
        console.print(Text.assemble((f"  {m.label.ljust(width)}  ", "bold"), m.text))
    console.print(Text.assemble(("show     ", "bold"), _command("experiment", "show", e.name)))


@dataclass(frozen=True)
class _Metric:
    label: str
    number: float | None
    text: str
    unit: str = ""
    """How a change of ``number`` reads: ``ms``, ``$``, or a plain number."""


def _metrics(agg: dict[str, Any], evaluators: Sequence[str]) -> list[_Metric]:
    """An aggregate's rows, the scores first."""
    rows: list[_Metric] = []
    for name in evaluators:
        s = agg["scores"].get(name) or {"mean": None, "count": 0, "errors": 0, "labels": {}}
        text = "–" if s["mean"] is None else f"{s['mean']:.3f}"
        text += f" ({s['count']} scored"
        text += f", {s['errors']} error(s))" if s["errors"] else ")"
        if s["labels"]:
            text += " " + ", ".join(f"{k}: {v}" for k, v in s["labels"].items())
        rows.append(_Metric(name, s["mean"], text, "score"))
    latency = agg["latency_ms"]
    cost = agg["cost_usd"]
    return [
        *rows,
        _Metric("items", agg["items"], str(agg["items"])),
        _Metric("succeeded", agg["succeeded"], str(agg["succeeded"])),
        _Metric("failed", agg["failed"], str(agg["failed"])),
        _Metric("latency p50", latency["p50"], format_duration(latency["p50"]), "ms"),
        _Metric("latency mean", latency["mean"], format_duration(latency["mean"]), "ms"),
        _Metric("input tokens", agg["input_tokens"], f"{agg['input_tokens']:,}"),
        _Metric("output tokens", agg["output_tokens"], f"{agg['output_tokens']:,}"),
        _Metric("cost", cost, "–" if cost is None else f"${cost:.4f}", "$"),
    ]


# --- list, show, rm ---------------------------------------------------------------------


def list_command(as_json: _Json = False) -> None:
    """List the experiments, newest first."""
    with st.Store.open() as store:
        found = experiments.experiments(store)
    if as_json:
        print_json([e.header() for e in found])
        return
    if not found:
        note("no experiments yet: run one with steptrace experiment NAME --dataset D")
        return
    print_table(
        make_console(),
        [
            Column("name", fold=False),
            Column("status", fold=False),
            Column("dataset", fold=False),
            Column("mode", fold=False),
            Column("target", fold=False),
            Column("evaluators"),
            Column("started", fold=False),
        ],
        [
            [
                e.name,
                styled_status(e.status),
                e.dataset,
                e.mode,
                e.target,
                ", ".join(e.evaluators),
                e.started_at,
            ]
            for e in found
        ],
        whole="--json",
    )


def _scores_text(item: ExperimentItem) -> str:
    parts = []
    for name, s in item.scores.items():
        value = "error" if s.error else s.value
        parts.append(f"{name}={abbrev(value, 20)}")
    return " ".join(parts)


def show_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The experiment.")],
    as_json: _Json = False,
) -> None:
    """Show an experiment: its aggregates, then each item's status, output and scores."""
    with st.Store.open() as store, _requests():
        e = experiments.load(store, name)
    if as_json:
        print_json(e.to_dict())
        return
    _print_result(e)
    if not e.items:
        return
    print_table(
        make_console(),
        [
            Column("item", fold=False),
            Column("status", fold=False),
            Column("output", max_chars=60),
            Column("scores"),
            Column("duration", "right", fold=False),
            Column("run", fold=False),
        ],
        [
            [
                i.item_id[:SHORT_ID_CHARS],
                styled_status(i.status),
                abbrev(
                    i.output if i.status == "succeeded" else (i.error or {}).get("message"), 200
                ),
                _scores_text(i),
                format_duration(i.duration_ms),
                (i.run_id or "–")[:16],
            ]
            for i in e.items
        ],
        whole="--json",
    )


def rm_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The experiment to remove.")],
) -> None:
    """Remove an experiment's results (its runs and their scores stay in the store)."""
    with st.Store.open() as store, _requests():
        n = experiments.remove(store, name)
    make_console().print(f"removed experiment {name} ({n} item(s))")


# --- compare ----------------------------------------------------------------------------


def compare_command(
    a: Annotated[str, typer.Argument(metavar="A", help="The baseline experiment.")],
    b: Annotated[str, typer.Argument(metavar="B", help="The experiment to compare with it.")],
    as_json: _Json = False,
) -> None:
    """Put two experiments side by side: aggregate scores, outcomes, latency and cost,
    then every item whose output, status or scores changed, with its diff."""
    with st.Store.open() as store, _requests():
        c = experiments.compare(store, a, b)
    if as_json:
        print_json(c.to_dict())
        return
    _print_comparison(c)


def _change(a: _Metric, b: _Metric) -> str:
    x, y = a.number, b.number
    if x is None or y is None or x == y:
        return ""
    d = y - x
    sign = "+" if d > 0 else "−"
    if a.unit == "ms":
        return f"{sign}{format_duration(abs(d))}"
    if a.unit == "$":
        return f"{sign}${abs(d):.4f}"
    if a.unit == "score":
        return f"{d:+.3f}"
    return f"{d:+,}"


def _print_comparison(c: ExperimentComparison) -> None:
    console = make_console()
    data = c.to_dict()
    names = c.evaluators
    rows_a = _metrics(data["aggregate"]["a"], names)
    rows_b = _metrics(data["aggregate"]["b"], names)
    print_table(
        console,
        [
            Column("", fold=False),
            Column(c.a.name, fold=False),
            Column(c.b.name, fold=False),
            Column("change", "right", fold=False),
        ],
        [
            [ra.label, ra.text, rb.text, _change(ra, rb)]
            for ra, rb in zip(rows_a, rows_b, strict=True)
        ],
    )
    changed = [i for i in c.items if i.changed]
    console.print(
        Text(f"\n{len(changed)} of {len(c.items)} item(s) changed", style="bold"), soft_wrap=True
    )
    cut = [0]
    for item in changed:
        line = Text.assemble(("~ ", "yellow"), (item.item_id[:SHORT_ID_CHARS], "cyan"), "  ")
        if item.a is None or item.b is None:
            line.append(f"only in {c.a.name if item.b is None else c.b.name}")
        else:
            if item.a.status != item.b.status:
                line.append(f"{item.a.status} → {item.b.status}  ")
            for name in names:
                sa, sb = item.a.scores.get(name), item.b.scores.get(name)
                if sa is None or sb is None:  # an evaluator only one of them ran
                    continue
                va = "error" if sa.error else sa.value
                vb = "error" if sb.error else sb.value
                if va != vb:
                    line.append(f"{name} {abbrev(va, 20)} → {abbrev(vb, 20)}  ")
        console.print(line, soft_wrap=True)
        console.print(Text(f"    input {abbrev(item.input, 160)}", "dim"), soft_wrap=True)
        for change in item.diff:
            print_change(console, change, "    ", cut)
        for side, got in (("a", item.a), ("b", item.b)):
            if got is not None and got.error:
                error = f"{got.error.get('type')}: {got.error.get('message')}"
                console.print(Text(f"    {side} failed: {abbrev(error, 160)}", "red"))
    if cut[0]:
        note(f"{cut[0]:,} diff line(s) were cut to the terminal's width (…): --json has them")


def register(app: typer.Typer) -> None:
    """Add the ``experiment`` group to the ``steptrace`` app."""
    experiment_app.command("run", hidden=True)(run_command)
    experiment_app.command("compare")(compare_command)
    experiment_app.command("list")(list_command)
    experiment_app.command("show")(show_command)
    experiment_app.command("rm")(rm_command)
    app.add_typer(experiment_app)
