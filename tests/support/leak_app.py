"""The processes the leak corpus test (``test_leak_corpus.py``) starts.

``python -m tests.support.leak_app app CONFIG.json`` is an application: it configures steptrace as
applications do (``st.configure(otlp_endpoint=..., otlp_logs=True)``: spans and log
records over OTLP/HTTP), instruments ``requests`` with OpenTelemetry, and on each store
it is given (SQLite, then PostgreSQL) makes two runs of the ``leaky`` workflow, which
puts every placement of the plan (``leak_corpus``) at its position, against the
loopback model and HTTP servers of the test. It speaks in lines on stdout and waits
for one on stdin at each step, so that the test can read the SQLite files while the
writer has them open and again once it closed them: ``READY engine [run ids]``,
``CLOSED engine`` (the next store closed that one's writer), ``EXPORTED``.

``python -m tests.support.leak_app read`` shows each store named on stdin (a spec file a line) the
ways a user sees it: it serves ``steptrace ui`` (the command's own function, in a
thread, on loopback), runs ``steptrace`` commands in the same interpreter (Click's
runner over the ``typer`` app ``python -m steptrace`` runs), asks the UI's JSON API,
writes every output to a file and prints a manifest of them, a line per store.

Every step reads its placements from ``DATA`` rather than from its arguments, so a
position's secrets reach steptrace only through that position.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import sys
import time
import types
from collections.abc import Iterator, Mapping
from typing import Any

import pydantic

import steptrace as st
from tests.support.leak_corpus import (
    Placement,
    env_name,
    foreign_urls,
    identifier,
    joined,
    name_of,
    placement_from_json,
    struct,
    unique_keys,
)

DATA: collections.defaultdict[str, list[Placement]] = collections.defaultdict(list)
CANARY = [""]
SERVERS: dict[str, str] = {}
LITE = [False]
"""Lite runs (the negative control) skip the model SDKs and ``requests``."""

log = logging.getLogger("app.leaky")
_attempts: collections.Counter[str] = collections.Counter()


# --- values of the shapes programs pass around ------------------------------------------


class FrozenMap(Mapping[str, Any]):
    """A read-only mapping that is not a dict (like ``immutabledict``)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


class Settings:
    """A plain object: its attributes are the settings."""

    def __init__(self, **attributes: str) -> None:
        self.__dict__.update(attributes)


class Client:
    """An object whose repr shows its settings, as SDK clients' reprs often do."""

    def __init__(self, **settings: str) -> None:
        self.settings = settings

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"Client({inner})"


class Receipt(pydantic.BaseModel):
    status: str


_models: dict[str, type[pydantic.BaseModel]] = {}
_dataclasses: dict[str, type] = {}


def field_name(p: Placement) -> str:
    return identifier(p.key) if p.key is not None else "note"


def as_model(p: Placement) -> pydantic.BaseModel:
    name = field_name(p)
    if name not in _models:
        fields: dict[str, Any] = {name: (str, ...)}
        _models[name] = pydantic.create_model(f"Config_{name}", **fields)
    return _models[name](**{name: p.value if p.key is not None else p.text})


def as_dataclass(p: Placement) -> Any:
    name = field_name(p)
    if name not in _dataclasses:
        _dataclasses[name] = dataclasses.make_dataclass(f"Record_{name}", [(name, str)])
    return _dataclasses[name](p.value if p.key is not None else p.text)


def flat(p: Placement) -> tuple[str, str]:
    return (name_of(p), p.value if p.key is not None else p.text)


def variable(p: Placement) -> str:
    """The environment variable a placement is kept in."""
    return env_name(name_of(p))


def nested(mapping: type, position: str) -> dict[str, Any]:
    return {slot: mapping(inner) for slot, inner in struct(DATA[position]).items()}


# --- the steps ---------------------------------------------------------------------------


@st.step
def accept_options(*notes: str, **options: Any) -> int:
    return len(notes) + len(options)


@st.step
def load_config(config: dict[str, Any]) -> str:
    return "loaded"


@st.step
def read_settings(settings: Any) -> str:
    return "read"


@st.step
def send_headers(headers: list[tuple[str, str]]) -> int:
    return len(headers)


@st.step
def validate_models(models: list[pydantic.BaseModel]) -> int:
    return len(models)


@st.step
def store_records(records: list[Any]) -> int:
    return len(records)


@st.step
def use_clients(clients: list[Any]) -> int:
    return len(clients)


@st.step
def parse_document(document: str) -> int:
    return len(json.loads(document))


