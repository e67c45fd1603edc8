"""Sessions: runs grouped by the conversation or user journey they belong to.

A run joins a session by ``st.run(..., session_id=…)`` or by its workflow's rule
(``@st.workflow(session=…)``: an argument, a dotted path into one, or a function of
them). The id is stored in ``runs.session_id``, kept by a resumed run but not given to
a fork or replay unless asked, exported as ``gen_ai.conversation.id`` on every span of
the run (live and re-sent alike), and found by ``Store.runs(session=…)``, ``steptrace
runs --session`` and ``steptrace sessions`` — whichever process recorded the runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

import steptrace as st
from steptrace.backfill import readable_spans
from steptrace.cli import main
from tests.support.helpers import run_python, steptrace_cli

# --- across processes -------------------------------------------------------------------

TURN = """
import json
import steptrace as st

@st.step
def answer(message: str) -> str:
    return "echo: " + message

@st.workflow(session="user.id")
def chat(user: dict, message: str) -> str:
    return answer(message)

ids = [
    st.run(chat, {{"id": user}}, message).run_id if user else st.run(chat, None, message).run_id
    for user, message in {turns!r}
]
assert st.flush()
print(json.dumps(ids))
"""


def _turns(store: Path, turns: list[tuple[str | None, str]]) -> list[str]:
    """Record ``(user, message)`` turns in a fresh process; their run ids."""
    ids: list[str] = json.loads(run_python(TURN.format(turns=turns), store).stdout)
    return ids


@st.step
def answer(message: str) -> str:
    return "echo: " + message


@st.workflow(session="user.id")
def chat(user: dict[str, str], message: str) -> str:
    """``chat`` of ``TURN``, recorded by this process."""
    return answer(message)


def _cli(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> str:
    """``steptrace ARGS`` in this process: its stdout (the exit code checked)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    assert done.value.code == code, err
    return out if code == 0 else err


