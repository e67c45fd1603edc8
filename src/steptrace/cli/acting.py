"""The commands that act on a recorded run: ``resume`` (continue it in place), ``fork``
(a new run from one of its steps) and ``replay`` (today's code on its input, LLM and
tool calls answered from the recording; with ``--workflow W --last N``, over many
runs: a regression test made of recorded traffic), registered on the ``steptrace``
app by ``register(app)``.

Exit codes: 0 when the run succeeded (``replay``: when every replay is identical to
its source), 1 when it failed (``replay``: when any changed, diverged or failed), 2
for a request that cannot be carried out (no such run, a run that cannot be resumed,
a workflow that cannot be imported, a step the run does not have, bad options): one
``error: …`` line, nothing run.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import json
import shlex
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.text import Text

import steptrace as st
from steptrace.acting import source_spec
from steptrace.cli.app import LLMChoice, Status, finish_recording, store_option
from steptrace.cli.diffs import print_change, print_diff
from steptrace.cli.errors import CLIError
from steptrace.cli.names import check_workflow, short_prefix
from steptrace.cli.output import (
    abbrev,
    format_duration,
    make_console,
    note,
    print_json,
    progress,
    styled_status,
)
from steptrace.cli.workflows import load_workflow, self_command
from steptrace.decorators import workflow_spec
from steptrace.errors import QueryError, ReentryError
from steptrace.regression import Report, Verdict, replay_many, verdict
from steptrace.store.model import RunRecord

_RUN_HELP = "A run id or an unambiguous prefix of one."
_ENTRY_HELP = (
    "The workflow to run, as MODULE:FUNCTION or path/to/file.py:FUNCTION "
    "(default: the entry point the run recorded)."
)


_RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help=_RUN_HELP)]
_Entry = Annotated[str | None, typer.Option("--entry", metavar="MODULE:FN", help=_ENTRY_HELP)]


class ToolsChoice(enum.StrEnum):
    recorded = "recorded"
    live = "live"
    all = "all"


@contextmanager
def _request() -> Iterator[None]:
    """A request that cannot be carried out exits with code 2, one line, before anything
    runs."""
    try:
        yield
    except (CLIError, ReentryError, st.RunNotFound, QueryError) as exc:
        raise CLIError(str(exc), exit_code=2) from None


def _workflow(entry: str | None) -> Callable[..., Any] | None:
    return None if entry is None else load_workflow(entry)


def _source(run_id: str, workflow: Callable[..., Any] | None) -> tuple[RunRecord, bool]:
    """The run named by ``run_id`` (or a prefix) and whether its workflow is async."""
    with st.Store.open() as store:
        record = store.run(run_id)
    spec = source_spec(record, workflow)
    return record, inspect.iscoroutinefunction(spec.fn)


def _show_command(store: st.Store, run_id: str) -> str:
    return shlex.join([*self_command(), *store_option(), "show", short_prefix(store, run_id)])


def _failed(record: RunRecord, prefix: str, what: str) -> CLIError:
    error = record.error or {}
    return CLIError(
        f"{what} {prefix} failed: {error.get('type', 'Error')}: {error.get('message', '')}"
    )


# --- resume -------------------------------------------------------------------------------


def resume_command(
    run_id: _RunId,
    entry: _Entry = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Continue a failed or interrupted run in place: steps that succeeded return their
    recorded outputs without executing, the rest execute."""
    with _request():
        workflow = _workflow(entry)
        before, is_async = _source(run_id, workflow)
        try:
            if is_async:
                asyncio.run(st.aresume(before.run_id, workflow=workflow))
            else:
                st.resume(before.run_id, workflow=workflow)
        finally:
            finish_recording()
    with st.Store.open() as store:
        after = store.run(before.run_id)
        prefix = short_prefix(store, after.run_id)
        show = _show_command(store, after.run_id)
    reused, executed = _resumed_steps(before, after)
    if as_json:
        print_json(
            {
                "run_id": after.run_id,
                "workflow": after.workflow,
                "status": after.status,
                "resume_count": after.resume_count,
                "reused": reused,
                "executed": executed,
                "output": after.output,
                "error": after.error,
            }
        )
    else:
        console = make_console()
        _print_outcome(console, after)
        times = "once" if after.resume_count == 1 else f"{after.resume_count} times"
        console.print(Text.assemble(("resumed  ", "bold"), times))
        console.print(
            Text.assemble(
                ("reused   ", "bold"),
                ", ".join(reused) or "none",
                (" (recorded outputs, not executed)" if reused else "", "dim"),
            ),
            soft_wrap=True,
        )
        done = [
            f"{e['key']}"
            + (f" (attempt {e['attempt']})" if (e["attempt"] or 1) > 1 else "")
            + ("" if e["status"] == "succeeded" else f" {e['status']}")
            for e in executed
        ]
        console.print(Text.assemble(("executed ", "bold"), ", ".join(done) or "none"))
        console.print(Text.assemble(("show     ", "bold"), show), soft_wrap=True)
    if after.status != "succeeded":
        raise _failed(after, prefix, "resumed run")


