"""``steptrace dataset …``: datasets built from recorded step occurrences
(``steptrace.evals.datasets``): ``add``, ``list``, ``show``, ``rm``, ``export`` and
``correct``, registered on the ``steptrace`` app by ``register(app)``.

Item ids are printed as their first 8 characters; any unambiguous prefix names an item.
"""

from __future__ import annotations

import enum
import getpass
import json
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

import steptrace as st
from steptrace.cli.app import WhereFilter, WorkflowFilter
from steptrace.cli.errors import CLIError, refused
from steptrace.cli.names import check_step
from steptrace.cli.output import Column, abbrev, make_console, note, print_json, print_table
from steptrace.errors import EvaluationError, QueryError
from steptrace.evals import datasets
from steptrace.evals.datasets import SHORT_ID_CHARS

dataset_app = typer.Typer(
    name="dataset",
    help="Datasets of recorded step inputs and outputs (the outputs as references), "
    "to run experiments over.",
    no_args_is_help=True,
)

_Name = Annotated[str, typer.Argument(metavar="NAME", help="The dataset's name.")]
_Json = Annotated[bool, typer.Option("--json", help="Print as JSON.")]


class OccurrenceStatus(enum.StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    any = "any"


class ExportFormat(enum.StrEnum):
    jsonl = "jsonl"
    json = "json"


def requests() -> AbstractContextManager[None]:
    """A dataset request that cannot be carried out is one line, exit code 2."""
    return refused(EvaluationError, QueryError)


def parse_json_value(text: str, option: str) -> Any:
    """``text`` (JSON, or ``@file`` holding JSON) as a value; a ``CLIError`` naming
    ``option`` when it is not JSON."""
    if text.startswith("@"):
        path = text[1:]
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CLIError(f"{option} {text}: cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(
            f"{option} is not valid JSON ({exc}): e.g. {option} '\"billing\"', "
            f'{option} \'{{"label": "billing"}}\' or {option} @reference.json'
        ) from None


def add_command(
    name: _Name,
    step: Annotated[str, typer.Option("--step", help="The step whose occurrences to add.")],
    where: WhereFilter = None,
    last: Annotated[
        int | None,
        typer.Option("--last", "-n", min=1, help="Only the newest N matching occurrences."),
    ] = None,
    workflow: WorkflowFilter = None,
    status: Annotated[
        OccurrenceStatus,
        typer.Option("--status", "-s", help="Occurrences whose final attempt has this status."),
    ] = OccurrenceStatus.succeeded,
    description: Annotated[
        str | None, typer.Option("--description", help="What the dataset is for (when new).")
    ] = None,
    as_json: _Json = False,
) -> None:
    """Add recorded occurrences of a step to a dataset (made on first use): each one's
    input, and its output as the reference. A predicate on the step itself
    (--where 'classify.output.label = billing') keeps the occurrences that satisfy it;
    others keep the runs that do. An occurrence already in the dataset is not added
    again; one recorded as a placeholder or with a redacted secret is skipped."""
    with st.Store.open() as store, requests():
        check_step(store, step, workflow)
        report = datasets.add(
            store,
            name,
            step,
            where=where,
            last=last,
            workflow=workflow,
            status=status.value,
            description=description,
        )
    if as_json:
        print_json(report.to_dict())
        return
    console = make_console()
    line = Text.assemble(
        ("added ", "bold"),
        f"{len(report.added)} item(s) to dataset ",
        (report.dataset, "cyan"),
        f" ({report.existing} already in it, {len(report.skipped)} skipped; "
        f"{report.matched} matching occurrence(s) of {report.step})",
    )
    console.print(line, soft_wrap=True)
    for skipped in report.skipped:
        console.print(
            Text(
                f"  skipped {skipped.source_run_id[:16]}/{skipped.source_span_id}: "
                f"{skipped.reason}",
                style="yellow",
            ),
            soft_wrap=True,
        )
    if not report.matched:
        note(f"no occurrence of {step!r} matched the filters")


def list_command(as_json: _Json = False) -> None:
    """List the datasets."""
    with st.Store.open() as store:
        found = datasets.datasets(store)
    if as_json:
        print_json([d.to_dict() for d in found])
        return
    if not found:
        note("no datasets yet: make one with steptrace dataset add NAME --step STEP")
        return
    print_table(
        make_console(),
        [
            Column("name", fold=False),
            Column("step", fold=False),
            Column("items", "right", fold=False),
            Column("corrected", "right", fold=False),
            Column("created", fold=False),
            Column("description"),
        ],
        [
            [
                d.name,
                d.step or "",
                str(d.items),
                str(d.corrected),
                d.created_at,
                d.description or "",
            ]
            for d in found
        ],
        whole="--json",
    )


def show_command(name: _Name, as_json: _Json = False) -> None:
    """Show a dataset's items: id, input, reference (★ a human correction of the
    recorded output) and the run each came from."""
    with st.Store.open() as store, requests():
        doc = datasets.document(store, name)
    if as_json:
        print_json(doc)
        return
    console = make_console()
    console.print(
        Text.assemble(
            ("dataset ", "bold"),
            (doc["name"], "cyan"),
            f"  step {doc['step']}  {len(doc['items'])} item(s), {doc['corrected']} corrected",
        ),
        soft_wrap=True,
    )
    if not doc["items"]:
        return
    print_table(
        console,
        [
            Column("item", fold=False),
            Column("input", max_chars=80),
            Column("reference", max_chars=60),
            Column("", fold=False),
            Column("source run", fold=False),
        ],
        [
            [
                i["item_id"][:SHORT_ID_CHARS],
                abbrev(i["input"], 200),
                abbrev(i["reference"], 200),
                "★" if i["corrected_at"] else "",
                (i["source_run_id"] or "")[:16],
            ]
            for i in doc["items"]
        ],
        whole="--json",
    )


def rm_command(
    name: _Name,
    items: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ITEM]...", help="Items to remove (default: the whole dataset)."),
    ] = None,
) -> None:
    """Remove items of a dataset, or the whole dataset. Experiments that ran over them
    keep their results."""
    with st.Store.open() as store, requests():
        n = datasets.remove(store, name, items or ())
    if items:
        sys.stdout.write(f"removed {n} item(s) from dataset {name}\n")
    else:
        sys.stdout.write(f"removed dataset {name} ({n} item(s))\n")


