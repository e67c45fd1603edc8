"""No secret of the leak corpus (``leak_corpus.py``) reaches any place steptrace writes
or serves, on either store engine.

A real application process (``leak_app.py``) makes two runs of one workflow on each
engine, SQLite then PostgreSQL. Run 1 puts every corpus entry at every position: step
arguments of every shape, outputs, the workflow's input, output and tags, exceptions,
log records, LLM calls through the real OpenAI and Anthropic SDKs (against loopback
servers) and the scripted model, tools, and spans other OpenTelemetry instrumentation
makes; run 2 is short, has fresh values at a few positions and fails. The application
exports spans and log records over OTLP/HTTP to a real receiver. Then everything that
holds or shows those runs is searched for every placement:

- **store**: the SQLite file, its ``-wal`` and ``-shm`` while the writer has them open
  and after it closed them, the file after a checkpoint, its rows (``iterdump``: a
  value SQLite splits over overflow pages is whole there); a ``pg_dump`` of the
  PostgreSQL database; the spill directory and any other file the application wrote;
- **otlp**: the request bodies the receiver got (spans and log records) and their
  decoded attributes (both engines' runs: the export does not depend on the store);
- **otlp backfill**: what ``steptrace export-otlp`` sends from the store;
- **ui**: every JSON endpoint of a ``steptrace ui`` server over the store (the
  command's own function, serving on loopback), and the line it prints at start;
- **cli**: ``runs``, ``show`` (text and ``--json``), ``stats``, ``diff``, ``compare``,
  ``dist``, ``sql``, ``status``;
- **export**: every ``steptrace export`` format (jsonl, csv, parquet) of every table
  (runs, steps, spans, llm): the files' bytes, and Parquet's decoded cells.

A failure lists, per place, each leaked entry with the positions it leaked from and
the text around one hit. ``STEPTRACE_LEAK_REPORT=path`` also appends every hit to that
file as JSON lines; ``STEPTRACE_LEAK_SEED`` fixes the corpus. The negative control
runs the workflow with ``redact=False`` and checks the scan does find the secrets.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import queue
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import pg_server
from tests.support.anthropic_server import FakeAnthropic, ToolUse
from tests.support.helpers import clean_env, reader_url, recording_http_server
from tests.support.leak_corpus import Hit, Plan, Scanner, describe, joined, make_plan, struct
from tests.support.openai_server import Answer, FakeOpenAI
from tests.support.otlp_collector import Collector, http_collector

ROOT = Path(__file__).resolve().parents[1]
APP = "tests.support.leak_app"
ENGINES = ("sqlite", "postgresql")
FAMILIES = ("store", "otlp backfill", "ui", "cli", "export")
"""What each engine's runs are checked in (OTLP is checked once, for both)."""
EXPORT_TABLES = ("runs", "steps", "spans", "llm")
EXPORT_FORMATS = ("jsonl", "csv", "parquet")
SEED = int(os.environ.get("STEPTRACE_LEAK_SEED") or random.randrange(2**32))


@dataclass
class Place:
    """Bytes steptrace wrote or served, searched as a whole."""

    name: str
    family: str
    blob: bytes
    shows_values: bool = False
    """It must show a run's canary (a value that is no secret): else a clean scan of it
    would prove nothing."""


@dataclass
class Sinks:
    """The places one engine's runs reached (or, for ``otlp``, both engines' runs)."""

    engine: str
    run_ids: list[str] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)

    def add(self, name: str, family: str, blob: bytes, shows_values: bool = False) -> None:
        self.places.append(Place(name, family, blob, shows_values))


@dataclass
class World:
    engines: dict[str, Sinks]
    otlp: Sinks
    skipped: dict[str, str]
    seconds: dict[str, float]


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan(SEED)


