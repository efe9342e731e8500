"""The CLI surface: usage errors are one line and exit 2, progress off a terminal is whole lines, the README's
options table is the app's, typer is the version these checks ran on, Ctrl-C suggests --resume only where it exists."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from latbench.cli import command_options, main, options_markdown

from .conftest import REPO, run_cli

#: (argv, what the one error line must say): a missing option, an unknown one, a bad value type, a bad command
USAGE_ERRORS = [
    (["devices", "--bogus"], "no such option: --bogus (latbench devices --help)"),
    (["table", "build"], "missing option '--device' (latbench table build --help)"),
    (["space", "sample", "darts", "--n", "abc"], "invalid value for '--n'"),
    (["measure", "--device"], "option '--device' requires an argument"),
    (["predictor", "eval", "x"], "missing option '--arch' (latbench predictor eval --help)"),
    (["predict", "--predictor", "p", "--json", "extra"], "unexpected extra argument"),
    (["table", "show"], "missing argument 'TABLE'"),
    (["search", "mnas", "--trials", "many"], "invalid value for '--trials'"),
    (["search", "proxyless", "--epochs", "1.5"], "invalid value for '--epochs'"),
    (["farm", "status", "--adress", "x"], "no such option: --adress"),
    (["tabel"], "no such command 'tabel'"),
    (["lut-check", "--device", "fake", "--n-archs", "0"], "invalid value for '--n-archs'"),
]


def _latbench(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "import sys; from latbench.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("latbench: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_bare_latbench_prints_help_and_exits_2() -> None:
    res = _latbench()
    assert res.returncode == 2, res.stderr
    assert "Usage: latbench" in res.stdout and "table" in res.stdout and "predictor" in res.stdout
    assert "Traceback" not in res.stderr and "error" not in res.stderr


@pytest.mark.parametrize("group", ["table", "space", "search", "predictor", "farm"])
def test_bare_group_prints_its_help_and_exits_2(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, group)
    assert code == 2 and f"latbench {group}" in out and "Traceback" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "table", "build", "--help")
    assert code == 0 and "--device" in out and "--min-time" in out


@pytest.mark.parametrize(("argv", "says"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_error_in_process(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    line = _one_error_line(err)
    assert says.lower() in line.lower(), line
    assert out == ""


@pytest.mark.parametrize(("argv", "says"), USAGE_ERRORS[:5], ids=[" ".join(a) for a, _ in USAGE_ERRORS[:5]])
def test_usage_error_in_a_subprocess(argv: list[str], says: str) -> None:
    res = _latbench(*argv)
    assert res.returncode == 2, res.stderr
    assert says.lower() in _one_error_line(res.stderr).lower()


def test_installed_typer_is_within_the_pinned_range() -> None:
    """The one-line usage errors rely on typer's own click (0.26+) and were checked on the versions the pin allows."""
    from importlib.metadata import version

    import tomllib
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    typer_req = next(Requirement(d) for d in deps if Requirement(d).name == "typer")
    assert typer_req.specifier, "typer must be pinned to a tested range"
    assert typer_req.specifier.contains(version("typer")), (version("typer"), str(typer_req.specifier))
    assert not typer_req.specifier.contains("0.25.0") and not typer_req.specifier.contains("1.0.0")


# ----------------------------------------------------------------------------- progress off a terminal
def test_progress_to_a_pipe_is_whole_readable_lines(tmp_path: Path) -> None:
    """stderr is a pipe here (as in CI logs): no bar frames, no carriage returns or colour codes, whole lines."""
    out = tmp_path / "t.json"
    res = _latbench(
        "table",
        "build",
        "--device",
        "fake",
        "--space",
        "darts",
        "--out",
        str(out),
        env={"LATBENCH_HOME": str(tmp_path)},
    )
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and "\x1b" not in res.stderr
    lines = res.stderr.splitlines()
    pattern = re.compile(r"^table fake/darts: (\d+)/(\d+)(  .*)?  \(\d+ s\)$")
    assert lines and all(pattern.match(ln) for ln in lines), res.stderr
    done, total = map(int, pattern.match(lines[-1]).groups()[:2])  # type: ignore[union-attr]
    assert done == total == json.loads(out.read_text())["rows"].__len__() > 0
    assert str(out) in res.stdout


def test_json_leaves_stdout_to_the_json(tmp_path: Path) -> None:
    res = _latbench(
        "table",
        "build",
        "--device",
        "fake",
        "--space",
        "darts",
        "--out",
        str(tmp_path / "t.json"),
        "--json",
        env={"LATBENCH_HOME": str(tmp_path)},
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["measured_now"] > 0


# ----------------------------------------------------------------------------- one meaning per option
def test_every_command_takes_json() -> None:
    lacking = [cmd for cmd, names in command_options().items() if "--json" not in names]
    assert not lacking, lacking


def test_option_names_keep_one_meaning() -> None:
    """Counts are --n-archs, files --arch; --archs is gone; --out is never a profile (profile and calibrate use
    --name) and runs go to --runs-dir."""
    opts = command_options()
    flat = {o for names in opts.values() for o in names}
    assert "--archs" not in flat
    assert "--n-archs" in opts["calibrate"] and "--n-archs" in opts["lut-check"]
    assert "--arch" in opts["predictor eval"] and "--arch" in opts["measure"] and "--arch" in opts["predict"]
    assert "--out" not in opts["profile"] and "--name" in opts["profile"]
    assert "--out" not in opts["calibrate"] and "--name" in opts["calibrate"]
    writers = ("profile", "measure", "space sample", "table export", "table import", "lut-check", "predictor train")
    assert all("--force" in opts[c] for c in writers)


def test_readme_options_table_is_the_apps() -> None:
    readme = (REPO / "README.md").read_text()
    begin, end = "<!-- options-table:begin -->\n", "<!-- options-table:end -->"
    assert begin in readme and end in readme
    table = readme.split(begin, 1)[1].split(end, 1)[0]
    assert table == options_markdown(), (
        "the README's options table is out of date; regenerate it with "
        "python -c 'from latbench.cli import options_markdown; print(options_markdown(), end=\"\")'"
    )


# ----------------------------------------------------------------------------- Ctrl-C
def test_interrupt_suggests_resume_only_where_the_command_has_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    import latbench.cli.core as core

    def stop(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "open_device", stop)
    code, _, err = run_cli(capsys, "measure", "--device", "fake", "--onnx", "m.onnx")
    assert code == 130 and "interrupted" in err and "--resume" not in err
    code, _, err = run_cli(capsys, "table", "build", "--device", "fake", "--space", "darts")
    assert code == 130 and "interrupted" in err and "--resume" in err


def test_main_without_argv_reads_sys_argv(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["latbench", "space", "list", "--json"])
    assert main() == 0
    assert {s["name"] for s in json.loads(capsys.readouterr().out)} >= {"proxyless-mobile", "darts", "ofa-mbv3"}
