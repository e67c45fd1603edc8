"""Structured values (issue 2, point 3): inputs and outputs are stored as JSON values;
awkward values become marked placeholders, are counted, and never break the workflow."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import threading
import uuid
from typing import Any

import orjson
import pydantic
import pytest

import steptrace as st
from steptrace.record import counters

pytestmark = pytest.mark.usefixtures("runtime_store_url")  # in memory and on PostgreSQL

MARKER = "__steptrace__"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1


class Address(pydantic.BaseModel):
    city: str
    zip_code: str


class Customer(pydantic.BaseModel):
    name: str
    address: Address
    since: dt.date


@dataclasses.dataclass
class Order:
    order_id: str
    amount: decimal.Decimal
    placed: dt.datetime
    colour: Color


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class Opaque:
    __slots__ = ()

    def __repr__(self) -> str:
        return "Opaque<" + "x" * 500 + ">"


Point = collections.namedtuple("Point", "x y")


def _echo_run(value: Any) -> tuple[Any, Any, Any]:
    """Pass ``value`` into a step that returns it; give back (the result, the stored
    ``value`` argument, the stored output) of the step. When the whole input was replaced
    by a marker, the marker is given back instead of the argument."""

    @st.step
    def echo(value: Any) -> Any:
        return value

    @st.workflow
    def wf(value: Any) -> Any:
        return echo(value)

    result = wf(value)
    run = st.last_run()
    assert run is not None
    (span,) = run.steps("echo")
    assert run.input == span.input  # the workflow's input went through the same pipeline
    assert run.output == span.output
    stored_input = span.input if MARKER in span.input else span.input["value"]
    return result, stored_input, span.output


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        pytest.param(
            Customer(
                name="Ada",
                address=Address(city="Paris", zip_code="75001"),
                since=dt.date(2020, 1, 2),
            ),
            {
                "name": "Ada",
                "address": {"city": "Paris", "zip_code": "75001"},
                "since": "2020-01-02",
            },
            id="pydantic",
        ),
        pytest.param(
            Order(
                "A-1",
                decimal.Decimal("9.90"),
                dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
                Color.BLUE,
            ),
            {
                "order_id": "A-1",
                "amount": "9.90",
                "placed": "2024-05-06T07:08:09Z",
                "colour": "blue",
            },
            id="dataclass",
        ),
        pytest.param(Color.RED, "red", id="enum"),
        pytest.param(Level.LOW, 1, id="int-enum"),
        pytest.param(
            dt.datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC),
            "2024-01-02T03:04:05.006000Z",
            id="datetime",
        ),
        pytest.param(dt.date(2024, 2, 29), "2024-02-29", id="date"),
        pytest.param(dt.timedelta(seconds=90), 90.0, id="timedelta"),
        pytest.param(
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "12345678-1234-5678-1234-567812345678",
            id="uuid",
        ),
        pytest.param(b"\x00\x01binary", {MARKER: "bytes", "size": 8}, id="bytes"),
        pytest.param(bytearray(3), {MARKER: "bytes", "size": 3}, id="bytearray"),
        pytest.param({3, 1, 2}, [1, 2, 3], id="set"),
        pytest.param(frozenset({"b", "a"}), ["a", "b"], id="frozenset"),
        pytest.param((1, "two", None), [1, "two", None], id="tuple"),
        pytest.param(Point(1, 2), [1, 2], id="namedtuple"),
        pytest.param({1: "int key", "s": 1.5}, {"1": "int key", "s": 1.5}, id="non-str-keys"),
        pytest.param(2**80, str(2**80), id="huge-int"),
        pytest.param(None, None, id="none"),
        pytest.param("plain", "plain", id="str"),
    ],
)
def test_values_are_stored_as_json_values(value: Any, stored: Any) -> None:
    result, stored_input, stored_output = _echo_run(value)
    assert result is value
    assert stored_input == stored
    assert stored_output == stored


def test_numpy_scalars_and_arrays() -> None:
    np = pytest.importorskip("numpy")
    result, stored_input, stored_output = _echo_run(
        {"f": np.float32(1.5), "i": np.int64(7), "b": np.bool_(True), "a": np.arange(3)}
    )
    assert stored_input == {"f": 1.5, "i": 7, "b": True, "a": [0, 1, 2]}
    assert stored_output == stored_input
    assert result["i"] == 7


def test_outputs_are_json_values_not_json_strings(db: Any) -> None:
    @st.step
    def make() -> dict[str, Any]:
        return {"a": [1, 2], "b": {"c": None}}

    @st.workflow
    def wf() -> dict[str, Any]:
        return make()

    wf()
    st.flush()
    (raw,) = db("SELECT output FROM spans WHERE name = 'make'")
    assert orjson.loads(raw[0]) == {"a": [1, 2], "b": {"c": None}}


def test_unserialisable_value_becomes_a_counted_placeholder() -> None:
    before = counters.snapshot()["unserializable"]
    lock = threading.Lock()
    result, stored_input, stored_output = _echo_run({"lock": lock, "ok": 1})
    assert result["lock"] is lock
    placeholder = stored_input["lock"]
    assert placeholder[MARKER] == "unserializable"
    assert placeholder["type"] == "_thread.lock"
    assert "lock object" in placeholder["repr"]
    assert placeholder["size"] == len(repr(lock))
    assert stored_input["ok"] == 1
    assert stored_output == stored_input
    assert counters.snapshot()["unserializable"] > before


def test_placeholder_repr_is_a_prefix_and_size_is_the_full_repr() -> None:
    _, stored_input, _ = _echo_run(Opaque())
    assert stored_input[MARKER] == "unserializable"
    assert stored_input["type"].endswith("Opaque")
    full = repr(Opaque())
    assert full.startswith(stored_input["repr"])
    assert len(stored_input["repr"]) < len(full)
    assert stored_input["size"] == len(full)


def test_broken_repr_does_not_break_the_workflow() -> None:
    before = counters.snapshot()["unserializable"]
    obj = BrokenRepr()
    result, stored_input, stored_output = _echo_run(obj)
    assert result is obj
    assert stored_input[MARKER] == "unserializable"
    assert stored_input["type"].endswith("BrokenRepr")
    assert "repr failed" in stored_input["repr"]
    assert stored_output == stored_input
    assert counters.snapshot()["unserializable"] >= before + 2


def test_cyclic_structures_are_marked_and_the_rest_kept() -> None:
    cyclic: dict[str, Any] = {"name": "loop", "items": [1, 2]}
    cyclic["self"] = cyclic
    cyclic["items"].append(cyclic["items"])
    result, stored_input, _ = _echo_run(cyclic)
    assert result is cyclic
    assert stored_input["name"] == "loop"
    assert stored_input["self"][MARKER] == "cycle"
    assert stored_input["self"]["type"] == "builtins.dict"
    assert stored_input["items"][:2] == [1, 2]
    assert stored_input["items"][2][MARKER] == "cycle"


def test_pydantic_model_holding_an_unserialisable_field() -> None:
    class Holder(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
        name: str
        lock: Any

    _, stored_input, _ = _echo_run(Holder(name="h", lock=threading.Lock()))
    assert stored_input["name"] == "h"
    assert stored_input["lock"][MARKER] == "unserializable"


def test_unserialisable_return_value_of_workflow_does_not_break_it() -> None:
    lock = threading.Lock()

    @st.workflow
    def wf() -> Any:
        return lock

    assert wf() is lock
    run = st.last_run()
    assert run is not None
    assert run.status == "succeeded"
    assert run.output[MARKER] == "unserializable"


def test_huge_values_are_truncated_with_a_marker() -> None:
    st.configure(max_value_bytes=1024)
    before = counters.snapshot()["truncated"]
    big = {"text": "y" * 5000}
    result, stored_input, stored_output = _echo_run(big)
    assert result is big
    for stored in (stored_input, stored_output):
        assert stored[MARKER] == "truncated"
        assert stored["size"] > 5000
        assert '{"text":"yyyy' in stored["preview"]
        assert len(orjson.dumps(stored)) <= 1024
    assert counters.snapshot()["truncated"] > before


def test_default_size_cap_is_one_mebibyte() -> None:
    assert st.Config().max_value_bytes == 1024 * 1024
    _, under, _ = _echo_run("z" * 500_000)
    assert under == "z" * 500_000
    _, over, _ = _echo_run("z" * (1024 * 1024 + 10))
    assert over[MARKER] == "truncated"


def test_config_rejects_a_tiny_size_cap() -> None:
    with pytest.raises(st.ConfigError, match="max_value_bytes"):
        st.configure(max_value_bytes=10)


def test_truncated_marker_fits_the_size_cap_even_for_escaped_text() -> None:
    st.configure(max_value_bytes=1024)
    _, stored_input, _ = _echo_run('"' * 5000)
    assert stored_input[MARKER] == "truncated"
    assert len(orjson.dumps(stored_input)) <= 1024


def test_health_counts_the_values_that_could_not_be_stored_as_they_were() -> None:
    before = st.health()

    class Opaque:
        __slots__ = ()

    @st.step
    def echo(value: object) -> object:
        return value

    @st.workflow
    def wf() -> object:
        return echo({"api_key": "x" * 12, "thing": Opaque()})

    wf()
    st.flush()
    after = st.health()
    for name in ("unserializable", "redacted"):
        assert after[name] > before[name], name
