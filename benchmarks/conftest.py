"""Benchmarks run with pytest-benchmark: `make bench` (or `pytest benchmarks/bench_x.py`).

The suites are ``bench_*.py`` (they are not part of the test suite, whose files are ``test_*.py``); this
hook collects them when pytest is pointed at ``benchmarks/``. A file named on the command line is
collected by pytest itself, so it is skipped here (no double collection).
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
