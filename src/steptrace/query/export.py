"""Export runs, steps, spans, LLM calls or scores as JSON Lines, CSV or Parquet, or as a
pandas DataFrame (``Store.export``, ``Store.to_pandas``, ``steptrace export``).

The runs are chosen with the filters of ``Store.runs`` (``RunFilter``) and written
newest first; the rows of a run in start order. Tables:

- ``runs``  — one row per run (the ``runs`` table);
- ``steps`` — one row per step or tool attempt (the ``steps`` view, with
  ``occurrence`` and ``is_final_attempt``);
- ``spans`` — every span of the runs (the ``spans`` table);
- ``llm``   — one row per LLM call with the step it was made in (the ``llm`` view);
- ``scores`` — every score on the runs or their span attempts (the ``scores`` table),
  in the order they were first given.

JSON columns (``input``, ``output``, ``error``, …) are JSON values in JSON Lines
and pandas, and JSON text in CSV and Parquet. Parquet needs ``pyarrow``, pandas
needs ``pandas``; neither is a dependency of steptrace.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from typing import IO, Any

import orjson

from steptrace.errors import QueryError
from steptrace.query.distribution import Reader
from steptrace.query.where import RunFilter
from steptrace.record import stored_name
from steptrace.store.columns import JSON_NAMES, LLM, RUNS, SCORES, SPANS, STEPS, Table

_SOURCES: dict[str, Table] = {
    "runs": RUNS,
    "steps": STEPS,
    "spans": SPANS,
    "llm": LLM,
    "scores": SCORES,
}


def _exported(table: Table) -> list[str]:
    """A table's columns as exported: ``run_id`` first (rows come grouped by run), the
    store's bookkeeping left out."""
    names = [c.name for c in table.columns if not c.internal]
    return ["run_id", *(n for n in names if n != "run_id")]


TABLES: dict[str, list[str]] = {name: _exported(table) for name, table in _SOURCES.items()}
JSON_COLUMNS = JSON_NAMES
"""Columns holding JSON (by name, in tables, views and ``Store.sql`` results)."""
_INT_COLUMNS = frozenset(
    c.name for t in _SOURCES.values() for c in t.columns if c.type == "integer"
)
_FLOAT_COLUMNS = frozenset(c.name for t in _SOURCES.values() for c in t.columns if c.type == "real")
FORMATS = ("jsonl", "csv", "parquet")
_CHUNK_RUNS = 500


def decode_json(value: Any) -> Any:
    """A JSON column's value as Python data (text that is not JSON is kept as text)."""
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def run_ids(db: Reader, runs: RunFilter, last: int | None) -> list[str]:
    """The ids of the runs ``runs`` selects, newest first (the ``last`` newest if given)."""
    conds, params = runs.sql(db.dialect, every=last is None)
    where = f"WHERE {' AND '.join(conds)} " if conds else ""
    limit = ""
    if last is not None:
        if last < 1:
            raise QueryError(f"last must be a positive number of runs, not {last!r}")
        limit = " LIMIT ?"
        params.append(last)
    return [
        r[0]
        for r in db.rows(
            f"SELECT run_id FROM runs {where}ORDER BY started_at DESC, run_id DESC{limit}", params
        )
    ]


