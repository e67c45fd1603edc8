"""Nothing recorded is lost when the process exits normally: store rows and OTel spans."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import steptrace as st  # imported before the application sets up OpenTelemetry
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class FileExporter(SpanExporter):
        def __init__(self, path):
            self.path = path
        def export(self, spans):
            with open(self.path, "a") as f:
                for span in spans:
                    span_id = format(span.context.span_id, "016x")
                    f.write(json.dumps({"name": span.name, "span_id": span_id}) + "\\n")
            return SpanExportResult.SUCCESS

    provider = TracerProvider()  # registers its own shutdown at exit
    provider.add_span_processor(BatchSpanProcessor(FileExporter(sys.argv[1])))
    trace.set_tracer_provider(provider)

    @st.step
    def double(x: int) -> int:
        return 2 * x

    @st.workflow
    def wf(n: int) -> int:
        return sum(double(i) for i in range(n))

    for _ in range(50):
        wf(3)
    # exits at once: no flush, no shutdown by hand
    """
)


def test_spans_and_rows_survive_an_immediate_exit(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    spans_file = tmp_path / "spans.jsonl"
    store = tmp_path / "exit.db"
    env = {"STEPTRACE_STORE": str(store), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(script), str(spans_file)], check=True, env=env, timeout=60)
    exported = [json.loads(line) for line in spans_file.read_text().splitlines()]
    assert len(exported) == 50 * 4  # the run and three steps, every time
    import sqlite3

    conn = sqlite3.connect(store)
    stored = {r[0] for r in conn.execute("SELECT span_id FROM spans")}
    roots = {r[0] for r in conn.execute("SELECT span_id FROM runs WHERE status = 'succeeded'")}
    conn.close()
    assert len(roots) == 50 and len(stored) == 150
    assert {s["span_id"] for s in exported} == stored | roots
