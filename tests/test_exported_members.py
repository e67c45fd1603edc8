"""The public surface: ``steptrace.__all__`` is the contract, sorted, and importable."""

from __future__ import annotations

import steptrace as st

EXPECTED = [
    "Backoff",
    "Config",
    "ConfigError",
    "RunNotFound",
    "RunRecord",
    "RunResult",
    "SpanView",
    "Store",
    "arun",
    "configure",
    "current_run_id",
    "current_traceparent",
    "flush",
    "health",
    "instrument",
    "last_run",
    "llm",
    "run",
    "step",
    "tool",
    "workflow",
]


def test_exported_members() -> None:
    assert st.__all__ == EXPECTED


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert st.__all__ == sorted(st.__all__)
    for name in st.__all__:
        assert getattr(st, name) is not None, name


def test_llm_facade_members() -> None:
    assert callable(st.llm.chat)
    assert callable(st.llm.achat)
    assert callable(st.llm.script)
    assert callable(st.Store.open)
