"""How a diff of two runs prints (``steptrace diff``, and the commands that make a run
to compare with its source: ``fork``, ``replay``): the two runs, a summary line, then
each changed step with its changes, one line each (``print_change``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text

from steptrace.cli.output import abbrev, format_duration, make_console, note, styled_status
from steptrace.query.diff import Change, RunDiff


def _pair(a: Any, b: Any, fmt: Callable[[Any], str] = str) -> str:
    if a == b:
        return fmt(a)
    return f"{fmt(a) if a is not None else '–'} → {fmt(b) if b is not None else '–'}"


def _delta(ms: float | None) -> Text:
    if ms is None:
        return Text("")
    sign = "+" if ms >= 0 else "−"
    return Text(f" ({sign}{format_duration(abs(ms))})", style="red" if ms > 0 else "green")


def print_diff(d: RunDiff, prefixes: tuple[str, str], show_all: bool = False) -> None:
    """Print ``d``: its two runs (named by ``prefixes``), a summary, and each changed
    step (every step with ``show_all``) with its changes."""
    console = make_console()
    for name, prefix in zip(("a", "b"), prefixes, strict=True):
        side = d[name]  # type: ignore[literal-required]
        console.print(
            Text.assemble(
                (f"{name} ", "bold"),
                (prefix, "cyan"),
                f"  {side['workflow']}  ",
                styled_status(side["status"]),
                f"  {format_duration(side['duration_ms'])}  ",
                (side["started_at"], "dim"),
            )
        )
    summary = d["summary"]
    console.print(
        Text(
            f"{summary['steps']} steps: {summary['changed']} changed, {summary['same']} the "
            f"same, {summary['only_in_a']} only in a, {summary['only_in_b']} only in b",
            style="dim",
        )
    )
    cut = [0]
    for change in d["run"]["changes"]:
        print_change(console, change, "  run ", cut)
    for step in d["steps"]:
        if not step["changed"] and step["only_in"] is None and not show_all:
            continue
        if step["only_in"] is not None:
            mark, style = ("-", "red") if step["only_in"] == "a" else ("+", "green")
            side = step["only_in"]
            line = Text.assemble(
                (f"{mark} ", style),
                (step["key"], "bold"),
                f"  only in {side}  ",
                styled_status(step["status"][side]),  # type: ignore[literal-required]
            )
            console.print(line)
            continue
        mark, style = ("~", "yellow") if step["changed"] else ("=", "dim")
        durations = step["duration_ms"]
        console.print(
            Text.assemble(
                (f"{mark} ", style),
                (step["key"], "bold"),
                "  ",
                _pair(step["status"]["a"], step["status"]["b"]),
                "  attempts ",
                _pair(step["attempts"]["a"], step["attempts"]["b"]),
                "  ",
                _pair(durations["a"], durations["b"], format_duration),
                _delta(durations["delta"]),
            )
        )
        for change in step["changes"]:
            print_change(console, change, "    ", cut)
    if cut[0]:
        note(f"{cut[0]:,} diff line(s) were cut to the terminal's width (…): --json has them")


def print_change(console: Any, change: Change, indent: str, cut: list[int]) -> None:
    """Print one change after ``indent``; a long text's line diff is cut to the width,
    counted in ``cut[0]``."""
    path = change["path"]
    if change["change"] == "added":
        console.print(Text.assemble(indent, (f"+ {path}: ", "green"), abbrev(change["b"], 200)))
    elif change["change"] == "removed":
        console.print(Text.assemble(indent, (f"- {path}: ", "red"), abbrev(change["a"], 200)))
    elif "lines" in change:
        console.print(Text.assemble(indent, (f"~ {path}:", "yellow")))
        for line in change["lines"]:  # cut to the terminal's width: --json has them whole
            style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "dim")
            cut[0] += len(indent) + 4 + len(line) > console.width
            console.print(
                Text(f"{indent}    {line}", style=style), no_wrap=True, overflow="ellipsis"
            )
    else:
        console.print(
            Text.assemble(
                indent,
                (f"~ {path}: ", "yellow"),
                abbrev(change["a"], 100),
                (" → ", "bold"),
                abbrev(change["b"], 100),
            )
        )
