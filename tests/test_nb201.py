"""NAS-Bench-201 space: index order, strings, isomorphism classes, the network, its op rows, ONNX."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from latbench.errors import ArchError
from latbench.spaces import get_space, space_of
from latbench.spaces.nb201 import (
    EDGE_NAMES,
    NUM_ARCHS,
    NUM_BENCHMARK_UNIQUE_STRS,
    NUM_ISOMORPHISM_CLASSES,
    benchmark_unique_str,
    function_key,
    index_order,
    isomorphism_classes,
    ops_to_str,
    str_to_ops,
)

PUBLISHED = Path(__file__).resolve().parents[1] / "datasets" / "nb201" / "published-13.csv"


def test_index_order_matches_the_published_csv_for_all_archs() -> None:
    with PUBLISHED.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == NUM_ARCHS == 15625
    order = index_order()
    assert [int(r["index"]) for r in rows] == list(range(NUM_ARCHS))
    assert [r["arch"] for r in rows] == [ops_to_str(o) for o in order]
    assert (
        rows[0]["arch"]
        == "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    )


def test_round_trip_index_string_arch_json_for_all() -> None:
    s = get_space("nb201")
    seen = set()
    for i in range(NUM_ARCHS):
        arch = s.arch_from_index(i)
        text = s.arch_str(arch)
        assert s.index_of(s.arch_from_str(text)) == i
        assert str_to_ops(text) == tuple(arch["choices"][n] for n in EDGE_NAMES)
        seen.add(text)
    assert len(seen) == NUM_ARCHS
    # the JSON form survives space_of (the arch is self-describing)
    a = s.arch_from_index(1234)
    assert space_of(a).index_of(a) == 1234


def test_bad_strings_and_indices_are_one_line_errors() -> None:
    s = get_space("nb201")
    with pytest.raises(ArchError, match="not a NAS-Bench-201 arch string"):
        s.arch_from_str("|conv~0|+|")
    with pytest.raises(ArchError, match="unknown NAS-Bench-201 op 'sep_conv_3x3'"):
        s.arch_from_str("|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ArchError, match=r"0\.\.15624"):
        s.arch_from_index(15625)


def test_isomorphism_classes() -> None:
    classes = isomorphism_classes()
    assert len(classes) == NUM_ISOMORPHISM_CLASSES == 4930
    assert sum(len(v) for v in classes.values()) == NUM_ARCHS
    # the benchmark's own unique-string hash (keeps zero terms, nests sums) is coarser-grained: 6466
    assert len({benchmark_unique_str(o) for o in index_order()}) == NUM_BENCHMARK_UNIQUE_STRS == 6466
    s = get_space("nb201")
    # every cell without a path from input to output computes zero: one class, represented by all-none
    dead = s.arch_from_str("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
    assert s.arch_str(s.canonical(dead)) == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    # nodes 1 and 2 swapped, no edge between them: the same function
    a = str_to_ops("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|skip_connect~1|nor_conv_1x1~2|")
    b = str_to_ops("|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|nor_conv_1x1~1|skip_connect~2|")
    assert function_key(a) == function_key(b)
    # a skip chain 0 -> 1 -> 3 equals the direct skip 0 -> 3
    c = str_to_ops("|skip_connect~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")
    d = str_to_ops("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert function_key(c) == function_key(d)
    # but conv 3x3 vs conv 1x1 differ
    e = str_to_ops("|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|")
    f = str_to_ops("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|")
    assert function_key(e) != function_key(f)
    # representatives do the least work within their class
    for members in list(classes.values())[:200]:
        works = [sum(o != "none" for o in index_order()[i]) for i in members]
        assert works[0] == min(works)


def test_torch_module_uses_the_space_edge_order() -> None:
    from latbench.spaces.nb201 import NB201_EDGES
    from latbench.torch_nb201 import NB201_EDGES as TORCH_EDGES

    assert TORCH_EDGES == NB201_EDGES


def test_parameter_count_matches_the_benchmark() -> None:
    s = get_space("nb201", num_classes=10)
    arch = s.arch({n: "nor_conv_3x3" for n in EDGE_NAMES})
    model = s.build(arch)
    n = sum(p.numel() for p in model.parameters())
    assert n == s.params_count(arch) == 1_531_546  # the benchmark's published 1.53 M
    assert round(n / 1e6, 2) == 1.53


def _conv_and_pool_calls(model: torch.nn.Module, x: torch.Tensor) -> Counter:
    seen: Counter = Counter()
    hooks = []

    def conv_hook(m: torch.nn.Conv2d, inp: tuple[torch.Tensor], _: torch.Tensor) -> None:
        seen[("conv", inp[0].shape[-1], m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0])] += 1

    def pool_hook(m: torch.nn.AvgPool2d, inp: tuple[torch.Tensor], _: torch.Tensor) -> None:
        seen[("avg_pool", inp[0].shape[-1], inp[0].shape[1], inp[0].shape[1], m.kernel_size, m.stride)] += 1

    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, torch.nn.AvgPool2d):
            hooks.append(mod.register_forward_hook(pool_hook))
    with torch.inference_mode():
        out = model(x)
    for h in hooks:
        h.remove()
    return seen, out


@pytest.mark.parametrize("index", [0, 1, 6, 10, 4444])
def test_ops_of_lists_what_the_network_runs(index: int) -> None:
    s = get_space("nb201")
    arch = s.arch_from_index(index)
    seen, out = _conv_and_pool_calls(s.build(arch), torch.randn(*s.input_shape))
    assert out.shape == (1, 100)
    want: Counter = Counter()
    for op in s.ops_of(arch):
        if op.type in ("conv", "avg_pool"):
            want[(op.type, op.hw, op.cin, op.cout, op.kernel, op.stride)] += 1
    assert seen == want
    # every edge op once per cell (15 cells), plus the fixed stem, reductions and classifier
    edges = [o for o in s.ops_of(arch, include_free=True) if o.type in ("zero", "skip_connect") or o.cin == o.cout]
    assert len(s.ops_of(arch, include_free=True)) == 1 + 15 * 6 + 2 * 4 + 1
    assert len(edges) >= 15 * 6


def test_op_ids_and_vocabulary() -> None:
    s = get_space("nb201")
    assert len(s.vocabulary) == 20  # 3 stages x (skip, conv1x1, conv3x3, pool) + stem + 2 x 3 reduction rows + head
    idx = np.array([s.to_indices(s.arch_from_index(i)) for i in range(0, NUM_ARCHS, 97)])
    for row, ids in zip(idx, s.op_ids(idx), strict=True):
        assert [s.vocabulary[i].key for i in ids if i >= 0] == [o.key for o in s.ops_of(s.from_indices(row))]


def test_onnx_export_runs_under_onnxruntime(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from latbench.export import WEIGHT_SEED, export_arch

    s = get_space("nb201")
    for i in (0, 3, 1234):
        arch = s.arch_from_index(i)
        path = export_arch(arch, tmp_path / f"a{i}.onnx")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal(s.input_shape).astype(np.float32)
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(WEIGHT_SEED)
            model = s.build(arch)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        assert y.shape == (1, 100) and np.allclose(y, ref, rtol=1e-3, atol=1e-4)
