"""Runs with values of every shape, for the field-index tests (``test_query_index.py``):
``--where`` with and without ``steptrace index``, and ``distribution``'s paths.

``record(url)`` runs ``N_RUNS`` runs of the ``picking`` workflow through the public
API. ``PLANS[i]`` says what run ``i`` does, so a test computes its expected answers
from the plans (``outputs``), never from the store:

- the step ``pick(user, value)`` returns ``value``: mostly an object with ``kind`` (a
  text; ``rare`` in a few runs, sometimes absent), ``n`` (an integer, a float, the
  text ``"42"``, 42 or 42.0, true, null, or absent), ``meta.tag`` (sometimes absent)
  and ``list``; now and then a bare text, a list or null instead of an object;
- a tenth of the runs fail ``pick``'s first attempt (its output validation refuses a
  value with ``bad``, which holds ``kind: rare`` and ``n: 42``): a value only in an
  attempt that is not the final one;
- some runs call ``pick`` twice (``pick#0``, ``pick#1``), some from inside the step
  ``outer`` (step key ``outer#0/pick#0``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

import steptrace as st
from tests.support.helpers import recording_into

N_RUNS = 120
MISSING = object()
"""A path with no value."""


def _refuse_bad(value: Any) -> Any:
    if isinstance(value, dict) and value.get("bad"):
        raise ValueError("a bad pick")
    return value


@dataclass(frozen=True)
class Call:
    key: str
    """The occurrence's step key."""
    user: str
    value: Any
    retried: bool
    """Its first attempt fails validation with a ``bad`` value."""


@dataclass(frozen=True)
class Plan:
    i: int
    calls: list[Call]


BAD = {"bad": True, "kind": "rare", "n": 42, "meta": {"tag": "rare"}, "list": [42]}


def _value(rng: random.Random) -> Any:
    shape = rng.random()
    if shape < 0.05:
        return "plain text"
    if shape < 0.09:
        return [rng.randrange(3), "x"]
    if shape < 0.12:
        return None
    value: dict[str, Any] = {}
    kind = rng.choices(["apple", "berry", "cherry", "rare", None], [45, 30, 15, 3, 7])[0]
    if kind is not None:
        value["kind"] = kind
    n = rng.choice([0, 1, 3, 7, 9, 2.5, 3.5, 7.25, "42", 42, 42.0, True, None, MISSING])
    if n is not MISSING:
        value["n"] = n
    if rng.random() < 0.8:
        value["meta"] = {"tag": rng.choice(["t1", "t2", "t3"])}
    value["list"] = [rng.randrange(4), rng.randrange(4)]
    return value


def _plan(i: int, rng: random.Random) -> Plan:
    user = f"u{i % 7}"
    calls = [Call("pick#0", user, _value(rng), rng.random() < 0.1)]
    if rng.random() < 0.15:
        calls.append(Call("pick#1", user, _value(rng), False))
    if rng.random() < 0.06:
        calls = [Call("outer#0/pick#0", user, calls[0].value, calls[0].retried)]
    return Plan(i, calls)


_rng = random.Random(16)
PLANS = [_plan(i, _rng) for i in range(N_RUNS)]
_attempts: dict[tuple[int, str], int] = {}


@st.step(retries=1, backoff=0, output=Annotated[Any, AfterValidator(_refuse_bad)])
def pick(user: str, value: Any, i: int, key: str) -> Any:
    _attempts[(i, key)] = _attempts.get((i, key), 0) + 1
    call = next(c for c in PLANS[i].calls if c.key == key)
    if call.retried and _attempts[(i, key)] == 1:
        return BAD
    # The output's validation reads a text as JSON (and keeps what it reads).
    return json.dumps(value) if isinstance(value, str) else value


@st.step
def outer(i: int) -> None:
    call = PLANS[i].calls[0]
    pick(call.user, call.value, i, call.key)


@st.workflow
def picking(i: int) -> None:
    if PLANS[i].calls[0].key.startswith("outer"):
        outer(i)
        return
    for call in PLANS[i].calls:
        pick(call.user, call.value, i, call.key)


@dataclass(frozen=True)
class Picks:
    url: str
    run_ids: list[str]
    """Run ids by plan index (oldest first)."""


def record(url: str | Path) -> Picks:
    """Record the runs into a fresh store at ``url``."""
    url = str(url)
    _attempts.clear()
    with recording_into(url):
        run_ids = [st.run(picking, i).run_id for i in range(N_RUNS)]
    return Picks(url, run_ids)


def at(value: Any, path: list[str | int]) -> Any:
    """The value at ``path`` (``MISSING`` when there is none)."""
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return MISSING
        elif not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def final_values(i: int, column: str, path: list[str | int]) -> list[Any]:
    """Run ``i``'s final values of ``pick``'s input (``column`` "input") or output at
    ``path``, one per call."""
    out = []
    for call in PLANS[i].calls:
        whole = {"user": call.user, "value": call.value, "i": i, "key": call.key}
        out.append(at(whole if column == "input" else call.value, path))
    return out