def export_command(
    name: _Name,
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="jsonl (one item per line) or json (one object)."),
    ] = ExportFormat.jsonl,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> None:
    """Export a dataset's items (input, recorded output, reference, source run)."""
    with st.Store.open() as store, requests():
        if output is None:
            datasets.export(store, name, sys.stdout.buffer, fmt.value)
            sys.stdout.flush()
            return
        n = datasets.export(store, name, output, fmt.value)
    note(f"wrote {n} item(s) to {output}")


def correct_command(
    name: _Name,
    item: Annotated[str, typer.Argument(metavar="ITEM", help="The item's id or a prefix.")],
    reference: Annotated[
        str,
        typer.Option(
            "--reference", "-r", metavar="JSON|@FILE", help="The correct output, as JSON."
        ),
    ],
    by: Annotated[
        str | None, typer.Option("--by", help="Who corrected it (default: your user name).")
    ] = None,
    as_json: _Json = False,
) -> None:
    """Replace an item's reference with a human correction (the recorded output stays):
    experiments judge outputs against it from now on."""
    value = parse_json_value(reference, "--reference")
    if by is None:
        try:
            by = getpass.getuser()
        except Exception:  # no user name to be had (a container without one)
            by = None
    with st.Store.open() as store, requests():
        corrected = datasets.correct(store, name, item, value, by=by)
    if as_json:
        print_json(corrected.to_dict())
        return
    console = make_console()
    console.print(
        Text.assemble(
            ("corrected ", "bold"),
            (corrected.item_id[:SHORT_ID_CHARS], "cyan"),
            f" of dataset {name}: reference {abbrev(corrected.reference, 100)} "
            f"(recorded {abbrev(corrected.recorded_output, 100)})",
        ),
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add the ``dataset`` group to the ``steptrace`` app."""
    dataset_app.command("add")(add_command)
    dataset_app.command("list")(list_command)
    dataset_app.command("show")(show_command)
    dataset_app.command("rm")(rm_command)
    dataset_app.command("export")(export_command)
    dataset_app.command("correct")(correct_command)
    app.add_typer(dataset_app)
