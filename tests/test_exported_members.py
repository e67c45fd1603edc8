"""The public surface: ``steptrace.__all__`` is the contract, sorted, importable, and
the same as the package's public names (as httpx checks its own)."""

from __future__ import annotations

import importlib.metadata
import types

import pytest

import steptrace as st
from steptrace.errors import SchemaTooNew

EXPECTED = [
    "Backoff",
    "Config",
    "ConfigError",
    "DivergenceError",
    "QueryError",
    "ReentryError",
    "ReplayMismatch",
    "RunNotFound",
    "RunRecord",
    "RunResult",
    "SpanView",
    "SteptraceError",
    "Store",
    "__version__",
    "afork",
    "areplay",
    "aresume",
    "arun",
    "check",
    "configure",
    "current_run_id",
    "current_traceparent",
    "experiment",
    "flush",
    "fork",
    "health",
    "instrument",
    "is_replay",
    "judge",
    "last_run",
    "llm",
    "replay",
    "resume",
    "run",
    "score",
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


def test_all_is_every_public_name_of_the_package() -> None:
    """Every public name the package module holds is in ``__all__`` (submodules aside,
    but for the ``llm`` facade), and nothing else is."""
    public = {
        name
        for name, value in vars(st).items()
        if not name.startswith("_") and (not isinstance(value, types.ModuleType) or name == "llm")
    }
    assert public | {"__version__"} == set(st.__all__)


def test_the_testing_module_exports_its_public_names() -> None:
    import steptrace.testing as testing

    public = {
        name
        for name, value in vars(testing).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", testing.__name__) == testing.__name__
    }
    assert set(testing.__all__) == public | {"script"}
    assert testing.__all__ == ["MEMORY_SCHEME", "memory_store", "script"]


def test_version_is_the_installed_package_version() -> None:
    assert st.__version__ == importlib.metadata.version("steptrace")


def test_every_error_steptrace_raises_shares_one_base() -> None:
    for error in (st.ConfigError, st.QueryError, st.RunNotFound, SchemaTooNew):
        assert issubclass(error, st.SteptraceError), error
    # and keeps the built-in kind existing code catches
    assert issubclass(st.ConfigError, ValueError)
    assert issubclass(st.QueryError, ValueError)
    assert issubclass(st.RunNotFound, LookupError)
    with pytest.raises(st.SteptraceError, match="no store at"):  # a ConfigError
        st.Store.open()

    @st.workflow
    def wf() -> int:
        return 1

    wf()
    with st.Store.open() as store, pytest.raises(st.SteptraceError, match="no run"):
        store.run("0" * 32)


def test_llm_facade_members() -> None:
    assert callable(st.llm.chat)
    assert callable(st.llm.achat)
    assert callable(st.llm.script)
    assert callable(st.Store.open)
