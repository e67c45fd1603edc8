"""Benchmarks: run each from the repository's root as ``python -m bench.NAME`` (see
docs/performance.md). They share ``tests.support`` (the PostgreSQL server, loopback
receivers) with the tests."""
