"""Where a workflow's code is and which version of it ran: what a run records so that
resume, fork and replay can import the workflow again and say what changed.

``entry_point`` is ``module:qualname``. ``code_version`` is steptrace's version, the
version of the installed distribution the workflow's top-level package belongs to
(when it is one), and the commit checked out in the git work tree holding the
workflow's file (read from ``.git`` itself: no ``git`` process is started). Both are
computed once per workflow function.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from steptrace.errors import ReentryError


def entry_point(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


@functools.cache
def _steptrace_version() -> str | None:
    try:
        return importlib.metadata.version("steptrace")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a tree
        return None


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _package_version(module: str, directory: str | None) -> str | None:
    top = module.split(".", 1)[0]
    if top in ("__main__", "steptrace") or directory is None:
        return None
    parts = Path(directory).parts
    if "site-packages" not in parts and "dist-packages" not in parts:
        return None  # code in a work tree: its git commit says which
    for dist in _distributions().get(top, ()):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _git_dir(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        dot_git = directory / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # a linked work tree: "gitdir: <path>"
            text = dot_git.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                target = Path(text[len("gitdir:") :].strip())
                return target if target.is_absolute() else (directory / target).resolve()
    return None


def _read_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text().strip()).resolve()
    for base in (git_dir, common):
        path = base / ref
        if path.is_file():
            return path.read_text().strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(errors="replace").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    return None


@functools.cache
def git_commit(directory: str) -> str | None:
    """The commit checked out in the git work tree holding ``directory``, or None."""
    try:
        git_dir = _git_dir(Path(directory).resolve())
        if git_dir is None:
            return None
        head = (git_dir / "HEAD").read_text().strip()
        if head.startswith("ref:"):
            return _read_ref(git_dir, head[len("ref:") :].strip())
        return head or None
    except OSError:
        return None


def _module_dir(module: str) -> str | None:
    mod = sys.modules.get(module)
    path = getattr(mod, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) if path else None


def code_version(fn: Callable[..., Any]) -> dict[str, str | None]:
    directory = _module_dir(fn.__module__)
    return {
        "steptrace": _steptrace_version(),
        "package": _package_version(fn.__module__, directory),
        "git_commit": None if directory is None else git_commit(directory),
    }


def code_version_json(fn: Callable[..., Any]) -> bytes:
    """``code_version`` as stored; never raises (a version that cannot be read is null)."""
    try:
        return orjson.dumps(code_version(fn))
    except Exception:  # reading the version must never break a run
        return b'{"steptrace":null,"package":null,"git_commit":null}'


class EntryPointError(ReentryError):
    """A recorded entry point cannot be imported as a workflow."""


def load_entry_point(entry: str) -> Any:
    """The function at ``module:qualname``, importable from the current directory or
    ``sys.path``; ``EntryPointError`` says what to do when it is not."""
    module_name, sep, qualname = entry.partition(":")
    if not sep or not module_name or not qualname:
        raise EntryPointError(f"entry point {entry!r} is not 'module:qualname'")
    if module_name == "__main__":
        raise EntryPointError(
            f"the run was recorded from a script run as __main__ ({entry}); it cannot be "
            "imported by name: give the workflow explicitly (Python: "
            "workflow=your_module.your_workflow; command line: --workflow module:function)"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntryPointError(
            f"cannot import {module_name!r} for the entry point {entry} ({exc}); run from the "
            "directory the workflow was recorded in, or put its package on PYTHONPATH"
        ) from exc
    for part in qualname.split("."):
        if part == "<locals>":
            raise EntryPointError(
                f"{entry} was defined inside a function and cannot be imported; give the "
                "workflow explicitly (workflow=…, --workflow module:function)"
            )
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise EntryPointError(
                f"{module_name!r} has no {qualname!r} (entry point {entry}): was it renamed? "
                "give the workflow explicitly (workflow=…, --workflow module:function)"
            ) from None
    return obj
