"""For your own tests: record into a store in memory, read back exactly what was recorded.

```python
import steptrace as st
from steptrace.testing import memory_store

def test_triage_classifies_billing():
    st.llm.script("triage", ['{"classification": "billing"}'])
    with memory_store() as store:
        triage("I was charged twice")
        run = st.last_run()  # or store.run(run_id), store.runs(), store.sql(...)
    assert run.status == "succeeded"
    assert run.steps("classify")[-1].output["classification"] == "billing"
```

``memory_store()`` points steptrace at a fresh ``memory://`` store: a SQLite database in
this process's memory that the writer and every reader share, so nothing touches the
disk and each test starts empty. It yields a ``Store`` that answers every question a
file store answers (``runs``, ``run``, ``distribution``, ``sql``, ``export`` …). On exit
the configuration is reset (``steptrace.config.reset``: back to the defaults and the
``STEPTRACE_*`` variables) and the database is dropped.

``st.llm.script`` (re-exported here as ``script``) gives offline, deterministic model
answers for the same tests.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from steptrace.config import reset
from steptrace.configure import configure
from steptrace.llm.scripted import script
from steptrace.store import Store
from steptrace.store import memory as memory_databases

MEMORY_SCHEME = memory_databases.SCHEME
"""``memory://``: a store URL with this scheme names a database in this process's
memory (``configure(store="memory://NAME")``)."""


@contextlib.contextmanager
def memory_store(name: str | None = None, **settings: Any) -> Iterator[Store]:
    """Record into a fresh in-memory store for the duration of the ``with`` block and
    yield a ``Store`` reading it. The configuration is reset on entry and on exit, so a
    test starts from the defaults; ``settings`` are passed to ``configure`` (e.g.
    ``redact=False``, ``capture_logs=False``). ``name`` names the store
    (``memory://NAME``, default: a random one), for code that opens it by URL."""
    url = MEMORY_SCHEME + (name or uuid.uuid4().hex)
    reset()
    memory_databases.drop(url)
    configure(store=url, **settings)
    memory_databases.database(url, create=True)
    store = Store.open(url)
    try:
        yield store
    finally:
        store.close()
        reset()  # closes the writer: every record is written before the database goes
        memory_databases.drop(url)


__all__ = ["MEMORY_SCHEME", "memory_store", "script"]