@st.step
def read_environment(environ: list[dict[str, str]]) -> int:
    return sum(len(e) for e in environ)


@st.step
def produce_struct() -> dict[str, Any]:
    return struct(DATA["output.struct"])


@st.step
def produce_text() -> str:
    return joined(DATA["output.text"])


@st.step
def produce_json() -> str:
    return json.dumps(struct(DATA["output.json_string"]))


def _first_attempt(name: str) -> bool:
    _attempts[name] += 1
    return _attempts[name] == 1


@st.step(retries=1, backoff=0.001)
def flaky_message() -> str:
    if _first_attempt("message"):
        raise RuntimeError(joined(DATA["exc.message"]))
    return "recovered"


@st.step(retries=1, backoff=0.001)
def flaky_cause() -> str:
    if _first_attempt("cause"):
        try:
            raise ConnectionError(joined(DATA["exc.cause"]))
        except ConnectionError as exc:
            raise RuntimeError("the upstream call failed") from exc
    return "recovered"


@st.step(retries=1, backoff=0.001)
def flaky_note() -> str:
    if _first_attempt("note"):
        error = ValueError("bad configuration")
        for p in DATA["exc.note"]:
            error.add_note(p.text)
        raise error
    return "recovered"


@st.step(retries=1, backoff=0.001, output=Receipt)
def validated() -> Any:
    if _first_attempt("validation"):
        return [struct(DATA["exc.validation"])]  # not a Receipt: rejected whole
    return {"status": "ok"}


@st.step
def write_logs() -> None:
    import structlog

    log.info(f"canary {CANARY[0]}")
    for p in DATA["log.fstring"]:
        log.info(f"connecting: {p.text}")
    for p in DATA["log.args"]:
        log.warning("retrying with %s", p.text)
    try:
        raise ConnectionError(joined(DATA["log.exc_info"]))
    except ConnectionError:
        log.error("the connection failed", exc_info=True)
    slog = structlog.get_logger("app.structlog")
    for p in DATA["log.structlog"]:
        slog.info("configured", **dict([flat(p)]))


@st.step
def ask_scripted() -> str:
    messages = [
        {"role": "system", "content": "Answer tersely."},
        {"role": "user", "content": f"{CANARY[0]}\n{joined(DATA['llm.scripted.messages'])}"},
    ]
    texts = []
    for group in unique_keys(DATA["llm.scripted.params"]):
        params = dict(flat(p) for p in group)
        texts.append(st.llm.chat("scripted:leaky", messages, **params).text)
    return texts[0]


TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]


@st.step
def ask_openai() -> str:
    import openai

    (key,) = DATA["llm.openai.api_key"]
    # Any: the requests are the corpus's dicts, not the SDK's typed params
    client: Any = st.instrument(openai.OpenAI(base_url=SERVERS["openai"], api_key=key.secret))
    with client:
        user = {"role": "user", "content": f"{CANARY[0]}\n{joined(DATA['llm.openai.messages'])}"}
        reply = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "Answer tersely."}, user],
            tools=TOOLS_OPENAI,
            extra_headers=dict(flat(p) for p in DATA["llm.openai.extra_headers"]),
        )
        calls = reply.choices[0].message.tool_calls or []
        assert calls and json.loads(calls[0].function.arguments)
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[user],
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == joined(DATA["llm.openai.stream"])
    return reply.choices[0].message.content or ""


TOOLS_ANTHROPIC = [
    {"name": "lookup_order", "input_schema": {"type": "object", "properties": {}}},
]


@st.step
def ask_anthropic() -> str:
    import anthropic

    (key,) = DATA["llm.anthropic.api_key"]
    client: Any = st.instrument(
        anthropic.Anthropic(
            api_key=key.secret,
            base_url=SERVERS["anthropic"],
            max_retries=0,
            default_query=dict(flat(p) for p in DATA["llm.anthropic.query"]),
        )
    )
    with client:
        content = f"{CANARY[0]}\n{joined(DATA['llm.anthropic.messages'])}"
        message = client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=256,
            system=joined(DATA["llm.anthropic.system"]),
            messages=[{"role": "user", "content": content}],
            tools=TOOLS_ANTHROPIC,
        )
    assert any(block.type == "tool_use" for block in message.content)
    return "".join(getattr(block, "text", "") for block in message.content)


@st.tool
def call_service(request: dict[str, Any]) -> str:
    return joined(DATA["tool.response"])


