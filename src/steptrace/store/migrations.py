"""The store's schema: one ordered list of named migrations, recorded in ``_migrations``.

Each migration is written once; a backend differs only where its engine does
(``JSON`` is TEXT under SQLite's JSON1 and JSONB under PostgreSQL). A store
opened by a client that does not know a migration recorded in the database
refuses to write rather than guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from steptrace.errors import SchemaTooNew as SchemaTooNew  # re-exported: older imports


@dataclass(frozen=True)
class Migration:
    name: str
    sql: Callable[[str], list[str]]
    """Statements for a dialect (``"sqlite"`` or ``"postgresql"``)."""


def _json(dialect: str) -> str:
    return "JSONB" if dialect == "postgresql" else "TEXT"


def _text(dialect: str) -> str:
    """Text compared byte by byte, as SQLite does: ids, names and ISO timestamps sort
    (and index) the same on both engines, whatever the database's locale."""
    return 'TEXT COLLATE "C"' if dialect == "postgresql" else "TEXT"


def _initial(dialect: str) -> list[str]:
    j, t = _json(dialect), _text(dialect)
    return [
        f"""CREATE TABLE runs (
            run_id {t} PRIMARY KEY,
            workflow {t} NOT NULL,
            status {t} NOT NULL,
            trace_id {t} NOT NULL,
            span_id {t} NOT NULL,
            parent_trace_id {t},
            parent_span_id {t},
            started_at {t} NOT NULL,
            ended_at {t},
            duration_ms DOUBLE PRECISION,
            input {j},
            output {j},
            error {j},
            tags {j}
        )""",
        "CREATE INDEX runs_workflow_started ON runs (workflow, started_at)",
        "CREATE INDEX runs_started ON runs (started_at)",
        "CREATE INDEX runs_status_started ON runs (status, started_at)",
        "CREATE INDEX runs_trace ON runs (trace_id)",
        f"""CREATE TABLE spans (
            span_id {t} PRIMARY KEY,
            run_id {t} NOT NULL,
            parent_span_id {t},
            kind {t} NOT NULL,
            name {t} NOT NULL,
            step_key {t},
            attempt INTEGER,
            status {t} NOT NULL,
            started_at {t} NOT NULL,
            ended_at {t},
            duration_ms DOUBLE PRECISION,
            input {j},
            output {j},
            error {j},
            attributes {j},
            input_hash {t}
        )""",
        "CREATE INDEX spans_run ON spans (run_id, started_at)",
        "CREATE INDEX spans_name_run ON spans (name, run_id)",
        f"""CREATE TABLE llm_calls (
            span_id {t} PRIMARY KEY,
            run_id {t} NOT NULL,
            provider {t} NOT NULL,
            model {t} NOT NULL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cost_usd DOUBLE PRECISION,
            params {j}
        )""",
        "CREATE INDEX llm_calls_run ON llm_calls (run_id)",
        f"""CREATE TABLE logs (
            run_id {t} NOT NULL,
            span_id {t} NOT NULL,
            seq INTEGER NOT NULL,
            ts {t} NOT NULL,
            level {t} NOT NULL,
            logger {t} NOT NULL,
            message {t} NOT NULL,
            exception {t},
            attributes {j}
        )""",
        "CREATE INDEX logs_span ON logs (run_id, span_id, seq)",
    ]


def _llm_details(dialect: str) -> list[str]:
    j, t = _json(dialect), _text(dialect)
    columns = [
        ("cached_input_tokens", "INTEGER"),
        ("reasoning_tokens", "INTEGER"),
        ("finish_reason", t),
        ("response_model", t),
        ("time_to_first_chunk_ms", "DOUBLE PRECISION"),
        ("tool_calls", j),
        ("incomplete", "INTEGER NOT NULL DEFAULT 0"),
    ]
    return [f"ALTER TABLE llm_calls ADD COLUMN {name} {kind}" for name, kind in columns]


def _steps_view(occurrence: str) -> str:
    """The ``steps`` view, with the SQL that reads a step's occurrence from its key."""
    return f"""CREATE VIEW steps AS
        SELECT s.run_id, r.workflow, r.status AS run_status, s.span_id, s.parent_span_id,
               s.kind, s.name, s.step_key,
               {occurrence} AS occurrence,
               s.attempt,
               CASE WHEN EXISTS (
                   SELECT 1 FROM spans n WHERE n.run_id = s.run_id
                   AND n.step_key = s.step_key AND n.attempt > s.attempt
               ) THEN 0 ELSE 1 END AS is_final_attempt,
               s.status, s.started_at, s.ended_at, s.duration_ms,
               s.input, s.output, s.error, s.attributes, s.input_hash
        FROM spans s JOIN runs r ON r.run_id = s.run_id
        WHERE s.step_key IS NOT NULL"""