@pytest.fixture(scope="module")
def scanner_later(plan: Plan) -> Iterator[concurrent.futures.Future[Scanner]]:
    """The scanner, built in a thread while the application runs (its automaton takes a
    second or so to build)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool.submit(Scanner, plan.placements())


@pytest.fixture(scope="module")
def scanner(scanner_later: concurrent.futures.Future[Scanner]) -> Scanner:
    return scanner_later.result()


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest,
    plan: Plan,
    scanner_later: concurrent.futures.Future[Scanner],
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    """Both engines' runs, made by one application process, and every place that holds
    or shows them."""
    root = tmp_path_factory.mktemp("leaks")
    stores = [("sqlite", str(root / "app" / "steptrace.db"))]
    skipped = {}
    try:
        url: str = request.getfixturevalue("new_postgres_database")()
    except pytest.skip.Exception as exc:
        skipped["postgresql"] = str(exc)
    else:
        # trust authentication ignores the password; the store URL still carries it
        (password,) = plan.runs[1]["config.store_url"]
        stores.append(("postgresql", url.replace("postgres@", f"postgres:{password.secret}@")))
    started = time.monotonic()
    world = make_world(plan, root, stores, skipped)
    world.seconds["total"] = round(time.monotonic() - started, 2)
    print(f"\nleak corpus runs: {world.seconds} (seed {SEED})")
    return world


# --- the tests --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_no_secret_reaches(
    world: World, scanner: Scanner, plan: Plan, engine: str, family: str
) -> None:
    if engine in world.skipped:
        pytest.skip(world.skipped[engine])
    check(world.engines[engine], family, scanner, plan)


def test_no_secret_reaches_the_otlp_receiver(world: World, scanner: Scanner, plan: Plan) -> None:
    check(world.otlp, "otlp", scanner, plan)


def check(sinks: Sinks, family: str, scanner: Scanner, plan: Plan) -> None:
    places = [p for p in sinks.places if p.family == family]
    assert places, f"nothing was collected for {family}"
    canaries = [c.encode() for c in plan.canaries.values()]
    blind = [p.name for p in places if p.shows_values and not any(c in p.blob for c in canaries)]
    assert not blind, f"these places show no values, so a clean scan proves nothing: {blind}"
    hits = [hit for p in places for hit in scanner.scan(p.name, p.blob)]
    report(sinks.engine, family, hits)
    if hits:
        entries = len({h.placement.entry for h in hits})
        pytest.fail(
            f"{entries} corpus entries leaked ({sinks.engine}, seed {SEED}):\n{describe(hits)}",
            pytrace=False,
        )


def test_the_scan_finds_secrets_when_redaction_is_off(
    plan: Plan, scanner: Scanner, tmp_path: Path
) -> None:
    """The negative control: the same workflow (without the model SDKs and ``requests``)
    with ``redact=False`` leaves every entry whole in the SQLite file and in the OTLP
    bodies, and the scan says so: the absence checks above can fail."""
    store = tmp_path / "app" / "steptrace.db"
    with http_collector() as collector:
        servers = {"collector": collector.url, "openai": "", "anthropic": "", "http": ""}
        app = App(plan, tmp_path, [("sqlite", str(store))], servers, redact=False, lite=True)
        app.ready("sqlite")
        app.say()
        app.expect("EXPORTED")
        app.finish()
    stored = b"".join(f.read_bytes() for f in sorted(store.parent.glob("steptrace.db*")))
    with contextlib.closing(sqlite3.connect(store)) as conn:
        rows = "\n".join(conn.iterdump()).encode()
    places = {
        "sqlite file": stored,  # a long value may be split over overflow pages here
        "sqlite rows": rows,
        "otlp spans": b"".join(collector.bodies("/v1/traces")),
        "otlp logs": b"".join(collector.bodies("/v1/logs")),
    }
    expected = {
        "sqlite rows": ("workflow.input", "log.fstring", "llm.scripted.messages", "exc.message"),
        "otlp spans": ("workflow.input", "output.text", "llm.scripted.messages"),
        "otlp logs": ("log.fstring",),
    }
    # A value longer than a page is split over overflow pages in the file, so a few
    # secrets may show there only as fragments, or not at all: the rows have them whole.
    in_file = {h.placement.id for h in scanner.scan("sqlite file", places["sqlite file"])}
    inputs = [p.id for run in (1, 2) for p in plan.runs[run]["workflow.input"]]
    assert sum(i in in_file for i in inputs) >= 0.9 * len(inputs)
    for place, positions in expected.items():
        hits = {h.placement.id: h for h in scanner.scan(place, places[place])}
        for position in positions:
            for run in (1, 2):
                wanted = plan.runs[run][position]
                missing = [p.entry for p in wanted if p.id not in hits]
                assert not missing, f"{place} lacks {position} (run {run}): {missing}"
                partial = [p.entry for p in wanted if hits[p.id].kind != "whole"]
                assert not partial, f"{place}: only fragments of {position}: {partial}"


# --- the children -----------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    env = clean_env()
    # the child runs ``python -m tests.support.leak_app`` from its own directory
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Child:
    """A ``leak_app.py`` child process spoken to in lines: on stdin, read on stdout (by a
    thread, so that every wait has a timeout); its stderr goes to a file."""

    def __init__(self, mode: str, root: Path, cwd: Path, env: dict[str, str], *args: str):
        self.name = mode
        self.stderr_path = root / f"{mode}.stderr"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", APP, mode, *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        with stdout:
            for line in stdout:
                self.lines.put(line.rstrip("\n"))
        self.lines.put("(exited)")

    def expect(self, prefix: str = "", timeout_s: float = 120) -> str:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            line = f"(nothing in {timeout_s} s)"
        if not line.startswith(prefix) or line == "(exited)":
            self.kill()
            stderr = self.stderr_path.read_text()[-5000:]
            raise AssertionError(f"{self.name} said {line!r}, not {prefix!r}:\n{stderr}")
        return line[len(prefix) :].strip()

    def say(self, line: str = "") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=60)
        assert code == 0, self.stderr_path.read_text()[-5000:]

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()


class App(Child):
    """``leak_app.py app``: ``READY engine [run ids]`` after an engine's runs (then it
    waits for a line), ``CLOSED engine`` once the next store closed that one's writer,
    ``EXPORTED`` once spans and log records are sent (then it waits for a line and
    exits)."""

    def __init__(
        self,
        plan: Plan,
        root: Path,
        stores: list[tuple[str, str]],
        servers: dict[str, str],
        *,
        redact: bool = True,
        lite: bool = False,
    ) -> None:
        config: dict[str, Any] = {"plan": plan.to_json(), "stores": stores}
        config.update(servers=servers, redact=redact, lite=lite)
        (root / "app.json").write_text(json.dumps(config))
        (root / "app").mkdir(exist_ok=True)
        env = child_env(
            STEPTRACE_SPILL_DIR=str(root / "spill"),
            OTEL_SERVICE_NAME="leaky",
            OTEL_BSP_SCHEDULE_DELAY="50",
            OTEL_BLRP_SCHEDULE_DELAY="50",
        )
        super().__init__("app", root, root / "app", env, str(root / "app.json"))

    def ready(self, engine: str) -> list[str]:
        run_ids: list[str] = json.loads(self.expect(f"READY {engine}"))
        return run_ids

    def finish(self) -> None:
        self.say()
        super().finish()


def queue_answers(plan: Plan, openai: FakeOpenAI, anthropic: FakeAnthropic, times: int) -> None:
    """The loopback model servers' answers to run 1 on each engine, in the order the
    app asks."""
    positions = plan.runs[1]
    arguments = json.dumps(struct(positions["llm.openai.tool_args"]))
    tool_input = struct(positions["llm.anthropic.tool_input"])
    for _ in range(times):
        openai.answer(
            Answer(
                text=joined(positions["llm.openai.response"]),
                tool_calls=[("call_1", "lookup_order", arguments)],
            ),
            Answer(text=joined(positions["llm.openai.stream"])),
        )
        anthropic.reply(
            joined(positions["llm.anthropic.response"]),
            tool_uses=[ToolUse("toolu_1", "lookup_order", tool_input)],
        )


def make_world(
    plan: Plan, root: Path, stores: list[tuple[str, str]], skipped: dict[str, str]
) -> World:
    clock = [time.monotonic()]
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.monotonic()
        seconds[name] = round(now - clock[0], 2)
        clock[0] = now

    world = World({}, Sinks("otlp"), skipped, seconds)
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(http_collector())
        openai = stack.enter_context(FakeOpenAI())
        anthropic = stack.enter_context(FakeAnthropic())
        http_url, _ = stack.enter_context(recording_http_server())
        queue_answers(plan, openai, anthropic, times=len(stores))
        servers = {
            "collector": live.url,
            "openai": openai.url,
            "anthropic": anthropic.url,
            "http": http_url,
        }
        app = App(plan, root, stores, servers)
        stack.callback(app.kill)
        reader = Reader(root)
        stack.callback(reader.kill)
        for i, (engine, store) in enumerate(stores):
            sinks = world.engines[engine] = Sinks(engine, app.ready(engine))
            lap(f"app: {engine} runs")
            sqlite_file = Path(store) if engine == "sqlite" else None
            if sqlite_file is not None:
                read_sqlite_files(sinks, sqlite_file, "writer open")
            app.say()
            if i == len(stores) - 1:
                app.expect("EXPORTED")
                app.finish()
            else:
                app.expect(f"CLOSED {engine}")
            if sqlite_file is not None:
                read_sqlite_files(sinks, sqlite_file, "writer closed")
                read_sqlite_after_checkpoint(sinks, sqlite_file)
            else:
                sinks.add("store: pg_dump", "store", pg_dump(store), shows_values=True)
            backfill = stack.enter_context(http_collector())
            reader.submit(sinks, plan, store, root / f"read-{engine}", backfill)
            lap(f"{engine} store")
        assert len(openai.requests) == 2 * len(stores), openai.requests
        assert len(anthropic.requests) == len(stores), anthropic.requests
        for sinks in world.engines.values():
            read_other_files(sinks, root)
        read_otlp(world.otlp, live)
        lap("otlp")
        reader.finish()
        lap("ui and cli")
    return world


# --- the places -------------------------------------------------------------------------


def read_sqlite_files(sinks: Sinks, store: Path, when: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        path = store.parent / (store.name + suffix)
        if path.exists():
            sinks.add(f"store: sqlite file{suffix} ({when})", "store", path.read_bytes())


def read_sqlite_after_checkpoint(sinks: Sinks, store: Path) -> None:
    with contextlib.closing(sqlite3.connect(store)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = "\n".join(conn.iterdump())
    sinks.add("store: sqlite file (checkpointed)", "store", store.read_bytes(), True)
    sinks.add("store: sqlite rows (iterdump)", "store", rows.encode(), True)


def pg_dump(url: str) -> bytes:
    bindir = pg_server.find_bin()
    assert bindir is not None
    dump = subprocess.run(
        [os.path.join(bindir, "pg_dump"), "--no-owner", "--dbname", url],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return dump.stdout


def read_other_files(sinks: Sinks, root: Path) -> None:
    """The spill directory, and any file the application wrote besides the store."""
    for path in sorted((root / "app").rglob("*")) + sorted((root / "spill").rglob("*")):
        if path.is_file() and not path.name.startswith("steptrace.db"):
            name = f"store: file {path.relative_to(root)}"
            sinks.add(name, "store", path.read_bytes())


def read_otlp(sinks: Sinks, collector: Collector) -> None:
    traces = collector.bodies("/v1/traces")
    logs = collector.bodies("/v1/logs")
    assert traces and logs
    sinks.add("otlp: /v1/traces request bodies", "otlp", b"".join(traces), True)
    sinks.add("otlp: /v1/logs request bodies", "otlp", b"".join(logs), True)
    decoded = json.dumps([collector.spans(), collector.logs()], ensure_ascii=False, default=str)
    sinks.add("otlp: decoded spans and log records", "otlp", decoded.encode(), True)


# --- the UI and the CLI ---------------------------------------------------------------


@dataclass
class Reading:
    sinks: Sinks
    commands: list[tuple[str, list[str]]]
    out_dir: Path
    backfill: Collector


class Reader(Child):
    """``leak_app.py read``: one child (its imports paid once) that shows each store it
    is given a spec for: a ``steptrace ui`` server's JSON API and the CLI commands.
    Started with the application, it reads the SQLite store while the application
    writes the PostgreSQL one."""

    def __init__(self, root: Path) -> None:
        env = child_env(COLUMNS="4000", LINES="10000")  # rich cuts lines at the width
        super().__init__("read", root, root, env)
        self.readings: list[Reading] = []

    def submit(
        self, sinks: Sinks, plan: Plan, store: str, out_dir: Path, backfill: Collector
    ) -> None:
        out_dir.mkdir()
        commands = cli_commands(sinks.run_ids, plan, out_dir, backfill.url)
        spec = {
            "store": store,
            "reader_store": reader_url(store),  # `steptrace sql` refuses a superuser
            "out_dir": str(out_dir),
            "commands": commands,
            "run_ids": sinks.run_ids,
            "ui": ui_requests(sinks.run_ids, plan),
        }
        (out_dir / "spec.json").write_text(json.dumps(spec))
        self.say(str(out_dir / "spec.json"))
        self.readings.append(Reading(sinks, commands, out_dir, backfill))

    def finish(self) -> None:
        for reading in self.readings:
            collect_reading(reading, json.loads(self.expect()))
        super().finish()


def collect_reading(reading: Reading, manifest: dict[str, Any]) -> None:
    sinks = reading.sinks
    startup = Path(manifest["ui_startup"]).read_bytes()
    sinks.add("ui: steptrace ui's startup line", "ui", startup)
    for name, result in manifest["ui"].items():
        assert result["status"] == 200, (name, result)
        body = Path(result["body"]).read_bytes()
        sinks.add(f"ui: /api/v1/{name}", "ui", body, name in UI_SHOWING_VALUES)
    read_cli(sinks, manifest["cli"], reading.commands, reading.out_dir)
    traces = reading.backfill.bodies("/v1/traces")
    assert traces, "export-otlp sent nothing"
    blob = b"".join(traces)
    sinks.add("otlp backfill: export-otlp request bodies", "otlp backfill", blob, True)


def dist_fields(plan: Plan) -> tuple[str, str]:
    """Two fields of ``produce_struct``'s output: a keyed value, an embedded text."""
    placements = plan.runs[1]["output.struct"]
    keyed = next(p for p in placements if p.key is not None and re.fullmatch(r"\w+", p.key))
    embedded = next(p for p in placements if p.key is None)
    return f"{keyed.slot}.{keyed.key}", f"{embedded.slot}.note"