def _resumed_steps(before: RunRecord, after: RunRecord) -> tuple[list[str], list[dict[str, Any]]]:
    """The steps the resume reused (succeeded before, not executed again: the outermost
    of them) and the step attempts it executed (those new in the run)."""
    old = {s.span_id for s in before.spans}
    executed = [
        {"key": s.step_key, "name": s.name, "attempt": s.attempt, "status": s.status}
        for s in after.spans
        if s.span_id not in old and s.kind in ("step", "tool") and s.step_key
    ]
    again = {e["key"] for e in executed}
    succeeded = [
        s.step_key
        for s in before.spans
        if s.kind in ("step", "tool") and s.step_key and s.status == "succeeded"
    ]
    reused: list[str] = []
    for key in dict.fromkeys(succeeded):
        if key in again or any(key.startswith(r + "/") for r in reused):
            continue
        reused.append(key)
    return reused, executed


def _print_outcome(console: Console, record: RunRecord, source: str | None = None) -> None:
    line = Text.assemble(("run      ", "bold"), record.run_id)
    if source:
        line.append(f"  {source}", style="dim")
    console.print(line, soft_wrap=True)
    console.print(
        Text.assemble(
            ("status   ", "bold"),
            styled_status(record.status),
            f"  {format_duration(record.duration_ms)}",
        )
    )


# --- fork ---------------------------------------------------------------------------------


def _fork_input(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    if text.startswith("@"):
        path = text[1:]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise CLIError(f"--input {text}: cannot read {path}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(
            f"--input is not valid JSON ({exc}); give the step's arguments by name, e.g. "
            """--input '{"ticket": {"id": 7}}' or --input @args.json"""
        ) from None
    if not isinstance(value, dict):
        raise CLIError(
            "--input must be a JSON object of the step's arguments by name, not "
            f"{type(value).__name__}"
        )
    return value


def fork_command(
    run_id: _RunId,
    from_step: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="STEP[#N]",
            help="The step to run again: its name (its first call), name#N (its N+1-th), "
            "or a nested key such as outer#0/inner#1.",
        ),
    ],
    input_json: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            metavar="JSON|@FILE",
            help="The step's arguments by name (a JSON object, or @file.json), in place "
            "of the recorded ones.",
        ),
    ] = None,
    llm: Annotated[
        LLMChoice,
        typer.Option(
            "--llm",
            help="LLM calls from the fork on: live, or answered from "
            "the recording where their prompts still match.",
        ),
    ] = LLMChoice.live,
    entry: _Entry = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the new run and its diff as JSON.")
    ] = False,
) -> None:
    """Run a recorded run again from one of its steps, as a new run: the steps before it
    return their recorded outputs, the step and everything after run live. Prints the
    new run and its diff against the source."""
    with _request():
        step_input = _fork_input(input_json)
        workflow = _workflow(entry)
        source, is_async = _source(run_id, workflow)
        try:
            if is_async:
                result = asyncio.run(
                    st.afork(source.run_id, from_step, step_input, llm.value, workflow=workflow)
                )
            else:
                result = st.fork(source.run_id, from_step, step_input, llm.value, workflow=workflow)
        finally:
            finish_recording()
    with st.Store.open() as store:
        record = store.run(result.run_id)
        diff = store.diff(source.run_id, record.run_id)
        prefixes = (short_prefix(store, source.run_id), short_prefix(store, record.run_id))
        show = _show_command(store, record.run_id)
    if as_json:
        print_json(
            {
                "run_id": record.run_id,
                "status": record.status,
                "source_run_id": source.run_id,
                "forked_at": record.forked_at,
                "output": record.output,
                "error": record.error,
                "diff": diff,
            }
        )
    else:
        console = make_console()
        _print_outcome(console, record, f"fork of {prefixes[0]} at {record.forked_at}")
        console.print(Text.assemble(("show     ", "bold"), show), soft_wrap=True)
        console.print(Text("\nagainst the source run:", style="bold"))
        print_diff(diff, prefixes)
    if record.status != "succeeded":
        raise _failed(record, prefixes[1], "forked run")