def _query(dialect: str) -> list[str]:
    """Indexes and views for the query layer (``steptrace.query``): the "last N runs"
    indexes carry ``run_id`` (and ``status``) so they cover the window and its order;
    covering indexes for a step's attempts newest first and for a run's step attempts
    and LLM calls; ``llm_calls.parent_span_id`` (the step attempt a call was made in,
    filled in for existing rows); the ``steps`` and ``llm`` views documented for
    ``steptrace sql``."""
    return [
        "DROP INDEX runs_workflow_started",
        "CREATE INDEX runs_workflow_started ON runs (workflow, started_at, run_id, status)",
        "DROP INDEX runs_started",
        "CREATE INDEX runs_started ON runs (started_at, run_id, status)",
        "DROP INDEX runs_status_started",
        "CREATE INDEX runs_status_started ON runs (status, started_at, run_id)",
        "CREATE INDEX runs_ended ON runs (ended_at, started_at)",
        "CREATE INDEX spans_steps_run ON spans "
        "(run_id, span_id, kind, name, step_key, attempt, status, duration_ms) "
        "WHERE step_key IS NOT NULL",
        "CREATE INDEX spans_steps_name_started ON spans "
        "(name, started_at, run_id, step_key, attempt, kind, status, duration_ms) "
        "WHERE step_key IS NOT NULL",
        f"ALTER TABLE llm_calls ADD COLUMN parent_span_id {_text(dialect)}",
        "UPDATE llm_calls SET parent_span_id = "
        "(SELECT s.parent_span_id FROM spans s WHERE s.span_id = llm_calls.span_id)",
        "DROP INDEX llm_calls_run",
        "CREATE INDEX llm_calls_run ON llm_calls "
        "(run_id, parent_span_id, input_tokens, output_tokens, cost_usd)",
        _steps_view("CAST(substr(s.step_key, length(s.name) + 2) AS INTEGER)"),
        """CREATE VIEW llm AS
        SELECT c.run_id, c.span_id, c.parent_span_id, p.name AS step, p.step_key,
               p.attempt AS step_attempt, l.provider, l.model, l.response_model, c.status,
               c.started_at, c.ended_at, c.duration_ms, l.input_tokens, l.output_tokens,
               l.cached_input_tokens, l.reasoning_tokens, l.cost_usd, l.finish_reason,
               c.input -> 'messages' AS messages, l.params,
               c.output AS response, l.tool_calls, c.error
        FROM llm_calls l JOIN spans c ON c.span_id = l.span_id
        LEFT JOIN spans p ON p.span_id = c.parent_span_id AND p.step_key IS NOT NULL""",
    ]


def _export_drops(dialect: str) -> list[str]:
    """``otel_export``: one row per report of spans the OTLP export dropped (written once
    per interval by a process whose export lost spans, and at its exit)."""
    t = _text(dialect)
    return [
        f"""CREATE TABLE otel_export (
            reported_at {t} NOT NULL,
            process {t} NOT NULL,
            target {t} NOT NULL,
            interval_s DOUBLE PRECISION NOT NULL,
            exported INTEGER NOT NULL,
            dropped_queue_full INTEGER NOT NULL,
            dropped_failed INTEGER NOT NULL,
            dropped_at_exit INTEGER NOT NULL,
            last_error {t}
        )""",
        "CREATE INDEX otel_export_reported ON otel_export (reported_at)",
    ]


