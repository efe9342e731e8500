"""Device farm on Ray (issue 8): a real local Ray cluster, the deterministic fake backend standing for phones.

The cluster (module fixture) is a head node and four worker node processes:
two serving ``phone-a``, one serving ``phone-b`` and one that offers ``phone-a``
but whose host profile is another phone (``phone-z``: its fingerprint does not
match and every build must refuse it). The last two also lend one CPU each to
search trials. ``phone-a`` sleeps its simulated time, so a node can be killed
in the middle of a build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from latbench.backends import get_backend
from latbench.cli import main
from latbench.device import DeviceProfile, load_profile
from latbench.farm import FarmError
from latbench.search.mnas.history import History
from latbench.spaces import get_space
from latbench.table import LatencyTable, build_table

REPO = Path(__file__).resolve().parents[1]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    got = capsys.readouterr()
    return rc, got.out, got.err


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in table file: {keys}"
    return dict(pairs)


# ----------------------------------------------------------------------------- without Ray
def test_cluster_without_ray_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LATBENCH_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for argv in (
        ["table", "build", "--cluster", "auto", "--device", "fake", "--space", "darts"],
        ["farm", "status"],
        ["farm", "join", "--device", "fake", "--address", "127.0.0.1:6379"],
        ["search", "mnas", "--device", "fake", "--target", "20ms", "--cluster", "auto"],
    ):
        rc, _, err = _run(capsys, *argv)
        assert rc == 2, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "pip install 'latbench[ray]'" in lines[0], err
    assert not (tmp_path / "tables").exists()


def test_local_build_does_not_import_ray(tmp_path):
    out = str(tmp_path / "t.json")
    code = (
        "import sys; from latbench.cli import main; "
        f"rc = main(['table', 'build', '--device', 'fake', '--space', 'darts', '--out', {out!r}]); "
        "print(rc, 'ray' in sys.modules)"
    )
    env = {**os.environ, "LATBENCH_HOME": str(tmp_path)}
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert got.stdout.split()[-2:] == ["0", "False"], got.stdout + got.stderr
    assert len(LatencyTable.load(tmp_path / "t.json")) == len(get_space("darts").vocabulary)


# ----------------------------------------------------------------------------- the cluster
@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from latbench.farm.node import node_env, node_resources

    home = tmp_path_factory.mktemp("farm-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("LATBENCH_HOME", str(home))
    # the real flow: `latbench profile` records each device's fingerprint and sentinel
    assert main(["profile", "fake", "--set", "device=phone-a", "--set", "sleep=true", "--name", "phone-a"]) == 0
    assert main(["profile", "fake", "--set", "device=phone-b", "--name", "phone-b"]) == 0
    pa, pb = load_profile("phone-a"), load_profile("phone-b")
    # a host that says it serves phone-a but carries another phone
    impostor = DeviceProfile(name="phone-a", backend="fake", settings={"device": "phone-z", "sleep": True})
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        nodes = {
            "a1": cluster.add_node(num_cpus=0, resources=node_resources([pa])),
            "a2": cluster.add_node(num_cpus=0, resources=node_resources([pa])),
            # b1 and z1 also lend one CPU each to search trials (fewer node processes on a small machine)
            "b1": cluster.add_node(num_cpus=1, resources=node_resources([pb])),
            "z1": cluster.add_node(num_cpus=1, resources=node_resources([pa]), env_vars=node_env([impostor])),
        }
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        ids = {name: n.node_id for name, n in nodes.items()}
        yield SimpleNamespace(ray=ray, cluster=cluster, address=cluster.address, home=home, nodes=nodes, ids=ids)
    finally:
        ray.shutdown()
        cluster.shutdown()
        mp.undo()


@pytest.fixture(scope="module")
def two_device_build(farm):
    """One command, two devices: the darts table of phone-a and of phone-b."""
    from latbench.farm.build import cluster_table_build

    results = cluster_table_build(farm.address, ["phone-a", "phone-b"], space="darts", as_json=True, log=lambda m: None)
    return {r["device"]: r for r in results}


@pytest.mark.ray
def test_farm_status_lists_devices_nodes_and_fingerprints(farm, capsys):
    rc, out, _ = _run(capsys, "farm", "status", "--address", farm.address, "--json")
    assert rc == 0
    data = json.loads(out)
    devices = {d["device"]: d for d in data["devices"]}
    assert set(devices) == {"phone-a", "phone-b"}
    assert devices["phone-a"]["nodes"] == 3 and devices["phone-a"]["matching"] == 2
    assert devices["phone-b"]["nodes"] == 1 and devices["phone-b"]["matching"] == 1
    by_node = {n["node"]: n for n in devices["phone-a"]["node_list"]}
    a_id = get_backend("fake", device="phone-a").fingerprint().id
    assert by_node[farm.ids["a1"]]["fingerprint"] == a_id and by_node[farm.ids["a1"]]["matches_profile"] is True
    assert by_node[farm.ids["z1"]]["fingerprint"] == get_backend("fake", device="phone-z").fingerprint().id
    assert by_node[farm.ids["z1"]]["matches_profile"] is False
    assert by_node[farm.ids["z1"]]["profile_source"] == "node"
    assert data["cluster"]["nodes"] == 5 and data["cluster"]["plain_nodes"] == 1  # the head offers no device
    assert data["cluster"]["cpus"] == 2


@pytest.mark.ray
def test_two_devices_in_one_command_match_a_local_build(farm, two_device_build, tmp_path, capsys):
    tables = {}
    for device in ("phone-a", "phone-b"):
        result = two_device_build[device]
        table = LatencyTable.load(result["path"])
        tables[device] = table
        # the keys of a local build of the same space
        local_path = tmp_path / f"local-{device}.json"
        rc, _, err = _run(capsys, "table", "build", "--device", device, "--space", "darts", "--out", str(local_path))
        assert rc == 0, err
        local = LatencyTable.load(local_path)
        assert set(table.rows) == set(local.rows) and len(table) == 9
        assert result["measured_now"] == 9 and table.space == "darts"
        # the fingerprint is the one the serving node computes for itself (same code, same fake phone)
        node_fp = get_backend("fake", device=device).fingerprint().to_dict()
        assert table.fingerprint == node_fp
        assert table.fingerprint_id == local.fingerprint_id == load_profile(device).fingerprint["id"]
        # the fake device is deterministic: node and local medians agree within the injected 2% noise
        for key, row in table.rows.items():
            assert row["median_ms"] == pytest.approx(local.rows[key]["median_ms"], rel=0.03)
    assert tables["phone-a"].fingerprint_id != tables["phone-b"].fingerprint_id
    served_a = {r["farm_node"] for r in tables["phone-a"].rows.values()}
    served_b = {r["farm_node"] for r in tables["phone-b"].rows.values()}
    assert served_a <= {farm.ids["a1"], farm.ids["a2"]} and served_b == {farm.ids["b1"]}


@pytest.mark.ray
def test_mismatching_node_is_refused_and_holds_no_row(farm, two_device_build):
    result = two_device_build["phone-a"]
    refused = {r["node"]: r["reason"] for r in result["refused"]}
    z_fp = get_backend("fake", device="phone-z").fingerprint().id
    assert set(refused) == {farm.ids["z1"]}
    assert z_fp in refused[farm.ids["z1"]] and load_profile("phone-a").fingerprint["id"] in refused[farm.ids["z1"]]
    table = json.loads(Path(result["path"]).read_text())
    assert all(row["farm_node"] != farm.ids["z1"] for row in table["rows"].values())
    assert table["source"]["farm"]["refused"][0]["node"] == farm.ids["z1"]
    assert two_device_build["phone-b"]["refused"] == []


@pytest.mark.ray
def test_resume_measures_only_missing_rows(farm, tmp_path, capsys):
    ops = get_space("darts").vocabulary
    path = tmp_path / "b.json"
    build_table(get_backend("fake", device="phone-b"), ops[:4], path, space="darts")
    before = json.loads(path.read_text())["rows"]
    rc, out, err = _run(
        capsys, "table", "build", "--cluster", farm.address, "--device", "phone-b", "--space", "darts",
        "--out", str(path), "--resume", "--json",
    )  # fmt: skip
    assert rc == 0, err
    result = json.loads(out)
    assert result["measured_now"] == 5 and result["already_there"] == 4 and result["rows"] == 9
    after = json.loads(path.read_text())["rows"]
    assert all(after[k] == before[k] for k in before)
    rc, _, err = _run(
        capsys,
        "table",
        "build",
        "--cluster",
        farm.address,
        "--device",
        "phone-b",
        "--space",
        "darts",
        "--out",
        str(path),
    )
    assert rc == 2 and "--resume" in err


@pytest.mark.ray
def test_sampled_ops_and_timing_options_reach_the_nodes(farm, tmp_path, capsys):
    path = tmp_path / "sampled.json"
    rc, _, err = _run(
        capsys, "table", "build", "--cluster", farm.address, "--device", "phone-b", "--sample", "6",
        "--drift", "none", "--out", str(path), "--json",
    )  # fmt: skip
    assert rc == 0, err
    table = LatencyTable.load(path)
    assert len(table) == 6 and table.space == "sampled-6-seed0" and table.timing["drift"] == "none"
    assert {r["drift_factor"] for r in table.rows.values()} == {1.0}
    rc, _, err = _run(capsys, "table", "build", "--cluster", farm.address, "--device", "phone-b", "--drift", "bogus")
    assert rc == 2 and "--drift must be one of" in err


@pytest.mark.ray
def test_bad_input_is_one_line_and_keeps_files(farm, tmp_path, capsys):
    assert main(["profile", "fake", "--set", "device=phone-c", "--name", "phone-c"]) == 0
    path = tmp_path / "c.json"
    build_table(get_backend("fake", device="phone-c"), get_space("darts").vocabulary[:3], path, space="darts")
    before = path.read_bytes()
    cases = {
        "serves device 'phone-c'": ["--cluster", farm.address, "--device", "phone-c"],
        "cannot reach": ["--cluster", "127.0.0.1:1", "--device", "phone-c"],
        "unknown device": ["--cluster", farm.address, "--device", "no-such-phone"],
    }
    for needle, args in cases.items():
        rc, _, err = _run(capsys, "table", "build", *args, "--space", "darts", "--out", str(path), "--resume")
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and needle in lines[0], (needle, err)
        assert path.read_bytes() == before
    rc, _, err = _run(capsys, "farm", "status", "--address", "127.0.0.1:1")
    assert rc == 2 and "cannot reach" in err


@pytest.mark.ray
@pytest.mark.slow  # a real `ray start` node: about 15 s here
def test_join_starts_a_node_serving_the_device(farm, tmp_path, capsys):
    from latbench.farm.node import join_command

    # refused before anything starts: unreachable head, and a host that is not the device
    rc, _, err = _run(capsys, "farm", "join", "--device", "phone-b", "--address", "127.0.0.1:1")
    assert rc == 2 and "cannot reach" in err
    rc, _, err = _run(capsys, "farm", "join", "--device", "phone-b", "--address", farm.address, "--set", "device=x")
    assert rc == 2 and "does not match device profile 'phone-b'" in err
    # the exact `ray start` command `farm join` runs, kept in the foreground so the test can stop it
    argv, env = join_command(farm.address, load_profile("phone-b"), block=True)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            rc, out, _ = _run(capsys, "farm", "status", "--address", farm.address, "--json")
            phone_b = next(d for d in json.loads(out)["devices"] if d["device"] == "phone-b")
            if phone_b["nodes"] == 2:
                break
            time.sleep(1)
        assert phone_b["nodes"] == 2 and phone_b["matching"] == 2
        joined = next(n for n in phone_b["node_list"] if n["node"] != farm.ids["b1"])
        assert joined["profile_source"] == "node" and joined["fingerprint"] == load_profile("phone-b").fingerprint["id"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.ray
def test_remote_trials_equal_local_trials_and_fill_every_worker(farm, tmp_path):
    """Trials are seeded by (seed, trial id): a trial's accuracy must not depend on the worker that ran it."""
    from latbench.farm.search import RayExecutor, cluster_executor
    from latbench.predict.lut import TableLatency
    from latbench.search.mnas import make_evaluator, make_problem
    from latbench.search.mnas.evaluators.base import ArchBatch

    space = get_space("proxyless-mobile")
    table, _ = build_table(get_backend("fake"), space.vocabulary, tmp_path / "t.json")
    problem = make_problem(space, TableLatency(table).compile(space), 20.0)
    opts = {"max_train": 160, "epochs": 1}
    idx = space.sample_indices(np.random.default_rng(7), 2)
    batch = ArchBatch(space, idx, np.array([10, 11]), problem.latency.predict_indices(idx))
    with cluster_executor(farm.address) as factory:
        ex = factory(make_evaluator("train", opts), problem, 5)
        assert ex.capacity == 2 and ex.resources == {"num_cpus": 1.0, "num_gpus": 0.0}
        ex.submit(batch)
        got: dict[int, float] = {}
        while len(got) < 2:
            for sub, res in ex.collect():
                got.update(zip(sub.trials.tolist(), res.accuracy.tolist(), strict=True))
        assert set(ex.trials_by_node) == {farm.ids["b1"], farm.ids["z1"]}  # both workers took trials
        with pytest.raises(FarmError, match="less than one trial needs"):
            RayExecutor(farm.ray, make_evaluator("train", opts), problem, 5, num_cpus=4)
    local = make_evaluator("train", opts)
    local.setup(problem, 5)
    want = local.evaluate(batch)
    for trial, acc in zip(batch.trials.tolist(), want.accuracy.tolist(), strict=True):
        assert got[trial] == pytest.approx(acc, abs=1e-6) and 0.0 < acc <= 1.0


