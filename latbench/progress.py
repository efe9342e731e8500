"""Progress and messages for the user, reported through the :class:`Reporter` the application installed.

The library never prints with rich and never imports the CLI: long work calls
:func:`track` and :func:`message`, which go to the reporter installed with
:func:`set_reporter` (the CLI installs a rich one; the default says nothing).
A Python user can install their own, e.g. one that logs. This module sits in
the lowest layer so that every layer can report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

#: ``update(completed, total=None, status="")``
ProgressUpdate = Callable[..., None]


class Reporter(Protocol):
    """Where long work reports to. ``progress`` bars go to the user's terminal, ``message`` lines to stdout
    (``stream="out"``, results) or stderr (``stream="err"``, status). Text may carry rich markup
    (``[bold]``); a plain reporter strips it."""

    def progress(self, description: str, total: int | None) -> AbstractContextManager[ProgressUpdate]: ...

    def message(self, text: str, stream: str = "out") -> None: ...


class NullReporter:
    """Says nothing: the default for library use."""

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[ProgressUpdate]:
        yield lambda *a, **k: None

    def message(self, text: str, stream: str = "out") -> None:
        return None


_reporter: Reporter = NullReporter()


def set_reporter(reporter: Reporter) -> Reporter:
    """Install ``reporter`` for this process; returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def get_reporter() -> Reporter:
    return _reporter


@contextmanager
def track(description: str, total: int | None = None, enabled: bool = True) -> Iterator[ProgressUpdate]:
    """A progress report of the installed reporter; yields ``update(completed, total=None, status="")``."""
    if not enabled:
        yield lambda *a, **k: None
        return
    with _reporter.progress(description, total) as update:
        yield update


def message(text: str, stream: str = "out") -> None:
    """A line for the user through the installed reporter (``stream`` "out" for results, "err" for status)."""
    _reporter.message(text, stream)
