"""Workflows as the command line names them: ``load_workflow`` imports
``module:function`` or ``path/to/file.py:function``, and ``self_command`` is how to
invoke this steptrace again in the commands we suggest.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
import typing
from collections.abc import Callable
from typing import Any

from steptrace.cli.errors import CLIError


def self_command() -> list[str]:
    """How to invoke this steptrace again: ``steptrace`` when that is the one on PATH,
    else the command as it was invoked."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "steptrace"
    on_path = shutil.which("steptrace")
    if os.path.basename(argv0) == "__main__.py":  # python -m steptrace
        executable = os.path.abspath(sys.executable)
        if on_path and os.path.dirname(os.path.abspath(on_path)) == os.path.dirname(executable):
            return ["steptrace"]
        for name in ("python", "python3"):
            found = shutil.which(name)
            if found and os.path.abspath(found) == executable:
                return [name, "-m", "steptrace"]
        return [sys.executable, "-m", "steptrace"]
    invoked = shutil.which(argv0) or argv0
    if on_path and os.path.abspath(on_path) == os.path.abspath(invoked):
        return ["steptrace"]
    return [argv0]


def load_workflow(target: str) -> Callable[..., Any]:
    """Import ``module:attr`` or ``path/to/file.py:attr`` (cwd on ``sys.path``)."""
    return load_callable(target, "@steptrace.workflow", "MODULE:WORKFLOW (e.g. myapp.flows:triage)")


def load_callable(target: str, what: str, form: str) -> Callable[..., Any]:
    """The function ``target`` names, ``module:attr`` or ``path/to/file.py:attr`` (cwd on
    ``sys.path``); a ``CLIError`` saying it is not ``form`` or not a ``what``."""
    location, sep, attr = target.rpartition(":")
    if not sep or not location or not attr:
        raise CLIError(f"{target!r} is not {form}")
    if location.endswith(".py") or os.sep in location or "/" in location:
        module = import_file(location)
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as exc:
            if exc.name and location.startswith(exc.name):
                raise CLIError(f"cannot import {location!r}: {exc}") from exc
            raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"{location!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise CLIError(f"{target}: {attr!r} is not a {what}")
    return typing.cast(Callable[..., Any], obj)


def import_file(path: str) -> Any:
    """The Python file at ``path``, imported as a module (its directory on ``sys.path``)."""
    if not os.path.isfile(path):
        raise CLIError(f"no such file: {path}")
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:  # as `python path/to/file.py` would
        sys.path.insert(0, directory)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else "__steptrace_target__"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the module's annotations through it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