def _durability(dialect: str) -> list[str]:
    """What makes every write idempotent and a dead process visible: a run names the
    process that owns it (``runs.owner``, a row of ``owners`` with its heartbeat); a
    log record is unique by (run, span, seq), so a batch written twice (replayed from a
    spill journal after an uncertain commit) stores it once; ``store_health`` holds one
    row per report of a process whose writes were spilled, quarantined or lost."""
    t = _text(dialect)
    duplicates = (
        "DELETE FROM logs WHERE ctid NOT IN "
        "(SELECT min(ctid) FROM logs GROUP BY run_id, span_id, seq)"
        if dialect == "postgresql"
        else "DELETE FROM logs WHERE rowid NOT IN "
        "(SELECT min(rowid) FROM logs GROUP BY run_id, span_id, seq)"
    )
    return [
        f"ALTER TABLE runs ADD COLUMN owner {t}",
        "CREATE INDEX runs_running_owner ON runs (owner) WHERE status = 'running'",
        f"""CREATE TABLE owners (
            owner {t} PRIMARY KEY,
            host {t} NOT NULL,
            pid INTEGER NOT NULL,
            process_started_at {t},
            started_at {t} NOT NULL,
            heartbeat_at {t} NOT NULL,
            ended_at {t}
        )""",
        duplicates,
        "DROP INDEX logs_span",
        "CREATE UNIQUE INDEX logs_span ON logs (run_id, span_id, seq)",
        f"""CREATE TABLE store_health (
            reported_at {t} NOT NULL,
            process {t} NOT NULL,
            store {t} NOT NULL,
            interval_s DOUBLE PRECISION NOT NULL,
            written INTEGER NOT NULL,
            spilled INTEGER NOT NULL,
            replayed INTEGER NOT NULL,
            quarantined INTEGER NOT NULL,
            lost INTEGER NOT NULL,
            sanitized INTEGER NOT NULL,
            last_error {t}
        )""",
        "CREATE INDEX store_health_reported ON store_health (reported_at)",
    ]


def _lineage(dialect: str) -> list[str]:
    """What acting on a run needs: where a run's code is (``entry_point``,
    ``code_version``), what it was derived from (``forked_from`` and ``forked_at``, or
    ``replay_of``), how often it was resumed in place (``resume_count``), its durability
    (recovery resumes only runs that committed every step), and the lease a recoverer
    holds on it while resuming it; the ``steps`` view reads the occurrence of a nested
    step from its path."""
    t = _text(dialect)
    json = _json(dialect)
    return [
        f"ALTER TABLE runs ADD COLUMN entry_point {t}",
        f"ALTER TABLE runs ADD COLUMN code_version {json}",
        f"ALTER TABLE runs ADD COLUMN forked_from {t}",
        f"ALTER TABLE runs ADD COLUMN forked_at {t}",
        f"ALTER TABLE runs ADD COLUMN replay_of {t}",
        "ALTER TABLE runs ADD COLUMN resume_count INTEGER NOT NULL DEFAULT 0",
        f"ALTER TABLE runs ADD COLUMN durability {t}",
        f"ALTER TABLE runs ADD COLUMN lease_owner {t}",
        f"ALTER TABLE runs ADD COLUMN lease_until {t}",
        "CREATE INDEX runs_forked_from ON runs (forked_from) WHERE forked_from IS NOT NULL",
        "CREATE INDEX runs_replay_of ON runs (replay_of) WHERE replay_of IS NOT NULL",
        "CREATE INDEX runs_interrupted ON runs (started_at) WHERE status = 'interrupted'",
        # A nested step's key is a path (``outer#0/inner#1``): its occurrence is the
        # number after the last ``#``.
        "DROP VIEW steps",
        _steps_view(
            "CAST(substr(s.step_key, length(rtrim(s.step_key, '0123456789')) + 1) AS INTEGER)"
        ),
    ]


