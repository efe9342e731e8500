"""The ``latbench`` command tree. Thin: parse, call the library, print.

Every user error (:class:`~latbench.errors.LatbenchError`) is one line on
stderr and exit code 2; Ctrl-C says how to resume and exits 130.
"""

from __future__ import annotations

import sys

import typer

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
    for module in ("ort", "predictor", "mnas", "proxyless", "farm", "dataset"):
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


INTERRUPTED = "latbench: interrupted; what was written is kept (re-run with --resume to go on)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    import click

    from latbench.cli.common import RichReporter
    from latbench.service import set_reporter

    set_reporter(RichReporter())
    try:
        rv = app(args=argv, standalone_mode=False)
    except LatbenchError as exc:
        print(f"latbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except click.ClickException as exc:  # usage errors: click prints them, exit 2
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except SystemExit as exc:
        return int(exc.code or 0)
    if rv == 130:  # click turns Ctrl-C into exit code 130 when not standalone
        print(INTERRUPTED, file=sys.stderr)
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
