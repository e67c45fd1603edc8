"""The run page's waterfall on a run of 2,000 spans, in Debian's Chromium: only the
rows in view (and a margin) are in the DOM, so these check that the rows drawn are
the right ones wherever the waterfall is scrolled, and that a span deep in the run is
reached by its link, by find, by the keyboard and through collapsed rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import steptrace as st
from steptrace.store.model import RunRecord
from tests.support.helpers import run_python
from tests.support.ui_server import UIServer, start_ui

TIMEOUT_MS = 15_000
ROW_PX = 24  # .wf-row's height (app.css)
AXIS_PX = 18  # the sticky time axis above the rows

BIG_RUN = """
import steptrace as st

st.llm.script("big", ['{"ok": true}'])

@st.step
def work(i: int) -> dict:
    st.llm.chat("scripted:big", [{"role": "user", "content": f"item {i}"}])
    return {"i": i}

@st.workflow
def big() -> int:
    for i in range(1000):
        work(i)
    return 1000

st.run(big)
"""

# [span id or None, top in px from the first row] of each row in the DOM.
ROWS_DRAWN = """() => {
  const top = document.querySelector('#waterfall .wf-body').getBoundingClientRect().top;
  return [...document.querySelectorAll('#waterfall .wf-row')].map(
    (r) => [r.dataset.span || null, Math.round(r.getBoundingClientRect().top - top)]);
}"""

# The span of the row drawn at the middle of the waterfall's view, and which row index
# the scroll position puts there.
ROW_IN_VIEW = """([axis, row]) => {
  const wf = document.getElementById('waterfall');
  const box = wf.getBoundingClientRect();
  const index = Math.floor((wf.scrollTop + wf.clientHeight / 2 - axis) / row);
  const y = box.top + axis + index * row + row / 2 - wf.scrollTop;
  const hit = document.elementFromPoint(box.left + 200, y).closest('.wf-row');
  return [index, hit ? hit.dataset.span : null];
}"""

# Whether the selected row is `id` and wholly in view: below the axis, inside the
# waterfall's box and inside the window.
SELECTED_IN_VIEW = """([id, axis]) => {
  const rows = document.querySelectorAll('#waterfall .wf-row.sel');
  if (rows.length !== 1 || rows[0].dataset.span !== id) return false;
  const box = document.getElementById('waterfall').getBoundingClientRect();
  const r = rows[0].getBoundingClientRect();
  return r.top >= box.top + axis - 0.5 && r.bottom <= box.bottom + 0.5
    && r.bottom <= innerHeight + 0.5;
}"""


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UIServer, RunRecord]]:
    """A run of 1,000 steps each making one LLM call (2,000 spans), and the UI over it."""
    store_path = tmp_path_factory.mktemp("big") / "big.db"
    run_python(BIG_RUN, store_path, timeout_s=120)
    with st.Store.open(str(store_path)) as s:
        run = s.run(s.runs(last=1)[0].run_id)
    assert len(run.spans) == 2000
    server = start_ui(store_path)
    yield server, run
    server.stop()


def _order(run: RunRecord) -> list[str]:
    """The waterfall's rows, top to bottom: the run, then each step and its call."""
    return [run.span_id, *(s.span_id for s in run.spans)]


def _open(page: Any, server: UIServer, run: RunRecord, fragment: str = "") -> None:
    page.goto(f"{server.url}/runs/{run.run_id}{fragment}")
    page.wait_for_selector("body[data-ready='1'] #waterfall .wf-row", timeout=TIMEOUT_MS)


def _assert_rows_drawn_in_place(page: Any, order: list[str]) -> list[str | None]:
    """The rows in the DOM are consecutive rows of the tree, each where its index puts
    it; returns their span ids."""
    drawn = page.evaluate(ROWS_DRAWN)
    first = drawn[0][1] // ROW_PX
    assert [top for _, top in drawn] == [(first + i) * ROW_PX for i in range(len(drawn))]
    ids = [span for span, _ in drawn]
    assert ids == order[first : first + len(drawn)]
    return ids


def _scroll_to(page: Any, top: int, order: list[str]) -> None:
    """Scroll the waterfall to ``top`` and wait for the rows there to be drawn."""
    page.eval_on_selector("#waterfall", "(wf, top) => { wf.scrollTop = top; }", top)
    index = (top + 200 - AXIS_PX) // ROW_PX  # the row 200 px into the view
    page.wait_for_selector(f".wf-row[data-span='{order[index]}']", timeout=TIMEOUT_MS)


def _steps_after(page: Any, span_id: str) -> str | None:
    """The span of the row drawn right below ``span_id``'s."""
    ids = [span for span, _ in page.evaluate(ROWS_DRAWN)]
    return ids[ids.index(span_id) + 1]