@pytest.mark.ray
def test_search_mnas_cluster_refuses_what_it_cannot_farm_out(farm, tmp_path, capsys):
    table = tmp_path / "fake-proxyless.json"
    build_table(get_backend("fake"), get_space("proxyless-mobile").vocabulary, table, space="proxyless-mobile")
    # a learning screen cannot be farmed out: one line, before any run folder is made
    rc, _, err = _run(
        capsys, "search", "mnas", "--table", str(table), "--target", "20ms", "--evaluator", "train",
        "--acc-predictor", "--trials", "2", "--runs-dir", str(tmp_path / "runs"), "--cluster", farm.address,
    )  # fmt: skip
    assert rc == 2 and "--acc-predictor" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    rc, _, err = _run(capsys, "search", "mnas", "--table", str(table), "--target", "20ms", "--cluster", "127.0.0.1:1")
    assert rc == 2 and "cannot reach" in err and not (tmp_path / "runs").exists()


@pytest.mark.ray
@pytest.mark.slow  # starts torch in two Ray workers and trains: about 15-20 s on a loaded 2-core machine
def test_search_mnas_cluster_runs_train_trials_on_every_worker(farm, tmp_path, capsys):
    table = tmp_path / "fake-proxyless.json"
    build_table(get_backend("fake"), get_space("proxyless-mobile").vocabulary, table, space="proxyless-mobile")
    rc, out, err = _run(
        capsys, "search", "mnas", "--table", str(table), "--target", "20ms", "--strategy", "evolution",
        "--population", "2", "--evaluator", "train", "--evaluator-opt", "max_train=160", "--epochs", "1",
        "--trials", "4", "--no-measure", "--no-onnx", "--runs-dir", str(tmp_path / "runs"), "--run-id", "farm",
        "--cluster", farm.address,
    )  # fmt: skip
    assert rc == 0, err
    assert "trials   4 (0 failed)" in out
    assert "2 trial(s) at once on the cluster" in err and "4 trial(s) ran on 2 node(s), 0 lost" in err
    a = History.from_csv(get_space("proxyless-mobile"), (tmp_path / "runs/farm/history.csv").read_text()).arrays()
    assert len(a["trial"]) == 4 and ((a["accuracy"] > 0) & (a["accuracy"] <= 1)).all()


