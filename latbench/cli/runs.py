"""``latbench runs list`` / ``latbench runs show``: the runs of both search engines, from their run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from latbench.cli.common import emit, out

runs_app = typer.Typer(help="Search runs (MnasNet and ProxylessNAS): list, show.", no_args_is_help=True)

RunsDir = Annotated[
    Path | None, typer.Option(help="Folder of run folders. [default: runs/ under LATBENCH_HOME or the checkout]")
]


def register(app: typer.Typer) -> None:
    runs_app.command("list")(list_runs)
    runs_app.command("show")(show)
    app.add_typer(runs_app, name="runs")


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _budget(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "NO")


def list_runs(
    runs_dir: RunsDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """One line per run: id, engine, space, target, predicted and measured ms, within budget, state."""
    from latbench.search.runstore import list_runs as rows_of
    from latbench.search.runstore import runs_root

    rows = rows_of(runs_dir)

    def human() -> None:
        if not rows:
            out.print(f"no runs in {runs_root(runs_dir)}")
            return
        out.print(
            "run id | engine | space | target ms | predicted ms | measured ms | within budget | state", markup=False
        )
        for r in rows:
            out.print(
                f"{r['run_id']} | {r['engine']} | {r['space']} | {_ms(r['target_ms'])} | {_ms(r['predicted_ms'])} | "
                f"{_ms(r['measured_ms'])} | {_budget(r['within_budget'])} | {r['state']}",
                markup=False,
            )

    emit(as_json, rows, human)


def show(
    run: Annotated[str, typer.Argument(help="Run id.")],
    runs_dir: RunsDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
) -> None:
    """One run of either engine: settings, latency source, result against the budget, files."""
    from latbench.search.runstore import show_run

    doc = show_run(run, runs_dir)

    def human() -> None:
        cfg, res = doc["config"], doc["result"]
        src = cfg.get("latency_source", {})
        out.print(f"run       {doc['run_id']} ({doc['engine']}, {doc['state']})  {doc['path']}", markup=False)
        out.print(f"space     {doc['space']}  created {cfg.get('created')}", markup=False)
        out.print(f"target    {cfg['target'].get('text')} = {cfg['target']['ms']:.3f} ms", markup=False)
        out.print(f"latency   {src.get('description')} ({src.get('kind')})", markup=False)
        if res is None:
            out.print(f"result    none yet ({doc['state']}); go on with --resume {doc['run_id']}", markup=False)
        else:
            m = res.get("measured")
            line = f"result    {res['predicted_kind']} {_ms(res['predicted_ms'])} ms"
            line += f", measured {m['median_ms']:.3f} ms (IQR {m['iqr_ms']:.3f})" if m else ", not measured"
            verdict = "within" if res["within_budget"] else f"OVER by {res['over_budget_pct']:.1f}%"
            out.print(f"{line}; budget {res['target_ms']:.3f} ms: {verdict}", markup=False)
            if res.get("accuracy") is not None:
                out.print(f"accuracy  {res['accuracy']:.4g}", markup=False)
            if res.get("score") is not None:
                out.print(f"score     {res['score']:.4g} ({res.get('score_name')}, a proxy score)", markup=False)
            if res.get("arch"):
                out.print("arch      " + " ".join(str(v) for v in res["arch"]["choices"].values()), markup=False)
        out.print("files     " + ", ".join(doc["files"]), markup=False)

    emit(as_json, doc, human)