@st.tool
def fetch_all() -> int:
    import requests

    urls = foreign_urls(DATA["foreign.http_url"], SERVERS["http"])
    with requests.Session() as session:
        for url in urls:
            session.get(url, timeout=10).raise_for_status()
    return len(urls)


@st.step
def query_db() -> int:
    from opentelemetry import trace

    tracer = trace.get_tracer("app.db")
    with tracer.start_as_current_span("app.canary", attributes={"app.canary": CANARY[0]}):
        pass
    for group in unique_keys(DATA["foreign.attr_key"], most=100):
        with tracer.start_as_current_span("app.settings", attributes=dict(map(flat, group))):
            pass
    text = joined(DATA["foreign.connection_string"])
    attributes = {"db.system": "postgresql", "db.connection_string": text}
    with tracer.start_as_current_span("db.connect", attributes=attributes):
        pass
    headers = tuple(p.text for p in DATA["foreign.header_tuple"])
    with tracer.start_as_current_span(
        "http.send", attributes={"http.request.header.authorization": headers}
    ):
        pass
    return len(DATA["foreign.attr_key"])


def leaky(payload: dict[str, Any], fail: bool) -> dict[str, Any]:
    log.info(f"run-level canary {CANARY[0]}")
    for p in DATA["log.run_level"]:
        log.info(f"run-level: {p.text}")
    notes = [p.text for p in DATA["step.kwargs"] if p.key is None]
    keyed = [p for p in DATA["step.kwargs"] if p.key is not None]
    for i, group in enumerate(unique_keys(keyed)):
        accept_options(*(notes if i == 0 else []), **dict(map(flat, group)))
    load_config({"canary": CANARY[0], "env": "prod", "services": struct(DATA["arg.dict"])})
    read_settings(nested(types.MappingProxyType, "arg.mappingproxy"))
    read_settings(nested(collections.UserDict, "arg.userdict"))
    read_settings(nested(FrozenMap, "arg.custom_mapping"))
    send_headers([flat(p) for p in DATA["arg.header_pairs"]])
    validate_models([as_model(p) for p in DATA["arg.pydantic"]])
    store_records([as_dataclass(p) for p in DATA["arg.dataclass"]])
    use_clients([Settings(**{field_name(p): flat(p)[1]}) for p in DATA["arg.object_attr"]])
    use_clients([Client(**{field_name(p): flat(p)[1]}) for p in DATA["arg.object_repr"]])
    parse_document(json.dumps(struct(DATA["arg.json_string"])))
    environ = unique_keys(DATA["arg.environ"], name=variable)
    read_environment([{variable(p): flat(p)[1] for p in group} for group in environ])
    produce_struct()
    produce_text()
    produce_json()
    flaky_message()
    flaky_cause()
    flaky_note()
    validated()
    write_logs()
    ask_scripted()
    if DATA["llm.openai.messages"] and not LITE[0]:
        ask_openai()
    if DATA["llm.anthropic.messages"] and not LITE[0]:
        ask_anthropic()
    call_service({"canary": CANARY[0], **struct(DATA["tool.request"])})
    if DATA["foreign.http_url"] and not LITE[0]:
        fetch_all()
    query_db()
    if fail:
        raise RuntimeError(joined(DATA["workflow.error"]))
    return {"canary": CANARY[0], **struct(DATA["workflow.output"])}


def run_app(config: dict[str, Any]) -> None:
    """Both runs on each store in turn (see the module's docstring for the lines)."""
    import structlog
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    if not config["lite"]:
        import anthropic  # noqa: F401 - imported before the runs, not in a step
        import openai  # noqa: F401
    SERVERS.update(config["servers"])
    LITE[0] = config["lite"]
    st.configure(
        redact=config["redact"],
        otlp_endpoint=SERVERS["collector"],
        otlp_logs=True,
        export_value_bytes=64 * 1024 * 1024,  # no cap: every value reaches the collector
    )
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    if not LITE[0]:
        RequestsInstrumentor().instrument()
    st.llm.script("leaky", lambda messages, **params: joined(DATA["llm.scripted.response"]))
    plan = {
        run: {pos: [placement_from_json(p) for p in ps] for pos, ps in positions.items()}
        for run, positions in config["plan"]["runs"].items()
    }
    canaries = config["plan"]["canaries"]
    previous = None
    for engine, store in config["stores"]:
        st.configure(store=store)  # closes the previous store's writer
        if previous is not None:
            print(f"CLOSED {previous}", flush=True)
        run_ids = [make_run(plan[run], canaries[run], fail=run == "2") for run in ("1", "2")]
        assert st.flush()
        print(f"READY {engine} " + json.dumps(run_ids), flush=True)
        sys.stdin.readline()
        previous = engine
    from steptrace.otel.otlp import shutdown_sdk

    shutdown_sdk()
    print("EXPORTED", flush=True)
    sys.stdin.readline()