@pytest.mark.ray
def test_killed_node_loses_only_its_current_op(farm, capsys):
    """Runs last: it kills node a2. The build ends complete; the file is valid JSON at every moment."""
    path = farm.home / "tables" / "phone-a" / "proxyless-mobile.json"
    done: dict[str, Any] = {}

    def build() -> None:
        done["rc"] = main(["table", "build", "--cluster", farm.address, "--device", "phone-a"])

    first_seen: dict[str, Any] = {}
    polls, changed, killed_at = 0, [], None
    t = threading.Thread(target=build)
    t.start()
    while t.is_alive():
        if path.exists():
            doc = json.loads(path.read_text(), object_pairs_hook=_no_duplicate_keys)  # never a torn file
            polls += 1
            for key, row in doc["rows"].items():
                if first_seen.setdefault(key, row) != row:
                    changed.append(key)
            if killed_at is None and len(doc["rows"]) >= 8:
                farm.cluster.remove_node(farm.nodes["a2"], allow_graceful=False)
                killed_at = len(doc["rows"])
        time.sleep(0.01)
    t.join()
    err = capsys.readouterr().err
    assert done["rc"] == 0, err
    assert killed_at is not None and polls > 20 and changed == []
    table = LatencyTable.load(path)
    vocab = get_space("proxyless-mobile").vocabulary
    assert set(table.rows) == {o.key for o in vocab}
    farm_info = table.source["farm"]
    by_node = farm_info["rows_by_node"]
    assert sum(by_node.values()) == len(vocab)  # every op written once
    assert by_node[farm.ids["a2"]] >= killed_at // 2 and by_node[farm.ids["a1"]] > 0
    assert len(farm_info["lost"]) <= 1 and all(lost["node"] == farm.ids["a2"] for lost in farm_info["lost"])
    for lost in farm_info["lost"]:
        assert table.rows[lost["op"]]["farm_node"] == farm.ids["a1"]  # redone on the surviving node
        assert "was lost" in err
    assert "refused for phone-a" in err  # the impostor, in the human output
