"""Benchmarks run with pytest-benchmark: `make bench` (or `pytest benchmarks/bench_x.py`)."""
