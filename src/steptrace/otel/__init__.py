"""OpenTelemetry: ``conventions`` (one record becomes one span name, kind and
attributes, live and backfill alike), ``tracing`` (the tracer, ids, trace context),
``span_end`` (spans ended after their values are redacted; the log bridge),
``foreign`` (other instrumentation's spans inside a run) and ``otlp`` (the SDK set-up
and the bounded export queue). Re-sending stored runs (``steptrace.backfill``) reads
the store, so it sits above this package and the store both."""