def test_a_session_recorded_by_two_processes_is_listed_whole_in_order(
    store_url: str, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _turns(store_path, [("ada", "hello"), ("bob", "hi"), (None, "anonymous")])
    # The second process is this one.
    second = [st.run(chat, {"id": "ada"}, m).run_id for m in ("how are you?", "bye")]
    ada = [first[0], *second]

    with st.Store.open(store_url) as store:
        listed = store.runs(session="ada")
        assert [r.run_id for r in listed] == ada[::-1]  # newest first
        assert {r.session_id for r in listed} == {"ada"}
        assert [r.input["message"] for r in listed] == ["bye", "how are you?", "hello"]
        assert store.count_runs(session="ada") == 3
        assert [r.run_id for r in store.runs(session="ada", last=1, offset=1)] == [second[0]]
        assert store.runs(session="ad") == []  # exact, not a prefix
        assert store.run(first[2]).session_id is None
        sessions = store.sessions()
        assert [(s["session_id"], s["runs"]) for s in sessions] == [("ada", 3), ("bob", 1)]
        assert sessions[0]["statuses"] == {"succeeded": 3}
        assert sessions[0]["workflows"] == ["chat"]
        assert sessions[0]["first_started_at"] == store.run(ada[0]).started_at
        assert sessions[0]["last_started_at"] == store.run(ada[-1]).started_at
        assert sessions[0]["last_ended_at"] == store.run(ada[-1]).ended_at
        assert store.count_sessions() == 2
        assert store.sessions(last=1, offset=1)[0]["session_id"] == "bob"

    listed_json = json.loads(
        _cli(capsys, "--store", store_url, "runs", "--session", "ada", "--json")
    )
    assert [(r["run_id"], r["session_id"]) for r in listed_json] == [(i, "ada") for i in ada[::-1]]
    table = _cli(capsys, "--store", store_url, "runs", "--session", "bob")
    assert first[1][:8] in table and first[0][:8] not in table
    found = json.loads(_cli(capsys, "--store", store_url, "sessions", "--json"))
    assert found == json.loads(json.dumps(sessions))
    exported = _cli(capsys, "--store", store_url, "export", "-t", "runs", "--session", "ada")
    assert [json.loads(line)["run_id"] for line in exported.splitlines()] == ada[::-1]


def test_sessions_command_lists_filters_and_pages(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    @st.workflow(session="user")
    def chat(user: str, message: str) -> str:
        if message == "fail":
            raise ValueError("no")
        return message

    @st.workflow
    def other() -> str:
        return "x"

    for user, message in [("ada", "a"), ("ada", "fail"), ("bob", "b"), ("cy", "c")]:
        st.run(chat, user, message)
    st.run(other, session_id="ada")
    store = str(store_path)

    table = _cli(capsys, "--store", store, "sessions")
    lines = table.splitlines()
    assert lines[0].split() == [
        "session",
        "runs",
        "first",
        "run",
        "last",
        "run",
        "statuses",
        "workflows",
    ]
    assert [line.split()[0] for line in lines[2:]] == ["ada", "cy", "bob"]
    assert "1 succeeded, 1 failed" not in table  # ada has 3 runs: 2 succeeded, 1 failed
    assert "2 succeeded, 1 failed" in lines[2] and "chat, other" in lines[2]

    only_chat = json.loads(_cli(capsys, "--store", store, "sessions", "-w", "chat", "--json"))
    assert [(s["session_id"], s["runs"], s["statuses"]) for s in only_chat] == [
        ("cy", 1, {"succeeded": 1}),
        ("bob", 1, {"succeeded": 1}),
        ("ada", 2, {"succeeded": 1, "failed": 1}),
    ]
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["--store", store, "sessions", "--last", "2"])
    out, err = capsys.readouterr()
    assert done.value.code == 0
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["ada", "cy"]
    assert "showing 1–2 of 3 sessions" in err and "--offset 2" in err
    csv = _cli(capsys, "--store", store, "sessions", "--format", "csv", "--offset", "2")
    assert csv.splitlines()[0].startswith("session_id,runs,first_started_at")
    assert csv.splitlines()[1].startswith("bob,1,")
    assert "no workflow named 'nope'" in _cli(
        capsys, "--store", store, "sessions", "-w", "nope", code=1
    )
    assert "no matching sessions" in _cli(
        capsys, "--store", store, "sessions", "--since", "1s", "--until", "1s"
    )


def test_show_prints_the_run_s_session(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    @st.workflow
    def chat(message: str) -> str:
        return message

    in_session = st.run(chat, "hi", session_id="conv 7").run_id
    alone = st.run(chat, "hi").run_id
    shown = _cli(capsys, "--store", str(store_path), "show", in_session)
    assert "session conv 7" in shown.splitlines()[1]
    lines = _cli(capsys, "--store", str(store_path), "show", alone).splitlines()
    assert not any("── session " in line for line in lines)
    as_json = json.loads(_cli(capsys, "--store", str(store_path), "show", in_session, "--json"))
    assert as_json["session_id"] == "conv 7"


# --- the session rule -------------------------------------------------------------------


@dataclasses.dataclass
class Ticket:
    customer_id: int
    meta: dict[str, Any]


def _session(result: st.RunResult) -> str | None:
    assert result.status == "succeeded", result.exception
    return result.record().session_id


def test_a_workflow_finds_its_session_in_its_arguments(caplog: pytest.LogCaptureFixture) -> None:
    @st.workflow(session="user")
    def by_name(user: str, text: str = "") -> str:
        return text

    @st.workflow(session="ticket.customer_id")
    def by_attribute(ticket: Ticket) -> int:
        return ticket.customer_id

    @st.workflow(session="ticket.meta.thread.0")
    def by_keys_and_index(ticket: Ticket) -> int:
        return 1

    @st.workflow(session=lambda arguments: f"{arguments['team']}:{arguments['n']}")
    def by_function(team: str, n: int = 3) -> int:
        return n

    @st.workflow(session="conversation")
    def by_any_keyword(**options: Any) -> int:
        return len(options)

    conversation = uuid.UUID("12345678-1234-5678-1234-567812345678")
    ticket = Ticket(42, {"thread": ["th-1", "th-2"]})
    with caplog.at_level(logging.WARNING, logger="steptrace"):
        assert _session(st.run(by_name, "ada", text="hi")) == "ada"
        assert _session(st.run(by_attribute, ticket)) == "42"  # an int as its text
        assert _session(st.run(by_keys_and_index, ticket)) == "th-1"
        assert _session(st.run(by_function, "red")) == "red:3"  # defaults included
        assert _session(st.run(by_any_keyword, conversation=conversation)) == str(conversation)
        assert _session(st.run(by_name, None)) is None  # None: no session, nothing to say
        assert _session(st.run(by_name, "ada", session_id="given")) == "given"  # overrides
        assert by_attribute(ticket) == 42  # a plain call is a run too
        last = st.last_run()
        assert last is not None and last.session_id == "42"
    assert caplog.records == []


def test_a_session_rule_that_cannot_work_is_refused_when_decorated() -> None:
    def ticket_flow(ticket: Ticket, tone: str) -> None: ...

    with pytest.raises(
        ValueError,
        match=r"session='tickt\.customer_id' names no argument of it "
        r"\(its arguments: ticket, tone\)",
    ):
        st.workflow(session="tickt.customer_id")(ticket_flow)
    with pytest.raises(ValueError, match="is not a dotted path"):
        st.workflow(session="ticket..customer_id")(ticket_flow)
    with pytest.raises(TypeError, match="not int"):
        st.workflow(session=42)(ticket_flow)  # type: ignore[call-overload]


def test_a_value_that_cannot_be_a_session_id_is_logged_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(arguments: dict[str, Any]) -> str:
        raise KeyError("tenant")

    @st.workflow(session="user")
    def by_name(user: Any) -> str:
        return "done"

    @st.workflow(session="ticket.customer_id")
    def by_path(ticket: Any) -> str:
        return "done"

    @st.workflow(session=broken)
    def by_function(user: str) -> str:
        return "done"

    cases: list[tuple[Callable[..., str], Any, str]] = [
        (by_name, ["a", "list"], "a session id is text (or an int or a UUID), not list"),
        (by_name, True, "not bool"),
        (by_name, "", "a session id cannot be empty"),
        (by_name, "x" * 257, "a session id is at most 256 characters, not 257"),
        (by_path, {"customer": 1}, "ticket has no key 'customer_id'"),
        (by_path, Ticket, "ticket (type) has no 'customer_id'"),
        (by_function, "ada", "KeyError: 'tenant'"),
    ]
    for workflow, value, why in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="steptrace"):
            result = st.run(workflow, value)
        assert (result.status, result.output) == ("succeeded", "done")
        assert result.record().session_id is None
        (message,) = [r.getMessage() for r in caplog.records]
        assert why in message and "recorded without a session" in message, message
    assert _session(st.run(by_name, "x" * 256)) == "x" * 256


def test_a_session_id_given_to_run_is_checked_before_the_run(store_path: Path) -> None:
    @st.workflow
    def chat(message: str) -> str:
        return message

    for bad, error in [
        ("", ValueError),
        ("y" * 257, ValueError),
        (["ada"], TypeError),
        (False, TypeError),
    ]:
        with pytest.raises(error):
            st.run(chat, "hi", session_id=bad)
    with pytest.raises(TypeError, match="tags must be a list of strings"):
        st.run(chat, "hi", tags="vip")
    with pytest.raises(TypeError, match="tags must be a list of strings"):
        st.run(chat, "hi", tags=[1])
    assert not store_path.exists()  # nothing ran, nothing was recorded
    # Text from outside is stored as every engine can hold it, and found by the same text.
    odd = "conv\x00\udcff"
    stored = st.run(chat, "hi", session_id=odd).record()
    assert stored.session_id == "conv\ufffd\ufffd"
    with st.Store.open() as store:
        assert [r.run_id for r in store.runs(session=odd)] == [stored.run_id]


def test_run_options_tags_add_to_the_workflow_s_and_are_not_passed(store_path: Path) -> None:
    @st.workflow(tags=["chat", "beta"])
    def chat(message: str, **extra: Any) -> dict[str, Any]:
        return extra

    async def main_async() -> st.RunResult:
        @st.workflow(tags=["async"])
        async def achat(message: str) -> str:
            return message

        return await st.arun(achat, "hi", session_id=7, tags=["vip"])

    result = st.run(chat, "hi", session_id="s", tags=["vip", "beta"])
    assert result.output == {}  # the run options are not the workflow's arguments
    assert result.record().tags == ["chat", "beta", "vip"]
    async_result = asyncio.run(main_async())
    record = async_result.record()
    assert (record.tags, record.session_id) == (["async", "vip"], "7")
    with st.Store.open() as store:
        assert [r.run_id for r in store.runs(tag="vip", session="s")] == [result.run_id]


# --- resume, fork, replay ------------------------------------------------------------------

_failures = [0]


@st.step
def reply(message: str) -> str:
    if _failures[0]:
        _failures[0] -= 1
        raise RuntimeError("down")
    return f"re: {message}"


@st.workflow(session="user")
def conversation(user: str, message: str = "hello") -> str:
    return reply(message)


def test_resume_keeps_the_session_fork_and_replay_take_one_only_when_given(
    store_url: str, exported: Callable[[], dict[str, ReadableSpan]]
) -> None:
    _failures[0] = 1
    failed = st.run(conversation, "ada", "hello")
    assert failed.status == "failed"
    resumed = st.resume(failed.run_id)
    assert resumed.status == "succeeded" and _session(resumed) == "ada"
    resumed_spans = [s for s in exported().values() if s.name in ("reply", "resume")]
    assert resumed_spans and all(
        (s.attributes or {}).get("gen_ai.conversation.id") == "ada" for s in resumed_spans
    )
    assert _session(st.fork(failed.run_id, "reply")) is None  # a what-if, not a turn
    assert _session(st.fork(failed.run_id, "reply", session_id="ada-what-if")) == "ada-what-if"
    assert _session(st.replay(failed.run_id)) is None
    assert _session(st.replay(failed.run_id, session_id="ada")) == "ada"
    with pytest.raises(ValueError):
        st.fork(failed.run_id, "reply", session_id="")
    with st.Store.open() as store:
        assert store.count_runs(session="ada") == 2


def test_the_run_command_takes_a_session_and_tags(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "tests.test_sessions:conversation", "--input", '{"user": "ada"}']
    steptrace_cli(*args, "--session", "from-the-cli", "--tag", "cli", store=store_path)
    # Refused before anything runs (in this process: nothing is recorded, nothing shut).
    refused = _cli(capsys, "--store", str(store_path), *args, "--session", "", code=1)
    assert "error: --session: a session id cannot be empty" in refused
    with st.Store.open(str(store_path)) as store:
        (run,) = store.runs()
    assert (run.session_id, run.tags, run.input) == (
        "from-the-cli",
        ["cli"],
        {"user": "ada", "message": "hello"},
    )


# --- OpenTelemetry ---------------------------------------------------------------------------


@pytest.mark.parametrize("openinference", [False, True])
def test_every_span_of_a_run_in_a_session_carries_the_conversation_id(
    exported: Callable[[], dict[str, ReadableSpan]], openinference: bool
) -> None:
    st.configure(openinference=openinference)
    st.llm.script("sessions-chat", ["fine, thanks"])

    @st.tool
    def lookup(user: str) -> dict[str, str]:
        return {"user": user, "plan": "pro"}

    @st.step
    def answer(user: str, message: str) -> str:
        lookup(user)
        return st.llm.chat("scripted:sessions-chat", [{"role": "user", "content": message}]).text

    @st.workflow(session="user")
    def chat(user: str, message: str) -> str:
        return answer(user, message)

    in_session = st.run(chat, "ada", "how are you?")
    alone = st.run(chat, None, "hi")
    spans = list(exported().values())
    mine = [s for s in spans if (s.attributes or {}).get("steptrace.run.id") == in_session.run_id]
    assert sorted(s.name.split()[0] for s in mine) == [
        "answer",
        "chat",
        "execute_tool",
        "invoke_workflow",
    ]
    for span in mine:
        attributes = dict(span.attributes or {})
        assert attributes["gen_ai.conversation.id"] == "ada", span.name
        assert attributes.get("session.id") == ("ada" if openinference else None), span.name
    others = [s for s in spans if (s.attributes or {}).get("steptrace.run.id") == alone.run_id]
    assert len(others) == 4
    assert not any("gen_ai.conversation.id" in (s.attributes or {}) for s in others)

    # Re-sent by export-otlp, the spans say the same.
    record = in_session.record()
    resent = {
        format(s.context.span_id, "016x"): s for s in readable_spans(record, Resource.create())
    }
    live = {format(s.context.span_id, "016x"): s for s in mine if s.context is not None}
    assert set(resent) == set(live)
    for span_id, span in resent.items():
        attributes = dict(span.attributes or {})
        assert attributes["gen_ai.conversation.id"] == "ada"
        assert attributes.get("session.id") == (live[span_id].attributes or {}).get("session.id")
