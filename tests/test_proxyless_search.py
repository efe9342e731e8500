"""End to end: the trainer (resume is bit-identical), `latbench search proxyless` and `run()`, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latbench.backends import get_backend
from latbench.data import load_splits
from latbench.device import DeviceProfile
from latbench.errors import LatbenchError
from latbench.search.proxyless import TrainSettings, run
from latbench.search.proxyless.engine import make_trainer
from latbench.search.proxyless.latency import ExpectedLatency
from latbench.search.proxyless.losses import make_loss
from latbench.service import resolve_latency_source
from latbench.spaces import get_space, space_of
from latbench.table import LatencyTable, build_table

from .conftest import run_cli

FAKE = "fakepx"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """200 of the digits (8x8), so an epoch is a few steps."""
    from sklearn.datasets import load_digits

    d = load_digits()
    p = tmp_path / "digits200.npz"
    np.savez(p, x=d.images[:200].astype(np.float32), y=d.target[:200])
    return p


def _fake_device(space_name: str, **params: object) -> LatencyTable:
    """A fake device profile plus its table for ``space`` under ``$LATBENCH_HOME``."""
    backend = get_backend("fake", device="fake-px")
    DeviceProfile(
        name=FAKE, backend="fake", settings={"device": "fake-px"}, fingerprint=backend.fingerprint().to_dict()
    ).save()
    space = get_space(space_name, **params)
    from latbench import paths

    res = space.params.get("resolution")
    table, _ = build_table(
        backend,
        space.vocabulary,
        paths.write_dir("tables") / FAKE / f"{space.name}-{res}.json",
        device={"name": FAKE, "backend": "fake", "settings": backend.settings},
        space=space.name,
        space_params=space.params,
    )
    return table


@pytest.fixture
def fake_proxyless(home: Path) -> LatencyTable:
    return _fake_device("proxyless-mobile")


def test_resume_after_interrupt_gives_the_same_search(home: Path, tiny_npz: Path, fake_proxyless: LatencyTable) -> None:
    deploy = get_space("proxyless-mobile")
    lat = ExpectedLatency(resolve_latency_source(deploy, device=FAKE).compiled)
    target = sum(lat.bounds()) / 2
    splits = load_splits(str(tiny_npz), resolution=32)
    train = get_space("proxyless-mobile", resolution=32, width=0.35, num_classes=10)
    settings = TrainSettings(epochs=2, warmup_epochs=1, batch_size=32, settle_steps=5)

    def trainer(ckpt: Path | None):
        return make_trainer(
            train, "binary", lat, make_loss("budget", target), splits, settings, 3, torch.device("cpu"), ckpt
        )

    full = trainer(None).fit()
    t1 = trainer(home / "ck")
    stop_at = 2 * t1.steps_per_epoch + 1  # first step of the third epoch

    def interrupt(done: int, total: int, status: dict) -> None:
        if done == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        t1.fit(interrupt)
    assert t1.epoch == 2 and (home / "ck" / "checkpoint.safetensors").exists()
    t2 = trainer(home / "ck")
    assert t2.load_checkpoint() and t2.epoch == 2 and len(t2.history) == 2
    t2.fit()
    assert torch.equal(t2.net.alpha, full.net.alpha)
    for (name, a), (_, b) in zip(t2.net.state_dict().items(), full.net.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [r["derived_ms"] for r in t2.trajectory] == [r["derived_ms"] for r in full.trajectory]
    assert t2.settled == full.settled and [r.derived for r in t2.history] == [r.derived for r in full.history]


def test_cli_search_on_a_device_writes_a_complete_run(
    home: Path, tiny_npz: Path, fake_proxyless: LatencyTable, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["search", "proxyless", "--device", FAKE, "--target", "40%", "--loss", "add", "--data", tiny_npz]
    args += ["--epochs", "2", "--warmup", "1", "--batch-size", "32", "--seed", "1", "--run-id", "r1", "--json"]
    args += ["--no-step-to-budget"]  # the derived arch itself, measured (stepping is tested in test_runs.py)
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    res = json.loads(out)
    run_dir = home / "runs" / "r1"
    assert Path(res["run_dir"]) == run_dir and res["engine"] == "proxyless" and res["run_id"] == "r1"
    for f in ("config.json", "result.json", "history.csv", "deployed.onnx", "deployed.json", "trained-variant.onnx"):
        assert (run_dir / f).stat().st_size > 0, f
    for f in ("trained-variant.safetensors", "alpha.csv", "report.md", "trajectory.png", "state/checkpoint.json"):
        assert (run_dir / f).stat().st_size > 0, f
    arch = json.loads((run_dir / "deployed.json").read_text())
    assert arch == res["arch"]
    deploy = space_of(arch)
    assert deploy.params["resolution"] == 224
    lut = fake_proxyless.lut_sum(deploy.ops_of(arch))
    assert res["predicted_ms"] == pytest.approx(lut, rel=1e-9) and res["predicted_kind"] == "looked up"
    assert res["target_ms"] == pytest.approx(sum(np.array([0.6, 0.4]) * np.array(res["details"]["bounds_ms"])))
    # measured end to end on the (fake) device: its glue makes the network a little slower than the LUT sum
    m = res["measured"]
    assert set(m) == {"median_ms", "iqr_ms", "p90_ms", "n", "kind"} and res["details"]["measured_device"] == FAKE
    assert m["kind"] == "measured"
    assert m["n"] >= 16 and 1.0 < m["median_ms"] / lut < 1.2
    assert res["within_budget"] == (m["median_ms"] <= res["target_ms"]) and res["found"] is None
    # the deployed network is the 224 px arch whose latency is reported
    import onnx

    inp = onnx.load(str(run_dir / "deployed.onnx")).graph.input[0]
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][-2:] == [224, 224]
    # the trained variant: labelled as such; weights load into it and its ONNX computes the same function
    from safetensors.torch import load_file

    tv = res["trained_variant"]
    assert "not the deployed network" in tv["label"] and tv["onnx"] == "trained-variant.onnx"
    train_arch = tv["arch"]
    assert train_arch["choices"] == arch["choices"] and train_arch["resolution"] == 32
    assert res["accuracy"] == tv["supernet_valid_acc"] and 0 <= res["accuracy"] <= 1 and res["score"] is None
    net = space_of(train_arch).build(train_arch)
    net.load_state_dict(load_file(str(run_dir / "trained-variant.safetensors")), strict=True)
    import onnxruntime as ort

    x = torch.randn(1, 3, 32, 32)
    sess = ort.InferenceSession(str(run_dir / "trained-variant.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.allclose(got, net(x).detach().numpy(), atol=1e-4)
    # alpha.csv: one row per (epoch, decision, option); probabilities sum to 1 per decision
    rows = list(csv.DictReader((run_dir / "alpha.csv").open()))
    n_opts = sum(len(d) for d in deploy.decisions)
    assert len(rows) == 3 * n_opts
    last = [r for r in rows if r["epoch"] == "3" and r["decision"] == "b02"]
    assert len(last) == 7 and sum(float(r["prob"]) for r in last) == pytest.approx(1.0, abs=1e-4)
    report = (run_dir / "report.md").read_text()
    assert "Latency is counted on the deployment space" in report and f"{res['target_ms']:.3f}" in report
    assert f"{m['median_ms']:.3f}" in report and "'resolution': 32" in report and "**training variant**" in report
    assert (run_dir / "trajectory.png").read_bytes()[:4] == b"\x89PNG"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["engine"] == "proxyless" and cfg["latency_source"]["fingerprint"] == fake_proxyless.fingerprint_id
    assert "torch" in cfg["versions"] and cfg["latency_source"]["kind"] == "looked up"
    # the Python API mirrors the CLI: same arguments, same arch
    again = run(
        device=FAKE,
        target="40%",
        loss="add",
        data=str(tiny_npz),
        epochs=2,
        warmup=1,
        batch_size=32,
        seed=1,
        run_id="r2",
        step_to_budget=False,
        progress=False,
    )
    assert again.arch == arch and again.predicted_ms == res["predicted_ms"]
    # resuming a finished run returns it; resuming after the training but before the export redoes the export
    code, out2, _ = run_cli(capsys, "search", "proxyless", "--resume", "r1", "--json")
    assert code == 0 and json.loads(out2)["arch"] == res["arch"]
    for f in ("result.json", "deployed.json", "deployed.onnx"):
        (run_dir / f).unlink()
    redone = run(resume="r1", progress=False)
    assert redone.arch == res["arch"] and (run_dir / "deployed.onnx").exists()


def test_budget_search_lands_in_its_band(home: Path, tiny_npz: Path, fake_proxyless: LatencyTable) -> None:
    res = run(
        device=FAKE,
        target="30%",
        data=str(tiny_npz),
        epochs=2,
        warmup=0,
        batch_size=32,
        seed=0,
        measure=False,
        progress=False,
    )
    d = res.to_dict()
    assert 0.95 * d["target_ms"] <= d["predicted_ms"] <= d["target_ms"]
    assert d["within_budget"] and d["measured"] is None and "switched off" in d["measured_note"]
    assert d["over_budget_pct"] == 0.0
    # the budget loss derives with the exact repair among alpha's top options; the argmax arch is reported too
    x = d["details"]
    assert x["derive"] == "within-budget" and 0 <= x["repaired_decisions"] <= 21
    assert (x["repaired_decisions"] == 0) == (x["argmax_ms"] == d["predicted_ms"])
    traj = list(csv.DictReader((res.run_dir / "trajectory.csv").open()))
    assert float(traj[-1]["derived_ms"]) == pytest.approx(d["predicted_ms"], rel=1e-5)  # csv keeps 6 digits


def test_pixel1_table_searches_the_phone_space_here(home: Path, tiny_npz: Path, need_luts: None) -> None:
    res = run(
        table="pixel1/proxyless-mobile",
        target="90ms",
        loss="mul-log",
        mode="gumbel",
        data=str(tiny_npz),
        epochs=2,
        warmup=0,
        batch_size=64,
        progress=False,
    )
    d = res.to_dict()
    pixel1 = LatencyTable.load("pixel1/proxyless-mobile")
    assert d["predicted_ms"] == pytest.approx(pixel1.lut_sum(space_of(res.arch).ops_of(res.arch)), rel=1e-9)
    assert d["measured"] is None and "not a device that runs here" in d["measured_note"]
    hist = list(csv.DictReader((res.run_dir / "history.csv").open()))
    assert [float(h["tau"]) for h in hist] == pytest.approx([5.0, 0.5])  # annealed over the search epochs
    assert "Not measured" in (res.run_dir / "report.md").read_text()


def test_darts_cells_search_with_softmax(home: Path, tiny_npz: Path) -> None:
    table = _fake_device("darts", channels=8)
    res = run(
        space="darts",
        space_params={"channels": 8},
        device=FAKE,
        target="50%",
        mode="softmax",
        loss="add",
        data=str(tiny_npz),
        epochs=1,
        warmup=0,
        batch_size=64,
        progress=False,
    )
    space = space_of(res.arch)
    assert space.name == "darts" and space.params["channels"] == 8
    assert res.predicted_ms == pytest.approx(table.lut_sum(space.ops_of(res.arch)), rel=1e-9)
    assert res.measured is not None and res.measured["median_ms"] > 0


def test_bad_input_is_one_line_and_exit_2(
    home: Path, tiny_npz: Path, fake_proxyless: LatencyTable, need_luts: None, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["search", "proxyless", "--epochs", "1", "--data", tiny_npz]
    code, _, err = run_cli(capsys, *base, "--table", "pixel1/proxyless-mobile", "--target", "10ms")
    assert code == 2 and err.count("\n") == 1
    assert "below the smallest arch" in err and "reachable: 29.6" in err
    code, _, err = run_cli(capsys, *base, "--table", "pixel1/proxyless-mobile", "--target", "400ms")
    assert code == 2 and "above the largest arch" in err and "191.0" in err
    # a table that lacks ops of the space lists them
    t = LatencyTable.load("pixel1/proxyless-mobile")
    dropped = sorted(t.rows)[:3]
    for k in dropped:
        del t.rows[k]
    t.save(home / "partial.json")
    code, _, err = run_cli(capsys, *base, "--table", home / "partial.json", "--target", "50%")
    assert code == 2 and err.count("\n") == 1 and "lacks 3 op(s)" in err
    assert all(k in err for k in dropped)
    code, _, err = run_cli(
        capsys, "search", "proxyless", "--device", FAKE, "--target", "50%", "--data", home / "nope.npz"
    )
    assert code == 2 and "data path does not exist" in err and "nope.npz" in err
    code, _, err = run_cli(capsys, *base, "--device", FAKE, "--target", "50%", "--mode", "hard")
    assert code == 2 and "unknown --mode" in err
    code, _, err = run_cli(capsys, *base, "--device", FAKE, "--target", "50%", "--space", "ofa-mbv3")
    assert code == 2 and "does not map one op to each decision" in err
    code, _, err = run_cli(capsys, "search", "proxyless", "--resume", "no-such-run")
    assert code == 2 and "no run 'no-such-run'" in err
    for bad in (["--target", "0"], ["--target", "150%"], ["--target", "nan"], ["--epochs", "0", "--target", "50%"]):
        code, _, err = run_cli(capsys, "search", "proxyless", "--device", FAKE, *bad)
        assert code == 2 and err.count("\n") == 1 and err.startswith("latbench: error: "), bad
    code, _, err = run_cli(capsys, *base, "--device", FAKE, "--target", "50%", "--run-id", "../../x")
    assert code == 2 and "bad run id" in err and not (home.parent / "x").exists()
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())  # nothing half-made was left behind
    with pytest.raises(LatbenchError, match="give a latency --target"):
        run(device=FAKE)


@pytest.mark.cuda
def test_search_runs_on_cuda(home: Path, tiny_npz: Path, fake_proxyless: LatencyTable) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    res = run(
        device=FAKE,
        target="50%",
        data=str(tiny_npz),
        epochs=1,
        warmup=1,
        train_device="cuda",
        measure=False,
        progress=False,
    )
    assert res.to_dict()["train_device"].startswith("cuda") and res.predicted_ms > 0


def test_cuda_is_refused_in_one_line_without_it(home: Path, fake_proxyless: LatencyTable) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    with pytest.raises(LatbenchError, match="CUDA is not available"):
        run(device=FAKE, target="50%", train_device="cuda", progress=False)


def test_demo_step_prints_the_arch_with_predicted_and_measured_latency(
    home: Path,
    tiny_npz: Path,
    fake_proxyless: LatencyTable,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from latbench import demo
    from latbench.device import load_profile
    from latbench.search.proxyless import demo as px_demo

    assert px_demo.step_proxyless_search in demo.demo_steps()
    # the README demo's settings, shortened for a unit test (the real step: 4 + 12 epochs on all digits)
    monkeypatch.setitem(px_demo.DEMO_SETTINGS, "epochs", 1)
    monkeypatch.setitem(px_demo.DEMO_SETTINGS, "warmup", 0)
    monkeypatch.setitem(px_demo.DEMO_SETTINGS, "data", str(tiny_npz))
    prof = load_profile(FAKE)
    ctx = demo.DemoContext(FAKE, prof, prof.make_backend(), fake_proxyless, get_space("proxyless-mobile"), home)
    ctx.step = 6
    px_demo.step_proxyless_search(ctx)
    out = capsys.readouterr().out
    assert "6. differentiable search" in out
    r = ctx.results["proxyless"]
    # the budget loss lands in [0.95 T, T]; the fake device's glue may then measure over T, and the run steps
    # to a tighter derived arch (predicted lower) measured within it
    assert r["measured_ms"] > 0 and r["predicted_ms"] <= r["target_ms"]
    assert r["within_budget"] == (r["measured_ms"] <= r["target_ms"])
    assert f"predicted {r['predicted_ms']:.2f} ms" in out and f"measured {r['measured_ms']:.2f} ms" in out
    arch = json.loads((Path(r["run_dir"]) / "deployed.json").read_text())
    assert " ".join(arch["choices"].values()) in out