# --- replay -------------------------------------------------------------------------------


_STRICT_HELP = "Fail a replay at a call that has no recorded answer, rather than run it live."


def replay_command(
    run_id: Annotated[
        str | None,
        typer.Argument(metavar="[RUN_ID]", help=_RUN_HELP + " Or --workflow W --last N."),
    ] = None,
    workflow: Annotated[
        str | None,
        typer.Option("--workflow", "-w", help="Replay the last runs of this workflow."),
    ] = None,
    last: Annotated[
        int, typer.Option("--last", "-n", min=1, help="With --workflow: how many, newest first.")
    ] = 100,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            metavar="PREDICATE",
            help="With --workflow: only runs where … (as for `runs`; repeatable).",
        ),
    ] = None,
    status: Annotated[
        Status | None,
        typer.Option("--status", "-s", help="With --workflow: runs of this status [succeeded]."),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help=_STRICT_HELP)] = False,
    llm: Annotated[
        LLMChoice,
        typer.Option("--llm", help="LLM calls answered from the recording, or live."),
    ] = LLMChoice.recorded,
    tools: Annotated[
        ToolsChoice,
        typer.Option(
            "--tools",
            help="Tools answered from the recording; live: executed unless they have side "
            "effects; all: every one executed.",
        ),
    ] = ToolsChoice.recorded,
    entry: _Entry = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdicts as JSON.")] = False,
) -> None:
    """Run a recorded run again with today's code, LLM and tool calls answered from the
    recording, and say whether it behaves as recorded: identical, changed (at which step,
    how), diverged or failed. With --workflow W --last N, over many runs (exit code 1
    when any is not identical: a regression test made of recorded traffic)."""
    if (run_id is None) == (workflow is None):
        raise click.UsageError("give a RUN_ID, or --workflow W (with --last N) — not both")
    if run_id is not None:
        for name, given in (("--where", where), ("--status", status)):
            if given:
                raise click.UsageError(f"{name} selects runs for --workflow: not with a RUN_ID")
        _replay_one(run_id, strict, llm.value, tools.value, entry, as_json)
        return
    assert workflow is not None
    _replay_many(
        workflow,
        last,
        where or [],
        (status or Status.succeeded).value,
        strict,
        llm.value,
        tools.value,
        entry,
        as_json,
    )


def _replay_one(
    run_id: str, strict: bool, llm: str, tools: str, entry: str | None, as_json: bool
) -> None:
    with _request():
        workflow = _workflow(entry)
        source, is_async = _source(run_id, workflow)
        try:
            if is_async:
                result = asyncio.run(
                    st.areplay(source.run_id, llm, tools, strict, workflow=workflow)  # type: ignore[arg-type]
                )
            else:
                result = st.replay(source.run_id, llm, tools, strict, workflow=workflow)  # type: ignore[arg-type]
        finally:
            finish_recording()
    with st.Store.open() as store:
        replay = store.run(result.run_id)
        found = verdict(source, replay, result.exception)
        prefixes = (short_prefix(store, source.run_id), short_prefix(store, replay.run_id))
        show = _show_command(store, replay.run_id)
    if as_json:
        print_json(found.to_dict())
    else:
        console = make_console()
        console.print(Text.assemble(("source   ", "bold"), (source.run_id, "cyan")), soft_wrap=True)
        console.print(
            Text.assemble(
                ("replay   ", "bold"),
                (replay.run_id, "cyan"),
                "  ",
                styled_status(replay.status),
                f"  {format_duration(replay.duration_ms)}",
            ),
            soft_wrap=True,
        )
        console.print(Text.assemble(("verdict  ", "bold"), _verdict_text(found)), soft_wrap=True)
        cut = [0]
        for change in found.changes:
            print_change(console, change, "  ", cut)
        _print_calls(console, found)
        console.print(Text.assemble(("show     ", "bold"), show), soft_wrap=True)
        diff = [*self_command(), *store_option(), "diff", *prefixes]
        console.print(Text.assemble(("diff     ", "bold"), shlex.join(diff)), soft_wrap=True)
        if cut[0]:
            note(f"{cut[0]:,} diff line(s) were cut to the terminal's width (…): --json has them")
    if found.verdict != "identical":
        raise typer.Exit(1)


