"""Shared CLI plumbing: one-line errors, ``--json`` output, the rich reporter of progress and messages."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from latbench.errors import LatbenchError

console = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


def emit(as_json: bool, data: Any, human: Callable[[], None] | None = None) -> None:
    """Print ``data`` as JSON (``--json``) or call ``human`` to print it for people."""
    if as_json or human is None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()
    else:
        human()


class RichReporter:
    """The CLI's :class:`~latbench.service.Reporter`: rich bars on a terminal, whole lines elsewhere.

    When stderr is not a terminal (CI logs, pipes, ``make demo > log``) a bar
    would print truncated frames, so progress is a plain line at most every
    few seconds and at the end.
    """

    def __init__(self, line_every_s: float = 5.0) -> None:
        self.line_every_s = line_every_s

    def message(self, text: str, stream: str = "out") -> None:
        (console if stream == "err" else out).print(text)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        if console.is_terminal:
            with _rich_bar(description, total) as update:
                yield update
            return
        with _line_progress(description, total, self.line_every_s) as update:
            yield update


@contextmanager
def _line_progress(description: str, total: int | None, every_s: float) -> Iterator[Callable[..., None]]:
    state: dict[str, Any] = {"done": 0, "total": total, "status": "", "last": None, "printed": None}
    t0 = time.monotonic()

    def line() -> None:
        tot = f"/{state['total']}" if state["total"] else ""
        status = f"  {state['status']}" if state["status"] else ""
        console.print(f"{description}: {state['done']}{tot}{status}  ({time.monotonic() - t0:.0f} s)", markup=False)
        state["printed"] = (state["done"], state["status"])

    def update(completed: int, total: int | None = None, status: str = "") -> None:
        state.update(done=completed, status=status)
        if total is not None:
            state["total"] = total
        now = time.monotonic()
        if state["last"] is None or now - state["last"] >= every_s:
            state["last"] = now
            line()

    try:
        yield update
    finally:
        if state["last"] is not None and state["printed"] != (state["done"], state["status"]):
            line()


@contextmanager
def _rich_bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; it appears on the first update, so input checks that fail
    before any work starts print their one error line alone."""
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = prog.add_task(description, total=total, status="")
    started = False

    def update(completed: int, total: int | None = None, status: str = "") -> None:
        nonlocal started
        if not started:
            prog.start()
            started = True
        prog.update(task, completed=completed, total=total if total is not None else prog.tasks[0].total, status=status)

    try:
        yield update
    finally:
        if started:
            prog.stop()


def progress_bar(description: str, total: int | None = None, enabled: bool = True) -> Any:
    """The CLI's progress report (see :class:`RichReporter`)."""
    from latbench.service import track

    return track(description, total, enabled)


def parse_cores(text: str | None) -> list[int] | None:
    """``"0,1"`` or ``"0-3"`` -> list of core ids."""
    if not text:
        return None
    cores: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                cores.extend(range(int(a), int(b) + 1))
            else:
                cores.append(int(part))
    except ValueError:
        raise LatbenchError(f"bad core list {text!r}; use e.g. 0,1 or 0-3") from None
    return cores


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs, values parsed as JSON where they parse (numbers, true, lists)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise LatbenchError(f"bad --set {pair!r}; use key=value")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out