UI_SHOWING_VALUES = ("diff", "runs/{run1}?values=true", "runs/{run2}?values=true")


def ui_requests(run_ids: list[str], plan: Plan) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every JSON endpoint of the UI for both runs (the reader adds one span endpoint per
    kind and name of span)."""
    first, second = run_ids
    keyed, embedded = dist_fields(plan)
    produce = {"step": "produce_struct"}
    requests: dict[str, tuple[str, dict[str, Any]]] = {
        "config": ("/api/v1/config", {}),
        "workflows": ("/api/v1/workflows", {}),
        "runs": ("/api/v1/runs", {"limit": 500}),
        "diff": ("/api/v1/diff", {"a": first, "b": second}),
        "runs/{run2}/compare": (f"/api/v1/runs/{second}/compare", {"baseline": 5}),
        "runs/{run1}/compare": (f"/api/v1/runs/{first}/compare", {"baseline": 5}),
        "stats": ("/api/v1/stats", {}),
        "distribution (keyed)": ("/api/v1/distribution", {**produce, "field": keyed}),
        "distribution (text)": ("/api/v1/distribution", {**produce, "field": embedded}),
        "histogram": ("/api/v1/histogram", produce),
    }
    for n, run_id in enumerate(run_ids, 1):
        requests[f"runs/{{run{n}}}"] = (f"/api/v1/runs/{run_id}", {})
        requests[f"runs/{{run{n}}}?values=true"] = (f"/api/v1/runs/{run_id}", {"values": "true"})
    return requests


def cli_commands(
    run_ids: list[str], plan: Plan, out_dir: Path, backfill_url: str
) -> list[tuple[str, list[str]]]:
    first, second = run_ids
    keyed, embedded = dist_fields(plan)
    commands = [
        ("runs", ["runs"]),
        ("runs --json", ["runs", "--json"]),
        ("show {run1}", ["show", first]),
        ("show {run1} --json", ["show", first, "--json"]),
        ("show {run2}", ["show", second]),
        ("show {run2} --json", ["show", second, "--json"]),
        ("stats", ["stats"]),
        ("stats --json", ["stats", "--json"]),
        ("diff", ["diff", first, second]),
        ("diff --json", ["diff", first, second, "--json"]),
        ("compare {run2}", ["compare", second, "--baseline", "5"]),
        ("compare {run2} --json", ["compare", second, "--baseline", "5", "--json"]),
        ("dist (keyed field)", ["dist", "produce_struct", keyed]),
        ("dist (keyed field) --json", ["dist", "produce_struct", keyed, "--json"]),
        ("dist (text field)", ["dist", "produce_struct", embedded]),
        ("status", ["status"]),
        ("status --json", ["status", "--json"]),
        ("export-otlp", ["export-otlp", "--endpoint", backfill_url, "--last", "10"]),
    ]
    for table in ("runs", "spans", "llm_calls", "logs"):
        commands.append((f"sql {table} --json", ["sql", f"SELECT * FROM {table}", "--json"]))
    for fmt in EXPORT_FORMATS:
        for table in EXPORT_TABLES:
            out = str(out_dir / f"export-{table}.{fmt}")
            commands.append(
                (f"export {fmt} {table}", ["export", "-f", fmt, "-t", table, "-o", out])
            )
    return commands


SHOWS_VALUES = ("show", "runs --json", "diff", "sql runs", "sql spans", "sql logs")


def read_cli(
    sinks: Sinks,
    results: dict[str, Any],
    commands: list[tuple[str, list[str]]],
    out_dir: Path,
) -> None:
    for name, _ in commands:
        result = results[name]
        assert result["exit_code"] == 0, (name, result)
        if name == "export-otlp":
            continue
        if name.startswith("export "):
            _, fmt, table = name.split()
            path = out_dir / f"export-{table}.{fmt}"
            compressed = fmt == "parquet"  # its cells are checked decoded as well
            sinks.add(f"export: {fmt} {table}", "export", path.read_bytes(), not compressed)
            if compressed:
                sinks.add(f"export: {fmt} {table} (cells)", "export", parquet_cells(path), True)
            continue
        blob = Path(result["stdout"]).read_bytes()
        sinks.add(f"cli: steptrace {name}", "cli", blob, name.startswith(SHOWS_VALUES))


def parquet_cells(path: Path) -> bytes:
    import pyarrow.parquet

    table = pyarrow.parquet.read_table(path)
    return json.dumps(table.to_pylist(), ensure_ascii=False, default=str).encode()


# --- the report -------------------------------------------------------------------------


def report(engine: str, family: str, hits: list[Hit]) -> None:
    path = os.environ.get("STEPTRACE_LEAK_REPORT")
    if not path:
        return
    with open(path, "a") as out:
        for hit in hits:
            p = hit.placement
            row = {
                "engine": engine,
                "family": family,
                "place": hit.place,
                "entry": p.entry,
                "cls": p.cls,
                "mode": p.mode,
                "position": p.position,
                "run": p.run,
                "kind": hit.kind,
                "context": hit.context,
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