def _evaluation(dialect: str) -> list[str]:
    """What evaluating step outputs needs.

    - ``scores``: one row per score on a run (``span_id`` NULL) or on one span attempt.
      ``score_id`` is a digest of (run, span, name, source), so scoring the same target
      again with the same name and source updates the row instead of adding one.
      ``kind`` is ``numeric``, ``boolean`` (``value`` 1 or 0) or ``categorical``
      (``label`` holds the category, ``value`` is NULL); ``step`` is the scored span's
      name (NULL for a run) so a step's scores aggregate from one index;
      ``judge_run_id`` names the run in which an LLM judge decided.
    - ``datasets`` and ``dataset_items``: inputs taken from recorded step occurrences,
      each with a reference output (the recorded one, or a human correction).
    - ``experiments`` and ``experiment_items``: today's code of a step run over a
      dataset, one row per item with the run that executed it.
    - ``runs.session_id``: the conversation or user journey a run belongs to.
    """
    j, t = _json(dialect), _text(dialect)
    return [
        f"""CREATE TABLE scores (
            score_id {t} PRIMARY KEY,
            run_id {t} NOT NULL,
            span_id {t},
            step {t},
            name {t} NOT NULL,
            kind {t} NOT NULL,
            value DOUBLE PRECISION,
            label {t},
            rationale {t},
            source {t} NOT NULL,
            judge_run_id {t},
            created_at {t} NOT NULL,
            updated_at {t} NOT NULL
        )""",
        # A run's scores, and whether a run has a score of a name that satisfies a
        # comparison (``--where score.NAME < x``, run by run) from the index alone.
        "CREATE INDEX scores_run ON scores (run_id, name, value, label)",
        "CREATE INDEX scores_name_value ON scores (name, value, run_id)",
        "CREATE INDEX scores_name_label ON scores (name, label, run_id)",
        # A step's scores of a name, aggregated by kind and label from the index alone
        # (in the index's order: no sorting).
        "CREATE INDEX scores_step_name ON scores (step, name, kind, label, value) "
        "WHERE step IS NOT NULL",
        # The scores given last (``steptrace scores``).
        "CREATE INDEX scores_updated ON scores (updated_at)",
        f"""CREATE TABLE datasets (
            name {t} PRIMARY KEY,
            step {t},
            description {t},
            created_at {t} NOT NULL
        )""",
        f"""CREATE TABLE dataset_items (
            item_id {t} PRIMARY KEY,
            dataset {t} NOT NULL,
            seq INTEGER NOT NULL,
            step {t} NOT NULL,
            step_key {t},
            source_run_id {t},
            source_span_id {t},
            input {j},
            recorded_output {j},
            reference {j},
            corrected_at {t},
            corrected_by {t},
            created_at {t} NOT NULL
        )""",
        "CREATE INDEX dataset_items_dataset ON dataset_items (dataset, seq)",
        "CREATE UNIQUE INDEX dataset_items_source ON dataset_items (dataset, source_span_id)",
        f"""CREATE TABLE experiments (
            name {t} PRIMARY KEY,
            dataset {t} NOT NULL,
            target {t} NOT NULL,
            mode {t} NOT NULL,
            evaluators {j},
            params {j},
            code_version {j},
            status {t} NOT NULL,
            started_at {t} NOT NULL,
            ended_at {t}
        )""",
        f"""CREATE TABLE experiment_items (
            experiment {t} NOT NULL,
            item_id {t} NOT NULL,
            run_id {t},
            span_id {t},
            status {t} NOT NULL,
            output {j},
            error {j},
            duration_ms DOUBLE PRECISION,
            cost_usd DOUBLE PRECISION,
            input_tokens INTEGER,
            output_tokens INTEGER,
            PRIMARY KEY (experiment, item_id)
        )""",
        "CREATE INDEX experiment_items_run ON experiment_items (run_id)",
        f"ALTER TABLE runs ADD COLUMN session_id {t}",
        "CREATE INDEX runs_session ON runs (session_id, started_at) WHERE session_id IS NOT NULL",
    ]


def _lean_spans(dialect: str) -> list[str]:
    """Fewer indexes on ``spans``, the table every step writes: one index by run and
    name, covering what the run's tree, the step-attempt checks and the per-run
    questions read (it replaces three: by run and start time, by name and run, and the
    step attempts by run), beside the step attempts by name and start time
    (distributions, stats) and the key. Each index a span row updates costs a write
    about a twelfth of its time."""
    statements = [
        "DROP INDEX spans_run",
        "DROP INDEX spans_name_run",
        "DROP INDEX spans_steps_run",
        "CREATE INDEX spans_run ON spans "
        "(run_id, name, started_at, span_id, kind, step_key, attempt, status, duration_ms)",
    ]
    if dialect == "postgresql":
        # A step's row (~2-3 KB) is over the size PostgreSQL compresses its largest
        # values at: LZ4 does that at a fraction of the CPU of pglz, its default, for
        # about the same size. Left as it is on a server built without LZ4.
        alter = "; ".join(
            f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4"
            for table in ("spans", "runs")
            for column in ("input", "output")
        )
        statements.append(
            f"DO $$ BEGIN {alter}; EXCEPTION WHEN feature_not_supported OR "
            "invalid_parameter_value THEN NULL; END $$"
        )
    return statements


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_initial", _initial),
    Migration("0002_llm_details", _llm_details),
    Migration("0003_query", _query),
    Migration("0004_export_drops", _export_drops),
    Migration("0005_durability", _durability),
    Migration("0006_lineage", _lineage),
    Migration("0007_evaluation", _evaluation),
    Migration("0008_lean_spans", _lean_spans),
)


def pending(applied: list[str]) -> list[Migration]:
    """Migrations not yet applied, in order; raises ``SchemaTooNew`` for unknown ones."""
    known = {m.name for m in MIGRATIONS}
    unknown = sorted(set(applied) - known)
    if unknown:
        raise SchemaTooNew(
            f"the store was migrated by a newer steptrace (unknown migrations: "
            f"{', '.join(unknown)}); upgrade steptrace to write to it"
        )
    done = set(applied)
    return [m for m in MIGRATIONS if m.name not in done]