def iter_rows(
    db: Reader,
    table: str = "steps",
    runs: RunFilter | None = None,
    *,
    last: int | None = None,
    step: str | None = None,
) -> tuple[list[str], Iterator[list[Any]]]:
    """The columns of ``table`` and an iterator over its rows for the chosen runs (JSON
    columns as JSON text), read a few hundred runs at a time."""
    if table not in TABLES:
        raise QueryError(f"unknown table {table!r}: choose one of {', '.join(TABLES)}")
    if step is not None and table == "runs":
        raise QueryError("step= applies to the steps, spans, llm and scores tables, not runs")
    columns = TABLES[table]
    run_at = columns.index("run_id")
    ids = run_ids(db, runs or RunFilter(), last)

    def rows() -> Iterator[list[Any]]:
        name_column = "step" if table in ("llm", "scores") else "name"
        order = {"runs": "", "scores": ", created_at"}.get(table, ", started_at")
        for start in range(0, len(ids), _CHUNK_RUNS):
            chunk = ids[start : start + _CHUNK_RUNS]
            position = {run_id: i for i, run_id in enumerate(chunk)}
            marks = ", ".join("?" * len(chunk))
            extra = f" AND {name_column} = ?" if step is not None else ""
            params: list[Any] = [*chunk, *([stored_name(step)] if step is not None else [])]
            found = db.rows(
                f"SELECT {', '.join(columns)}{order} FROM {table} WHERE run_id IN ({marks}){extra}",
                params,
            )
            found.sort(key=lambda r: (position[r[run_at]], r[-1] if order else 0))
            for row in found:
                yield list(row[: len(columns)])

    return columns, rows()


# --- writers --------------------------------------------------------------------------


def write_jsonl(columns: Sequence[str], rows: Iterator[list[Any]], out: IO[bytes]) -> int:
    json_at = [c in JSON_COLUMNS for c in columns]
    n = 0
    for row in rows:
        record = {
            c: orjson.Fragment(v) if is_json and isinstance(v, str) else v
            for c, v, is_json in zip(columns, row, json_at, strict=True)
        }
        out.write(orjson.dumps(record) + b"\n")
        n += 1
    return n


def write_csv(columns: Sequence[str], rows: Iterator[list[Any]], out: IO[bytes]) -> int:
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
        n += 1
    text.flush()
    text.detach()
    return n


def require_arrow() -> Any:
    """pyarrow, or a ``QueryError`` saying how to install it (for Parquet)."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise QueryError(
            "Parquet export needs pyarrow: pip install pyarrow (or use jsonl or csv)"
        ) from None
    return pyarrow


def write_parquet(
    columns: Sequence[str], rows: Iterator[list[Any]], out: IO[bytes], batch_rows: int = 10_000
) -> int:
    pa = require_arrow()
    schema = pa.schema(
        [
            (
                c,
                pa.int64()
                if c in _INT_COLUMNS
                else pa.float64()
                if c in _FLOAT_COLUMNS
                else pa.string(),
            )
            for c in columns
        ]
    )
    n = 0
    with pa.parquet.ParquetWriter(out, schema) as writer:
        batch: list[list[Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == batch_rows:
                writer.write_table(_table(pa, schema, columns, batch))
                n += len(batch)
                batch = []
        if batch or n == 0:
            writer.write_table(_table(pa, schema, columns, batch))
            n += len(batch)
    return n


def _table(pa: Any, schema: Any, columns: Sequence[str], batch: list[list[Any]]) -> Any:
    data = {c: [row[i] for row in batch] for i, c in enumerate(columns)}
    return pa.table(data, schema=schema)


def write(fmt: str, columns: Sequence[str], rows: Iterator[list[Any]], out: IO[bytes]) -> int:
    """Write rows in ``fmt`` (jsonl, csv or parquet) to a binary stream; the row count."""
    if fmt == "jsonl":
        return write_jsonl(columns, rows, out)
    if fmt == "csv":
        return write_csv(columns, rows, out)
    if fmt == "parquet":
        return write_parquet(columns, rows, out)
    raise QueryError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")


def to_pandas(columns: Sequence[str], rows: Iterator[list[Any]]) -> Any:
    """A pandas DataFrame of the rows, JSON columns decoded."""
    try:
        import pandas
    except ImportError:
        raise QueryError("to_pandas needs pandas: pip install pandas") from None
    json_at = [c in JSON_COLUMNS for c in columns]
    records = [
        [decode_json(v) if is_json else v for v, is_json in zip(row, json_at, strict=True)]
        for row in rows
    ]
    return pandas.DataFrame.from_records(records, columns=list(columns))
