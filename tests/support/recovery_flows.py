"""Durable workflows for the recovery tests, importable by their recorded entry point
(``tests.support.recovery_flows:counted``) in the process that starts a run and in the
process that resumes it.

Every step appends ``NAME PID`` to a per-run side-effect file (``RECOVERY_FLOW_DIR/RUN_ID``)
as its first act: the file counts how often each step executed, and by which process.
The environment steers the process running them (never the recorded input, so a
resumed run behaves as its recoverer's environment says):

- ``RECOVERY_FLOW_PAUSE_S``: each step then sleeps a random 0..that many seconds
  (so a signal lands anywhere: before, inside or after a step's side effect, during a
  commit);
- ``RECOVERY_FLOW_BLOCK=NAME``: the step ``NAME`` prints ``blocked RUN_ID`` after its
  side effect and then waits forever (the process is killed there);
- ``RECOVERY_FLOW_SLOW=NAME:SECONDS``: the step ``NAME`` sleeps that long after its side
  effect (a recoverer is signalled while it runs).

``main`` (``python -c "from tests.support.recovery_flows import main; main()" KIND N``)
runs ``N`` runs of the ``sync`` or ``async`` workflow on threads at once, printing
``started RUN_ID`` on stdout as each run begins (and ``blocked RUN_ID``); it is not
``python -m``: a run started as ``__main__`` could not be imported again by its entry
point. Elsewhere (a recoverer) nothing is printed.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import steptrace as st

STEPS = ("fetch", "clean", "classify", "draft", "deliver")
"""The steps of both workflows, in the order they run."""

_out = threading.Lock()
_announce = False
"""Set by ``main``: a recoverer running these workflows keeps its stdout to itself."""


def say(line: str) -> None:
    if not _announce:
        return
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _act(name: str) -> None:
    run_id = st.current_run_id()
    with open(Path(os.environ["RECOVERY_FLOW_DIR"]) / str(run_id), "a") as f:
        f.write(f"{name} {os.getpid()}\n")
    pause = float(os.environ.get("RECOVERY_FLOW_PAUSE_S") or 0)
    if pause:
        time.sleep(random.uniform(0, pause))
    slow, _, seconds = (os.environ.get("RECOVERY_FLOW_SLOW") or "").partition(":")
    if slow == name:
        time.sleep(float(seconds))
    if os.environ.get("RECOVERY_FLOW_BLOCK") == name:
        say(f"blocked {run_id}")
        threading.Event().wait()


@st.step
def fetch(item: int) -> dict[str, Any]:
    _act("fetch")
    return {"item": item, "text": f"  item {item}  "}


@st.step
def clean(doc: dict[str, Any]) -> dict[str, Any]:
    _act("clean")
    return {**doc, "text": doc["text"].strip()}


@st.step
def classify(doc: dict[str, Any]) -> str:
    _act("classify")
    return "even" if doc["item"] % 2 == 0 else "odd"


@st.step
def draft(doc: dict[str, Any], label: str) -> str:
    _act("draft")
    return f"{doc['text']} is {label}"


@st.step
def deliver(text: str) -> dict[str, str]:
    _act("deliver")
    return {"delivered": text}


@st.workflow(durable=True)
def counted(item: int) -> dict[str, str]:
    say(f"started {st.current_run_id()}")
    doc = clean(fetch(item))
    return deliver(draft(doc, classify(doc)))


@st.step(name="fetch")
async def afetch(item: int) -> dict[str, Any]:
    await asyncio.to_thread(_act, "fetch")
    return {"item": item, "text": f"  item {item}  "}


@st.step(name="clean")
async def aclean(doc: dict[str, Any]) -> dict[str, Any]:
    await asyncio.to_thread(_act, "clean")
    return {**doc, "text": doc["text"].strip()}


@st.step(name="classify")
async def aclassify(doc: dict[str, Any]) -> str:
    await asyncio.to_thread(_act, "classify")
    return "even" if doc["item"] % 2 == 0 else "odd"


@st.step(name="draft")
async def adraft(doc: dict[str, Any], label: str) -> str:
    await asyncio.to_thread(_act, "draft")
    return f"{doc['text']} is {label}"


@st.step(name="deliver")
async def adeliver(text: str) -> dict[str, str]:
    await asyncio.to_thread(_act, "deliver")
    return {"delivered": text}


@st.workflow(durable=True)
async def counted_async(item: int) -> dict[str, str]:
    say(f"started {st.current_run_id()}")
    doc = await aclean(await afetch(item))
    return await adeliver(await adraft(doc, await aclassify(doc)))


def main() -> None:
    global _announce
    _announce = True
    kind, runs = sys.argv[1], int(sys.argv[2])

    def one(item: int) -> None:
        if kind == "async":
            asyncio.run(counted_async(item))
        else:
            counted(item)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    say("done")