_ID_CHARS = 16
"""A run id in the lines of a regression replay: a prefix `show` and `diff` accept (64
bits: unambiguous in any real store); --json has them whole."""
_MESSAGE_CHARS = 200
"""The message of a diverged or failed run in a regression replay's line is cut to this."""
_VERDICT_STYLES = {
    "identical": "green",
    "changed": "yellow",
    "diverged": "red",
    "failed": "red",
    "skipped": "dim",
}


def _verdict_text(v: Verdict) -> Text:
    text = Text(v.verdict, style=f"bold {_VERDICT_STYLES[v.verdict]}")
    if v.verdict == "changed":
        text.append(f" at step {v.step}" if v.step else " (the run's own output or error)")
    elif (v.verdict == "diverged" and v.step) or (v.verdict == "failed" and v.step):
        text.append(f" at step {v.step}")
    if v.message:
        text.append(f": {v.message}")
    return text


def _print_calls(console: Console, v: Verdict) -> None:
    console.print(
        Text.assemble(
            ("LLM      ", "bold"),
            f"{v.llm_recorded} recorded, {v.llm_live} live; ",
            (f"{len(v.unmatched)} unmatched", "yellow" if v.unmatched else ""),
        )
    )
    for call in v.unmatched:
        console.print(
            Text(f"  unmatched {call['kind']} call at {call['at']}: {call['reason']}", "yellow"),
            soft_wrap=True,
        )


def _compact(v: Verdict, limit: int = 2) -> str:
    """A verdict's changes on one line: the first ``limit`` paths with their values."""
    parts = []
    for change in v.changes[:limit]:
        if change["change"] == "added":
            parts.append(f"+{change['path']}={abbrev(change.get('b'), 40)}")
        elif change["change"] == "removed":
            parts.append(f"-{change['path']}={abbrev(change.get('a'), 40)}")
        else:
            parts.append(
                f"{change['path']}: {abbrev(change.get('a'), 40)} → {abbrev(change.get('b'), 40)}"
            )
    more = len(v.changes) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _replay_many(
    workflow: str,
    last: int,
    where: Sequence[str],
    status: str,
    strict: bool,
    llm: str,
    tools: str,
    entry: str | None,
    as_json: bool,
) -> None:
    with _request():
        given = _workflow(entry)
        if given is not None:
            name = _workflow_name(given)
            if name != workflow:
                raise CLIError(f"--entry {entry} is the workflow {name!r}, not {workflow!r}")
        with st.Store.open() as store:
            check_workflow(store, workflow)
            total = min(
                last, store.count_runs(workflow, status, where=where or None, originals=True)
            )
        if not total:
            filters = " and ".join([f"--status {status}", *(f"--where {w!r}" for w in where)])
            raise CLIError(f"no runs of {workflow!r} match {filters}: nothing to replay")
    console = make_console()

    def one(v: Verdict) -> None:
        if as_json:
            return
        source = v.source_run_id[:_ID_CHARS]
        replay = (v.replay_run_id or "–")[:_ID_CHARS]
        line = Text.assemble((source, "cyan"), " → ", (replay, "cyan"), "  ")
        line.append(v.verdict, style=_VERDICT_STYLES[v.verdict])
        if v.verdict == "changed":
            line.append(f" at {v.step or '(run)'}: {_compact(v)}")
        elif v.message:  # cut to a line: --json and `replay RUN_ID` have it whole
            at = f"at {v.step}: " if v.step else ""
            line.append(f" {at}{abbrev(v.message, _MESSAGE_CHARS)}")
        console.print(line, soft_wrap=True)

    try:
        with progress(total, "replaying") as advance, _request():

            def on_verdict(v: Verdict) -> None:
                one(v)
                advance()

            report = replay_many(
                given if given is not None else workflow,
                last,
                where or None,
                status=status,
                llm=llm,  # type: ignore[arg-type]
                tools=tools,  # type: ignore[arg-type]
                strict=strict,
                on_verdict=on_verdict,
            )
    finally:
        finish_recording()
    if as_json:
        print_json(report.to_dict())
    else:
        _print_summary(console, report)
    if not report.ok:
        raise typer.Exit(1)


def _workflow_name(fn: Callable[..., Any]) -> str:
    """The name of the ``@workflow`` ``fn`` (``CLIError`` for anything else)."""
    try:
        return workflow_spec(fn).name
    except TypeError as exc:
        raise CLIError(str(exc)) from None


def _print_summary(console: Console, report: Report) -> None:
    style = "green" if report.ok else "red"
    console.print(Text(report.summary_line(), style=f"bold {style}"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the commands to the ``steptrace`` app."""
    app.command("resume")(resume_command)
    app.command("fork")(fork_command)
    app.command("replay")(replay_command)
