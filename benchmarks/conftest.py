"""Benchmarks run on demand: `pytest benchmarks --benchmark-enable` (pytest-benchmark)."""
