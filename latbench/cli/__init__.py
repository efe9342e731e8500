"""The ``latbench`` command tree. Thin: parse, call the library, print.

Every user error (:class:`~latbench.errors.LatbenchError`) and every usage error
is one line on stderr, ``latbench: error: ...``, and exit code 2; Ctrl-C exits
130 and says how to resume where the command can.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
import typer.main

from latbench.errors import LatbenchError

app = typer.Typer(
    name="latbench",
    help="Hardware-aware NAS: profile devices, build latency tables, train predictors, search under a budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
search_app = typer.Typer(help="Hardware-aware search under a latency budget.", no_args_is_help=True)
predictor_app = typer.Typer(help="Latency predictors: train, evaluate.", no_args_is_help=True)
farm_app = typer.Typer(help="Device farm on Ray: join, status.", no_args_is_help=True)


def _register() -> None:
    from latbench.cli import core, demo

    core.register(app)
    demo.register(app)
    # --- command modules of the other parts (one line each) ---
    for module in ("ort", "predictor", "mnas", "proxyless", "farm", "runs", "dataset"):
        try:
            mod = __import__(f"latbench.cli.{module}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"latbench.cli.{module}":
                raise
            continue
        mod.register(app)
    app.add_typer(search_app, name="search")
    app.add_typer(predictor_app, name="predictor")
    app.add_typer(farm_app, name="farm")


_register()


INTERRUPTED = "latbench: interrupted; what was written is kept"
RESUME_HINT = " (re-run the same command with --resume to go on)"


def _usage_line(exc: typer.TyperException) -> str:
    """A usage error as one line: ``no such option: --bogus (latbench devices --help)``."""
    msg = " ".join(exc.format_message().split()).removesuffix(".")
    msg = msg[:1].lower() + msg[1:] if msg[:2] != msg[:2].upper() else msg
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        msg += f" ({ctx.command_path} --help)"
    return msg


def command_options() -> dict[str, list[str]]:
    """Every command of the app (``"table build"``) with its parameters in order: arguments in upper case
    (``SPACE``), options by their long names (``--out``, a flag pair as ``--measure/--no-measure``).

    The README's options table is checked against this (:func:`options_markdown` writes it), so it stays true.
    """
    found: dict[str, list[str]] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        commands = getattr(cmd, "commands", None)
        if commands:
            for name, sub in commands.items():
                walk(sub, [*path, name])
            return
        names: list[str] = []
        for p in cmd.params:
            if p.param_type_name == "argument":
                names.append(str(p.name).upper())
            else:
                names.append("/".join(o for o in [*p.opts, *p.secondary_opts] if o.startswith("--")))
        found[" ".join(path)] = names

    walk(typer.main.get_command(app), [])
    return found


def options_markdown() -> str:
    """The README's table of every command and its options (regenerate it with this after changing the CLI)."""
    lines = ["| command | arguments and options |", "| --- | --- |"]
    for cmd, names in sorted(command_options().items()):
        lines.append(f"| `latbench {cmd}` | {' '.join(f'`{n}`' for n in names)} |")
    return "\n".join(lines) + "\n"


def _has_resume(argv: list[str]) -> bool:
    """Whether the command ``argv`` names takes ``--resume`` (only then does Ctrl-C suggest it)."""
    cmd: Any = typer.main.get_command(app)
    for token in argv:
        commands = getattr(cmd, "commands", None)
        if token.startswith("-") or not commands or token not in commands:
            break
        cmd = commands[token]
    return any("--resume" in getattr(p, "opts", ()) for p in getattr(cmd, "params", ()))


def _interrupted(argv: list[str]) -> int:
    print(INTERRUPTED + (RESUME_HINT if _has_resume(argv) else ""), file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    Usage errors (unknown option or command, missing option, a value of the
    wrong type) and :class:`~latbench.errors.LatbenchError` are one line,
    ``latbench: error: ...``, and exit code 2; a bare ``latbench`` (or a bare
    command group) prints its help and exits 2.
    """
    from latbench.cli.common import RichReporter
    from latbench.service import set_reporter

    argv = list(sys.argv[1:] if argv is None else argv)
    set_reporter(RichReporter())
    try:
        rv = app(args=argv, prog_name="latbench", standalone_mode=False)
    except LatbenchError as exc:
        print(f"latbench: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        return _interrupted(argv)
    except typer.TyperException as exc:  # typer's (vendored click's) usage errors
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed (rich) or in the message
            if exc.format_message().strip():
                print(exc.format_message(), file=sys.stderr)
            return 2
        print(f"latbench: error: {_usage_line(exc)}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if rv == 130:  # typer turns Ctrl-C into exit code 130 when not standalone
        return _interrupted(argv)
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