def test_the_rows_drawn_are_the_rows_in_view_wherever_it_scrolls(
    page: Any, big_run: tuple[UIServer, RunRecord]
) -> None:
    server, run = big_run
    order = _order(run)
    _open(page, server, run)
    assert page.locator(".pane-h").first.inner_text().startswith("2000 spans")
    ids = _assert_rows_drawn_in_place(page, order)
    assert ids[0] == run.span_id and 30 <= len(ids) < 200  # the view and a margin, not 2,001
    height = page.eval_on_selector("#waterfall .wf-body", "b => b.getBoundingClientRect().height")
    assert height == len(order) * ROW_PX  # the scrollbar stands for every row

    bottom = page.eval_on_selector("#waterfall", "wf => wf.scrollHeight - wf.clientHeight")
    for top in (ROW_PX * 500 + 7, ROW_PX * 1200, bottom // 3, bottom):
        _scroll_to(page, top, order)
        ids = _assert_rows_drawn_in_place(page, order)
        assert len(ids) < 200
        index, shown = page.evaluate(ROW_IN_VIEW, [AXIS_PX, ROW_PX])
        assert shown == order[index]
    assert ids[-1] == run.spans[-1].span_id  # scrolled to the end: the last row is drawn

    last = run.spans[-1]
    page.click(f".wf-row[data-span='{last.span_id}']")
    page.wait_for_selector("#detail .msg", timeout=TIMEOUT_MS)
    assert page.locator("#detail .msg .content").text_content() == "item 999"
    # Scrolled back to the top, the first rows are drawn again, the selection kept.
    _scroll_to(page, 0, order)
    assert _assert_rows_drawn_in_place(page, order)[0] == run.span_id
    _scroll_to(page, bottom, order)
    assert page.locator(f".wf-row.sel[data-span='{last.span_id}']").count() == 1


def test_a_deep_span_is_reached_by_link_find_keyboard_and_through_collapsed_rows(
    page: Any, big_run: tuple[UIServer, RunRecord]
) -> None:
    server, run = big_run
    order = _order(run)

    # A link to a span deep in the run opens the page scrolled to it, selected.
    deep = run.spans[1501]  # the LLM call of work(750)
    _open(page, server, run, f"#span={deep.span_id}")
    page.wait_for_selector("#detail .msg", timeout=TIMEOUT_MS)
    assert page.evaluate(SELECTED_IN_VIEW, [deep.span_id, AXIS_PX])
    assert page.locator("#detail .msg .content").text_content() == "item 750"
    _assert_rows_drawn_in_place(page, order)

    # The keyboard walks the rows past the ones drawn around the selection.
    page.locator("#detail").click(position={"x": 5, "y": 5})  # focus off any input
    for _ in range(60):
        page.keyboard.press("ArrowDown")
    target = order[order.index(deep.span_id) + 60]
    page.wait_for_selector(f"#detail .pane-h:has-text('{target}')", timeout=TIMEOUT_MS)
    assert page.evaluate(SELECTED_IN_VIEW, [target, AXIS_PX])
    for _ in range(3):
        page.keyboard.press("k")
    target = order[order.index(target) - 3]
    page.wait_for_selector(f"#detail .pane-h:has-text('{target}')", timeout=TIMEOUT_MS)
    assert page.evaluate(SELECTED_IN_VIEW, [target, AXIS_PX])

    # Collapsing a step hides its call: the next row is the next step.
    step, call = run.spans[1000], run.spans[1001]  # work(500) and its LLM call
    _scroll_to(page, ROW_PX * 980, order)
    page.click(f".wf-row[data-span='{step.span_id}'] .tw")
    page.wait_for_selector(f".wf-row[data-span='{call.span_id}']", state="detached")
    assert _steps_after(page, step.span_id) == run.spans[1002].span_id  # work(501)

    # Find, by the start of an id: with the whole run collapsed, the span is reached
    # and the rows above it opened; the step collapsed before stays so.
    _scroll_to(page, 0, order)
    page.click(f".wf-row[data-span='{run.span_id}'] .tw")
    page.wait_for_selector(f".wf-row[data-span='{run.spans[0].span_id}']", state="detached")
    assert page.locator("#waterfall .wf-row").count() == 1
    hidden = run.spans[1801]  # the LLM call of work(900)
    page.fill("#wf-find", hidden.span_id[:12])
    page.press("#wf-find", "Enter")
    page.wait_for_selector(f"#detail .pane-h:has-text('{hidden.span_id}')", timeout=TIMEOUT_MS)
    page.wait_for_selector("#detail .msg", timeout=TIMEOUT_MS)
    assert page.locator("#wf-found").inner_text() == "1 of 1"
    assert page.evaluate(SELECTED_IN_VIEW, [hidden.span_id, AXIS_PX])
    assert page.locator("#detail .msg .content").text_content() == "item 900"
    _scroll_to(page, ROW_PX * 980, order)
    assert _steps_after(page, step.span_id) == run.spans[1002].span_id
    # ... until find reaches a span inside it.
    page.fill("#wf-find", call.span_id[:12])
    page.press("#wf-find", "Enter")
    page.wait_for_selector(f".wf-row.sel[data-span='{call.span_id}']", timeout=TIMEOUT_MS)
    assert page.evaluate(SELECTED_IN_VIEW, [call.span_id, AXIS_PX])
    assert _steps_after(page, step.span_id) == call.span_id

    # Find by name: the next match after the selection, counted among all of them.
    steps = [s for s in run.spans if s.kind == "step"]
    assert len(steps) == 1000
    following = steps[501]  # work(501), the first step after the call selected
    page.fill("#wf-find", following.name)
    page.press("#wf-find", "Enter")
    page.wait_for_selector(f"#detail .pane-h:has-text('{following.span_id}')", timeout=TIMEOUT_MS)
    assert page.locator("#wf-found").inner_text() == "502 of 1000"
    assert page.evaluate(SELECTED_IN_VIEW, [following.span_id, AXIS_PX])
    page.press("#wf-find", "Shift+Enter")  # back to work(500)
    page.wait_for_selector(f"#detail .pane-h:has-text('{step.span_id}')", timeout=TIMEOUT_MS)
    assert page.locator("#wf-found").inner_text() == "501 of 1000"
    page.fill("#wf-find", "no such span")
    page.press("#wf-find", "Enter")
    assert page.locator("#wf-found").inner_text() == "no match"
