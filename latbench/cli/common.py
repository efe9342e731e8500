"""Shared CLI plumbing: one-line errors, ``--json`` output, progress bars, device lookup."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from latbench.device import DeviceProfile, load_profile
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


@contextmanager
def progress_bar(description: str, total: int | None = None, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``update(completed, total=None, status="")``.

    The bar appears on the first update, so input checks that fail before any
    work starts print their one error line alone.
    """
    if not enabled:
        yield lambda *a, **k: None
        return
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


def open_device(name: str) -> tuple[DeviceProfile, Any]:
    """Resolve a device name (profile or backend) to ``(profile, backend)``.

    A profile recorded on another machine (or with other settings) is refused
    in one line: its numbers would not be this device's.
    """
    profile = load_profile(name)
    backend = profile.make_backend()
    if profile.fingerprint and profile.fingerprint.get("id"):
        live = backend.fingerprint().id
        if live != profile.fingerprint["id"]:
            raise LatbenchError(
                f"device profile {profile.name!r} was recorded on another machine or with other settings "
                f"(profile {profile.fingerprint['id']}, here {live}); run `latbench profile {profile.backend} "
                f"--name {profile.name}` again"
            )
    return profile, backend


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