def make_run(positions: dict[str, list[Placement]], canary: str, fail: bool) -> str:
    DATA.clear()
    DATA.update(positions)
    CANARY[0] = canary
    _attempts.clear()
    tags = [canary, *(p.text for p in DATA["run.tags"])]
    workflow = st.workflow(name="leaky", tags=tags)(leaky)
    payload = {"canary": canary, **struct(DATA["workflow.input"])}
    result = st.run(workflow, payload, fail=fail)
    assert result.status == ("failed" if fail else "succeeded"), result.exception
    return result.run_id


def run_readers() -> None:
    """For each spec file named on stdin (a line each): ``read`` it, print its manifest
    as one line. One interpreter for every store: the imports are paid once."""
    import httpx  # noqa: F401 - imported while the first store is still being written
    import pyarrow.parquet  # noqa: F401

    import steptrace.cli
    import steptrace.ui  # noqa: F401

    for line in sys.stdin:
        with open(line.strip()) as f:
            print(json.dumps(read(json.load(f))), flush=True)


def read(spec: dict[str, Any]) -> dict[str, Any]:
    """What a user sees of one store: ``steptrace ui`` (its command, serving in a thread
    on loopback) and the CLI commands; each output to a file, listed in the manifest."""
    import contextlib
    import io
    import socket
    import threading

    import httpx
    import typer.main
    from click.testing import CliRunner

    from steptrace.cli import app
    from steptrace.cli.ui import ui_command

    st.configure(export_value_bytes=64 * 1024 * 1024)  # export-otlp: no cap
    out_dir = spec["out_dir"]
    manifest: dict[str, Any] = {"cli": {}, "ui": {}}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    startup = io.StringIO()
    with contextlib.redirect_stdout(startup):
        server = threading.Thread(
            target=ui_command, kwargs={"store": spec["store"], "port": port, "no_open": True}
        )
        server.daemon = True
        server.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert server.is_alive() and time.monotonic() < deadline, "no UI"
                time.sleep(0.02)
    manifest["ui_startup"] = write(out_dir, "ui-startup.out", startup.getvalue().encode())

    runner = CliRunner()
    command: Any = typer.main.get_command(app)  # what steptrace.cli.main runs, built once
    for i, (name, argv) in enumerate(spec["commands"]):
        started = time.monotonic()
        store = spec["reader_store"] if argv[0] == "sql" else spec["store"]
        result = runner.invoke(command, ["--store", store, *argv], prog_name="steptrace")
        manifest["cli"][name] = {
            "stdout": write(out_dir, f"cli-{i:02d}.out", result.stdout_bytes),
            "exit_code": result.exit_code,
            "stderr": result.stderr_bytes.decode(errors="replace")[-2000:],
            "exception": repr(result.exception) if result.exit_code else None,
            "seconds": round(time.monotonic() - started, 3),
        }

    def get(client: httpx.Client, name: str, path: str, params: dict[str, Any]) -> Any:
        response = client.get(path, params=params)
        n = len(manifest["ui"])
        manifest["ui"][name] = {
            "body": write(out_dir, f"ui-{n:03d}.json", response.content),
            "status": response.status_code,
        }
        return response

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for name, (path, params) in spec["ui"].items():
            get(client, name, path, params)
        for n, run_id in enumerate(spec["run_ids"], 1):
            seen: set[tuple[str, str]] = set()
            for span in client.get(f"/api/v1/runs/{run_id}").json()["spans"]:
                kind_name = (span["kind"], span["name"])
                if kind_name not in seen:
                    seen.add(kind_name)
                    path = f"/api/v1/runs/{run_id}/spans/{span['span_id']}"
                    name = f"runs/{{run{n}}}/spans/{{{span['kind']} {span['name']}}}"
                    get(client, name, path, {})
    return manifest


def write(out_dir: str, name: str, data: bytes) -> str:
    path = f"{out_dir}/{name}"
    with open(path, "wb") as out:
        out.write(data)
    return path


if __name__ == "__main__":
    if sys.argv[1] == "app":
        with open(sys.argv[2]) as f:
            run_app(json.load(f))
    else:
        run_readers()
    print(f"{sys.argv[1]}: {time.process_time():.2f} s of CPU", file=sys.stderr)
