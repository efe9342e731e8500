"""Shared CLI plumbing: one-line errors, ``--json`` output, the rich reporter of progress and messages."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
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
    few seconds and at the end. ``messages_to_stderr`` sends result lines to
    stderr too (a command printing ``--json`` keeps stdout for the JSON).
    """

    def __init__(self, line_every_s: float = 5.0, messages_to_stderr: bool = False) -> None:
        self.line_every_s = line_every_s
        self.messages_to_stderr = messages_to_stderr

    def message(self, text: str, stream: str = "out") -> None:
        (console if stream == "err" or self.messages_to_stderr else out).print(text, soft_wrap=True)

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
        console.print(
            f"{description}: {state['done']}{tot}{status}  ({time.monotonic() - t0:.0f} s)",
            markup=False,
            soft_wrap=True,
        )
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


def machine_cores() -> list[int]:
    """The cores this process may run on (its affinity), else ``0..cpu_count-1``."""
    try:
        import psutil

        return sorted(psutil.Process().cpu_affinity())
    except (ImportError, AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def parse_cores(text: str | None, local: bool = True) -> list[int] | None:
    """``"0,1"`` or ``"0-3"`` -> list of core ids; refuses reversed ranges, repeats and (``local``: the cores are
    this machine's, not a remote board's or phone's) cores this machine lacks."""
    if not text:
        return None
    cores: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.split("-")
                lo, hi = int(a), int(b)
                if lo > hi:
                    raise LatbenchError(f"bad core range {part.strip()!r} in {text!r}: the first core is the lower")
                cores.extend(range(lo, hi + 1))
            else:
                cores.append(int(part))
    except ValueError:
        raise LatbenchError(f"bad core list {text!r}; use e.g. 0,1 or 0-3") from None
    have = machine_cores()
    bad = sorted({c for c in cores if c not in have}) if local else [c for c in cores if c < 0]
    if bad and not local:
        raise LatbenchError(f"bad core list {text!r}: core numbers are >= 0")
    if bad:
        raise LatbenchError(f"cores {bad} do not exist on this machine (it has cores {_ranges(have)}); see --cores")
    if len(set(cores)) != len(cores):
        raise LatbenchError(f"core list {text!r} names a core twice")
    return cores


def _ranges(cores: list[int]) -> str:
    return f"{cores[0]}..{cores[-1]}" if cores == list(range(cores[0], cores[-1] + 1)) else ",".join(map(str, cores))


def check_threads(threads: int | None, option: str = "--threads", local: bool = True) -> int | None:
    """Intra-op threads: at least 1 and (``local``: on this machine) no more than the cores this process may use
    (more only thrash)."""
    if threads is None:
        return None
    if not local:
        if threads < 1:
            raise LatbenchError(f"{option} {threads}: use 1 or more")
        return threads
    n = len(machine_cores())
    if not 1 <= threads <= n:
        raise LatbenchError(f"{option} {threads}: use 1 to {n} (the cores this machine lets latbench use)")
    return threads


#: backend settings that are counts (at least 1) and positive or non-negative amounts; checked before a backend is made
_COUNT_SETTINGS = ("batch", "inter_threads", "calibration_samples")
_POSITIVE_SETTINGS = ("speed", "gflops", "gbps")
_NONNEGATIVE_SETTINGS = ("noise", "overhead_ms")


def check_settings(settings: dict[str, Any], local: bool = True) -> dict[str, Any]:
    """Refuse backend settings (``--set``) that are nonsense whatever the backend: threads beyond the cores,
    a batch of 0, a negative or non-finite speed. The backend still checks the names and its own rules."""
    for key, value in settings.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise LatbenchError(f"--set {key}={value}: not a finite number")
    if "threads" in settings and settings["threads"] is not None:
        if not isinstance(settings["threads"], int) or isinstance(settings["threads"], bool):
            raise LatbenchError(f"--set threads={settings['threads']!r}: give a whole number")
        check_threads(settings["threads"], "threads", local)
    if isinstance(settings.get("cores"), str):
        settings["cores"] = parse_cores(settings["cores"], local)
    elif isinstance(settings.get("cores"), list):
        parse_cores(",".join(str(c) for c in settings["cores"]), local)
    for key in _COUNT_SETTINGS:
        v = settings.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise LatbenchError(f"--set {key}={v!r}: give a whole number >= 1")
    for key, low_ok in [*((k, False) for k in _POSITIVE_SETTINGS), *((k, True) for k in _NONNEGATIVE_SETTINGS)]:
        v = settings.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0 or (v == 0 and not low_ok):
            raise LatbenchError(f"--set {key}={v!r}: give a number {'>= 0' if low_ok else '> 0'}")
    return settings


# ----------------------------------------------------------------------------- option checks (typer callbacks)
def positive_seconds(value: float | None) -> float | None:
    """``--min-time`` and the like: a finite number of seconds above 0 (``nan``, ``inf``, ``-1`` are refused)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a finite number of seconds above 0")
    return value


def positive_finite(value: float | None) -> float | None:
    """A width multiplier and the like: finite and above 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a finite number above 0")
    return value


def check_device_name(value: str | None) -> str | None:
    """A name that becomes a file (``devices/<name>.toml``): :func:`latbench.paths.check_name` as a usage error."""
    from latbench import paths

    if value is not None:
        try:
            paths.check_name(value, "name")
        except LatbenchError as exc:
            raise typer.BadParameter(str(exc).removeprefix("bad name ")) from None
    return value


#: ``--seed``: numpy takes seeds 0 .. 2**32-1
SeedOpt = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Random seed.")]
#: ``--min-time``
MinTimeOpt = Annotated[
    float | None, typer.Option(callback=positive_seconds, help="Seconds of timed calls per item (above 0).")
]
#: ``--seq``: the sequence length of a space that has one (``bert``)
SeqOpt = Annotated[int | None, typer.Option(min=8, max=4096, help="Sequence length of the space (bert; default 128).")]
#: ``--seq`` beside a ``--space`` that only fills in archs not naming their own
ArchSeqOpt = Annotated[
    int | None, typer.Option(min=8, max=4096, help="Sequence length of archs that do not record one (bert).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]


def new_file(path: Path | None, force: bool, option: str = "--out") -> Path | None:
    """An output file checked before any work: refused when it exists (unless ``--force``), is not a regular file,
    or its folder cannot be written. Nothing is created but the folder."""
    from latbench import paths

    if path is None:
        return None
    paths.check_writable_target(path)
    if path.exists() and not force:
        raise LatbenchError(f"{path} exists; pass --force to overwrite it or choose another {option}")
    paths.ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    return path


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


# ----------------------------------------------------------------------------- space parameters
#: what each space parameter of the command line is, for the error that names a space without it
_SPACE_PARAM_WORDS = {"resolution": "input resolution", "width": "width multiplier", "seq": "sequence length"}


def _space_param_names(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def space_params(space: str | None, **given: Any) -> dict[str, Any]:
    """The space parameters of the command line (``--resolution``, ``--width``, ``--seq``) as ``get_space`` keywords.

    Checked before any work, so a typo costs nothing: a parameter the space does not have (``--seq`` on
    ``ofa-mbv3``) is one line naming the spaces that have it, and one given without ``--space`` (where the
    space is otherwise read from the archs) asks for it. Values left out stay ``None`` (the space's default).
    """
    from latbench.spaces import SPACES

    for key, value in given.items():
        if value is None:
            continue
        option = f"--{key.replace('_', '-')}"
        if space is None:
            raise LatbenchError(f"{option} {value} sets a parameter of the space; give --space too")
        cls = SPACES.get(space)
        if cls is not None and key not in _space_param_names(cls):
            having = ", ".join(n for n, c in SPACES.items() if key in _space_param_names(c))
            what = _SPACE_PARAM_WORDS.get(key, f"parameter {key!r}")
            raise LatbenchError(f"{option} {value}: space {space!r} has no {what} (spaces with one: {having})")
    return dict(given)


def space_tag(name: str, params: dict[str, Any] | None) -> str:
    """The space's name in default file names: ``bert-seq256`` when ``--seq`` was given, else the name (the
    resolution has its own suffix), so tables or datasets of two sequence lengths never share a file."""
    seq = (params or {}).get("seq")
    return f"{name}-seq{seq}" if seq is not None else name
