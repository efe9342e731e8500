"""Split any ONNX model into the kernels a latency predictor knows.

Like nn-Meter's kernel detection, the graph is cut where a deployed runtime
would cut it:

* ``Conv`` (+ ``BatchNormalization``) (+ activation: ``Relu``, ``Clip(0, 6)``,
  ``HardSwish`` or ``x * HardSigmoid(x)``) is one ``conv`` kernel; a grouped
  conv with ``group == channels`` is a depthwise conv;
* ``[1x1 conv + act] -> depthwise conv + act -> [SE] -> 1x1 conv [+ Add of the
  block input]`` is one ``mbconv`` kernel (inverted residual), the SE pattern
  being ``ReduceMean/GlobalAveragePool -> 1x1 conv + Relu -> 1x1 conv +
  HardSigmoid -> Mul``;
* ``[ReduceMean/GlobalAveragePool] -> [Flatten/Reshape] -> Gemm`` (or
  ``MatMul [+ Add]``) is a ``classifier``; ``GlobalAveragePool`` alone is
  ``gap``; ``MaxPool`` / ``AveragePool`` are pools;
* standalone elementwise nodes (``Add``, ``Mul``, ``Concat``, activations...)
  are ``elementwise`` kernels; view-only nodes (``Identity``, ``Flatten``,
  ``Reshape``, ``Constant``...) are free;
* every other node type is listed as *unknown*, never silently dropped.

Each predictable kernel carries the :class:`~latbench.ops.OpSpec` it runs, so
the same predictor that prices a search-space arch prices an arbitrary ONNX
model; a kernel whose shape does not map exactly onto an OpSpec says so in
``note``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.ops import OpSpec, make_divisible

FREE_TYPES = {
    "Identity",
    "Constant",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Dropout",
    "Shape",
    "ConstantOfShape",
}
ELEMENTWISE_TYPES = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "Relu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Sigmoid",
    "Tanh",
    "LeakyRelu",
    "Softmax",
    "Transpose",
    "Pad",
    "Slice",
    "Split",
    "Resize",
    "Neg",
    "Sqrt",
    "Pow",
    "Exp",
    "BatchNormalization",
    "Max",
    "Min",
}
ACT_TYPES = {"Relu", "Clip", "HardSwish", "HardSigmoid"}


@dataclass
class Kernel:
    """One kernel of an ONNX graph: the nodes it fuses and (when predictable) the op it runs."""

    kind: str  # conv, mbconv, classifier, gap, max_pool, avg_pool, elementwise, free, unknown
    nodes: list[str]
    op_types: list[str]
    spec: OpSpec | None = None
    note: str = ""
    shape: tuple[int, ...] | None = None  # output shape, for elementwise kernels
    bytes_moved: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "nodes": self.nodes,
            "op_types": self.op_types,
            "op": self.spec.key if self.spec else None,
            "note": self.note,
        }


@dataclass
class OnnxSplit:
    """The kernels of one ONNX model, in graph order, plus what could not be mapped."""

    path: str
    input_shape: tuple[int, ...]
    kernels: list[Kernel] = field(default_factory=list)

    @property
    def ops(self) -> list[OpSpec]:
        return [k.spec for k in self.kernels if k.spec is not None]

    @property
    def unknown(self) -> dict[str, int]:
        """Node types no kernel pattern covers, with their counts."""
        return dict(Counter(t for k in self.kernels if k.kind == "unknown" for t in k.op_types))

    @property
    def elementwise(self) -> list[Kernel]:
        return [k for k in self.kernels if k.kind == "elementwise"]


class _Graph:
    def __init__(self, model: Any) -> None:
        import onnx
        from onnx import numpy_helper

        self.graph = model.graph
        self.nodes = list(model.graph.node)
        self.init: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for n in self.nodes:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.init[n.output[0]] = numpy_helper.to_array(a.t)
        self.shapes: dict[str, tuple[int, ...]] = {}
        for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
            dims = vi.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
        for name, arr in self.init.items():
            self.shapes.setdefault(name, tuple(arr.shape))
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in model.graph.output}
        self.attr = {id(n): {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in self.nodes}

    def single_consumer(self, tensor: str) -> Any | None:
        c = self.consumers.get(tensor, [])
        return c[0] if len(c) == 1 and tensor not in self.outputs else None

    def clip_is_relu6(self, node: Any) -> bool:
        a = self.attr[id(node)]
        lo = a.get("min")
        hi = a.get("max")
        if len(node.input) > 1 and node.input[1] in self.init:
            lo = float(np.ravel(self.init[node.input[1]])[0])
        if len(node.input) > 2 and node.input[2] in self.init:
            hi = float(np.ravel(self.init[node.input[2]])[0])
        return lo is not None and hi is not None and abs(lo) < 1e-6 and abs(hi - 6.0) < 1e-6


@dataclass
class _ConvUnit:
    nodes: list[Any]
    inp: str
    out: str
    cin: int
    cout: int
    kernel: int
    stride: int
    groups: int
    dilation: int
    act: str  # relu, relu6, hswish, hsigmoid, none
    in_shape: tuple[int, ...]
    note: str = ""

    @property
    def pointwise(self) -> bool:
        return self.kernel == 1 and self.groups == 1 and self.stride == 1

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.cin == self.cout


def _act_after(g: _Graph, tensor: str) -> tuple[str, list[Any], str]:
    """The activation fused after ``tensor`` (name, its nodes, the tensor after it)."""
    nxt = g.single_consumer(tensor)
    if nxt is None:
        # x * HardSigmoid(x): the tensor feeds both the HardSigmoid and the Mul
        cons = g.consumers.get(tensor, [])
        if len(cons) == 2 and tensor not in g.outputs:
            hs = next((c for c in cons if c.op_type == "HardSigmoid"), None)
            mul = next((c for c in cons if c.op_type == "Mul"), None)
            if (
                hs is not None
                and mul is not None
                and hs.output[0] in mul.input
                and g.single_consumer(hs.output[0]) is mul
            ):
                return "hswish", [hs, mul], mul.output[0]
        return "none", [], tensor
    if nxt.op_type == "Relu":
        return "relu", [nxt], nxt.output[0]
    if nxt.op_type == "Clip" and g.clip_is_relu6(nxt):
        return "relu6", [nxt], nxt.output[0]
    if nxt.op_type == "HardSwish":
        return "hswish", [nxt], nxt.output[0]
    if nxt.op_type == "HardSigmoid":
        return "hsigmoid", [nxt], nxt.output[0]
    return "none", [], tensor


def _conv_unit(g: _Graph, node: Any) -> _ConvUnit | None:
    a = g.attr[id(node)]
    w = g.shapes.get(node.input[1]) if len(node.input) > 1 else None
    x = g.shapes.get(node.input[0])
    if w is None or x is None or len(w) != 4 or len(x) != 4:
        return None
    ks = list(a.get("kernel_shape", w[2:]))
    strides = list(a.get("strides", [1, 1]))
    dil = list(a.get("dilations", [1, 1]))
    groups = int(a.get("group", 1))
    note = ""
    if len(set(ks)) > 1 or len(set(strides)) > 1 or len(set(dil)) > 1 or x[2] != x[3]:
        note = f"non-square conv (kernel {ks}, stride {strides}, input {x[2]}x{x[3]}) priced as square"
    nodes = [node]
    out = node.output[0]
    nxt = g.single_consumer(out)
    if nxt is not None and nxt.op_type == "BatchNormalization":
        nodes.append(nxt)
        out = nxt.output[0]
    act, act_nodes, out = _act_after(g, out)
    nodes += act_nodes
    return _ConvUnit(
        nodes,
        node.input[0],
        out,
        int(x[1]),
        int(w[0]),
        int(max(ks)),
        int(max(strides)),
        groups,
        int(max(dil)),
        act,
        tuple(x),
        note,
    )


def _is_global_pool(g: _Graph, node: Any) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    if node.op_type != "ReduceMean":
        return False
    axes = g.attr[id(node)].get("axes")
    if axes is None and len(node.input) > 1 and node.input[1] in g.init:
        axes = np.ravel(g.init[node.input[1]]).tolist()
    shape = g.shapes.get(node.input[0])
    return axes is not None and shape is not None and len(shape) == 4 and sorted(int(x) % 4 for x in axes) == [2, 3]


def _expand_for(cin: int, mid: int) -> tuple[float, str]:
    """The expand ratio latbench would write for an MBConv of ``cin -> mid`` channels."""
    for e in (mid / cin, 1, 2, 3, 4, 6, 8):
        if e != 1 and make_divisible(cin * e, 8) == mid:
            return float(e), ""
    return mid / cin, f"middle width {mid} is not latbench's rounding of {cin} x {mid / cin:g}"


#: operator-set domains whose ops latbench can price (anything else is a custom op)
STANDARD_DOMAINS = ("", "ai.onnx")


def check_predictable(model: Any, p: Path) -> None:
    """Refuse, in one line, an ONNX model whose latency a predictor cannot give: no graph, an opset newer than
    the installed onnx knows, custom-domain ops, inputs without a fixed shape or with a zero-sized dimension.

    Without this a model with a symbolic or zero batch predicts "0.000 ms" (nothing matched), which reads
    like an answer.
    """
    import onnx

    if not model.graph.node:
        raise LatbenchError(f"{p}: the ONNX graph has no nodes; give an exported model")
    known = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in STANDARD_DOMAINS and imp.version > known:
            raise LatbenchError(
                f"{p}: uses ONNX opset {imp.version}, newer than this onnx knows ({known}); re-export with "
                f"opset <= {known} or upgrade onnx"
            )
    custom = sorted({f"{n.domain}:{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        shown = ", ".join(custom[:5]) + (f" and {len(custom) - 5} more" if len(custom) > 5 else "")
        raise LatbenchError(f"{p}: custom (non-ONNX) ops cannot be priced: {shown}")
    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if not inputs:
        raise LatbenchError(f"{p}: the ONNX graph has no inputs")
    for inp in inputs:
        dims = inp.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        if not dims or any(not d.HasField("dim_value") for d in dims):
            raise LatbenchError(
                f"{p}: input {inp.name!r} has no fixed shape ({shape}); export the model with a fixed input "
                "shape (e.g. batch 1) to predict it"
            )
        if any(d.dim_value <= 0 for d in dims):
            raise LatbenchError(f"{p}: input {inp.name!r} has shape {shape} with a dimension <= 0 (batch 0?)")


def split_onnx(path: str | Path) -> OnnxSplit:
    """Kernels of the ONNX model at ``path`` (shapes inferred; one clear line when the file is not ONNX)."""
    import onnx

    p = Path(path)
    if not p.exists():
        raise LatbenchError(f"ONNX file not found: {p}")
    if not p.is_file() or p.stat().st_size == 0:
        raise LatbenchError(f"{p}: empty or not a file; give an ONNX model")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # onnx raises DecodeError / others
        raise LatbenchError(f"{p}: not a readable ONNX model ({type(exc).__name__})") from None
    check_predictable(model, p)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # InferenceError / ValidationError / others
        first = " ".join(str(exc).split())[:200]
        raise LatbenchError(f"{p}: ONNX shape inference failed ({type(exc).__name__}: {first})") from None
    g = _Graph(model)
    init_names = set(g.init)
    real_inputs = [i for i in model.graph.input if i.name not in init_names]
    in_shape = g.shapes.get(real_inputs[0].name, ()) if real_inputs else ()
    split = OnnxSplit(str(p), tuple(in_shape))
    used: set[int] = set()
    units: dict[int, _ConvUnit] = {}
    for n in g.nodes:
        if n.op_type == "Conv":
            u = _conv_unit(g, n)
            if u is not None:
                units[id(n)] = u

    def take(nodes: list[Any]) -> None:
        used.update(id(x) for x in nodes)

    def unit_at(tensor: str) -> _ConvUnit | None:
        c = g.single_consumer(tensor)
        return units.get(id(c)) if c is not None and id(c) not in used else None

    for n in g.nodes:
        if id(n) in used:
            continue
        if n.op_type == "Conv" and id(n) in units:
            found = _match_mbconv(g, units[id(n)], unit_at) or _conv_kernel(units[id(n)])
            kernel, node_objs = found
            take(node_objs)
            split.kernels.append(kernel)
            continue
        if n.op_type in ("Gemm", "MatMul"):
            split.kernels.append(_classifier_kernel(g, n, used))
            continue
        if n.op_type == "Relu":
            chains = _match_darts(g, n, units, unit_at)
            for kernel, node_objs in chains:
                take(node_objs)
                split.kernels.append(kernel)
            if chains:
                continue
        if _is_global_pool(g, n):
            cls = _pool_then_gemm(g, n)
            if cls is not None:
                split.kernels.append(_classifier_kernel(g, cls, used))
                continue
            shape = g.shapes.get(n.input[0])
            take([n])
            if shape and len(shape) == 4:
                spec = OpSpec("gap", int(shape[2]), int(shape[1]), int(shape[1]), act="none", batch=int(shape[0]))
                split.kernels.append(Kernel("gap", [n.name], [n.op_type], spec))
            else:
                split.kernels.append(Kernel("unknown", [n.name], [n.op_type], note="global pool of unknown shape"))
            continue
        if n.op_type in ("MaxPool", "AveragePool"):
            take([n])
            split.kernels.append(_pool_kernel(g, n))
            continue
        take([n])
        if n.op_type in FREE_TYPES:
            split.kernels.append(Kernel("free", [n.name], [n.op_type]))
        elif n.op_type in ELEMENTWISE_TYPES:
            out_shape = g.shapes.get(n.output[0])
            moved = sum(math.prod(g.shapes.get(t, (0,))) for t in [*n.input, n.output[0]] if t and t not in g.init)
            split.kernels.append(
                Kernel("elementwise", [n.name], [n.op_type], shape=out_shape, bytes_moved=4 * int(moved))
            )
        else:
            split.kernels.append(Kernel("unknown", [n.name], [n.op_type]))
    return split


def _conv_kernel(u: _ConvUnit) -> tuple[Kernel, list[Any]]:
    act = u.act
    note = u.note
    if act == "hsigmoid":
        act, note = "hswish", (note + "; " if note else "") + "hard-sigmoid activation priced as h-swish"
    b, _, hw, _ = u.in_shape
    try:
        spec = OpSpec(
            "conv",
            int(hw),
            u.cin,
            u.cout,
            kernel=u.kernel,
            stride=u.stride,
            groups=u.groups,
            dilation=u.dilation,
            act=act,
            batch=int(b),
        )
    except LatbenchError as exc:
        return Kernel("unknown", [x.name for x in u.nodes], [x.op_type for x in u.nodes], note=str(exc)), u.nodes
    return Kernel("conv", [x.name for x in u.nodes], [x.op_type for x in u.nodes], spec, note), u.nodes


def _match_mbconv(g: _Graph, first: _ConvUnit, unit_at: Any) -> tuple[Kernel, list[Any]] | None:
    """An inverted-residual block starting at ``first``, or ``None``."""
    nodes: list[Any] = []
    expand = None
    if first.pointwise and first.act not in ("none", "hsigmoid"):
        dw = unit_at(first.out)
        if dw is None or not dw.depthwise or dw.cin != first.cout:
            return None
        expand = first
    elif first.depthwise and first.act not in ("none", "hsigmoid"):
        dw = first
    else:
        return None
    if expand is not None:
        nodes += expand.nodes
        if expand.act != dw.act:
            return None
    nodes += dw.nodes
    block_in = (expand or dw).inp
    se = False
    se_note = ""
    after = dw.out
    cons = g.consumers.get(dw.out, [])
    if len(cons) == 2:
        pool = next((c for c in cons if _is_global_pool(g, c)), None)
        mul = next((c for c in cons if c.op_type == "Mul"), None)
        if pool is None or mul is None:
            return None
        red = unit_at(pool.output[0])
        if red is None or red.kernel != 1:
            return None
        exp = unit_at(red.out)
        if exp is None or exp.kernel != 1 or exp.act != "hsigmoid" or g.single_consumer(exp.out) is not mul:
            return None
        nodes += [pool, *red.nodes, *exp.nodes, mul]
        se = True
        if red.cout != make_divisible(dw.cout // 4, 8):
            se_note = f"SE width {red.cout} differs from latbench's {make_divisible(dw.cout // 4, 8)}"
        after = mul.output[0]
    elif len(cons) != 1:
        return None
    proj = unit_at(after)
    if proj is None or not proj.pointwise or proj.act != "none":
        return None
    nodes += proj.nodes
    mid = dw.cin
    cin = (expand or dw).cin
    if expand is None:
        e, note = 1.0, ""
    else:
        e, note = _expand_for(cin, mid)
    b, _, hw, _ = (expand or dw).in_shape
    act = dw.act
    try:
        spec = OpSpec(
            "mbconv",
            int(hw),
            cin,
            proj.cout,
            kernel=dw.kernel,
            stride=dw.stride,
            expand=e,
            act=act,
            se=se,
            batch=int(b),
        )
    except LatbenchError:
        return None
    out = proj.out
    add = g.single_consumer(out)
    if add is not None and add.op_type == "Add" and block_in in add.input and spec.residual:
        nodes.append(add)
    elif spec.residual:
        note = (note + "; " if note else "") + "block without its residual add priced as one with it"
    notes = "; ".join(x for x in (note, se_note, dw.note) if x)
    return Kernel("mbconv", [x.name for x in nodes], [x.op_type for x in nodes], spec, notes), nodes


def _match_darts(g: _Graph, relu: Any, units: dict[int, _ConvUnit], unit_at: Any) -> list[tuple[Kernel, list[Any]]]:
    """DARTS separable / dilated convs fed by ``relu``: ``Relu -> dw -> pw [-> Relu -> dw -> pw]``.

    BN is folded into the pw convs. The exporter merges the identical ReLUs of
    several edges reading one state into one node: every chain hanging off it
    is one kernel (the shared ReLU is counted in the first).
    """
    out: list[tuple[Kernel, list[Any]]] = []
    for cons in g.consumers.get(relu.output[0], []):
        dw1 = units.get(id(cons))
        if dw1 is None or not dw1.depthwise or dw1.act != "none":
            continue
        pw1 = unit_at(dw1.out)
        if pw1 is None or pw1.kernel != 1 or pw1.groups != 1 or pw1.stride != 1:
            continue
        b, _, hw, _ = dw1.in_shape
        nodes = [*dw1.nodes, *pw1.nodes]
        if dw1.dilation > 1 and pw1.act == "none":
            spec = OpSpec(
                "dil_conv",
                int(hw),
                dw1.cin,
                pw1.cout,
                kernel=dw1.kernel,
                stride=dw1.stride,
                dilation=dw1.dilation,
                act="relu",
                batch=int(b),
            )
        else:
            if dw1.dilation != 1 or pw1.act != "relu" or pw1.cout != dw1.cin:
                continue
            dw2 = unit_at(pw1.out)
            if dw2 is None or not dw2.depthwise or dw2.act != "none" or dw2.stride != 1 or dw2.kernel != dw1.kernel:
                continue
            pw2 = unit_at(dw2.out)
            if pw2 is None or pw2.kernel != 1 or pw2.groups != 1 or pw2.act != "none":
                continue
            nodes += [*dw2.nodes, *pw2.nodes]
            spec = OpSpec(
                "sep_conv", int(hw), dw1.cin, pw2.cout, kernel=dw1.kernel, stride=dw1.stride, act="relu", batch=int(b)
            )
        if not out:
            nodes.insert(0, relu)
        out.append((Kernel(spec.type, [x.name for x in nodes], [x.op_type for x in nodes], spec), nodes))
    return out


def _pool_then_gemm(g: _Graph, pool: Any) -> Any | None:
    nxt = g.single_consumer(pool.output[0])
    while nxt is not None and nxt.op_type in ("Flatten", "Reshape", "Squeeze"):
        nxt = g.single_consumer(nxt.output[0])
    return nxt if nxt is not None and nxt.op_type in ("Gemm", "MatMul") else None


def _classifier_kernel(g: _Graph, gemm: Any, used: set[int]) -> Kernel:
    nodes = [gemm]
    w = g.shapes.get(gemm.input[1])
    x_name = gemm.input[0]
    prev = g.producer.get(x_name)
    while prev is not None and prev.op_type in ("Flatten", "Reshape", "Squeeze") and id(prev) not in used:
        nodes.insert(0, prev)
        x_name = prev.input[0]
        prev = g.producer.get(x_name)
    hw = 1
    cin = None
    batch = 1
    if prev is not None and _is_global_pool(g, prev) and id(prev) not in used:
        nodes.insert(0, prev)
        shape = g.shapes.get(prev.input[0])
        if shape:
            batch, cin, hw = int(shape[0]), int(shape[1]), int(shape[2])
    out = gemm.output[0]
    if gemm.op_type == "MatMul":
        nxt = g.single_consumer(out)
        if nxt is not None and nxt.op_type == "Add":
            nodes.append(nxt)
            out = nxt.output[0]
    out_shape = g.shapes.get(out)
    used.update(id(n) for n in nodes)
    names, types = [n.name for n in nodes], [n.op_type for n in nodes]
    if w is None or out_shape is None or len(out_shape) != 2:
        return Kernel("unknown", names, types, note="matrix multiply of unknown shape")
    trans_b = bool(g.attr[id(gemm)].get("transB", 0)) if gemm.op_type == "Gemm" else False
    cout = int(out_shape[1])
    if cin is None:
        cin = int(w[1] if trans_b else w[0])
        batch = int(out_shape[0])
    spec = OpSpec("classifier", hw, cin, cout, act="none", batch=batch)
    return Kernel("classifier", names, types, spec)


def _pool_kernel(g: _Graph, node: Any) -> Kernel:
    a = g.attr[id(node)]
    shape = g.shapes.get(node.input[0])
    ks = list(a.get("kernel_shape", [1, 1]))
    strides = list(a.get("strides", [1, 1]))
    kind = "max_pool" if node.op_type == "MaxPool" else "avg_pool"
    if not shape or len(shape) != 4:
        return Kernel("unknown", [node.name], [node.op_type], note="pool of unknown shape")
    spec = OpSpec(
        kind,
        int(shape[2]),
        int(shape[1]),
        int(shape[1]),
        kernel=int(max(ks)),
        stride=int(max(strides)),
        act="none",
        batch=int(shape[0]),
    )
    return Kernel(kind, [node.name], [node.op_type], spec)


def predict_onnx(model: Any, path: str | Path) -> dict[str, Any]:
    """Per-kernel and total latency (ms) of an ONNX model under a latency ``model``.

    The total is the calibrated sum of the predicted kernels (as for an arch).
    Standalone elementwise kernels are priced like a global average pool
    moving the same bytes when the model knows ``gap`` ops, else left out of
    the total and listed; unknown node types are listed with their counts.
    """
    split = split_onnx(path)
    specs = [k.spec for k in split.kernels if k.spec is not None]
    lat = np.asarray(model.predict_ops(specs), dtype=np.float64) if specs else np.zeros(0)
    rows: list[dict[str, Any]] = []
    it = iter(lat.tolist())
    op_sum = 0.0
    elementwise_ms = 0.0
    unpriced: list[str] = []
    for k in split.kernels:
        row = k.to_dict()
        if k.spec is not None:
            row["ms"] = next(it)
            op_sum += row["ms"]
        elif k.kind == "elementwise":
            est = _elementwise_ms(model, k)
            row["ms"] = est
            if est is None:
                unpriced.append(f"{k.op_types[0]} {k.nodes[0]}")
            else:
                elementwise_ms += est
                row["note"] = "estimated from the model's global-pool latency per byte"
        elif k.kind == "free":
            row["ms"] = 0.0
        else:
            row["ms"] = None
        rows.append(row)
    total = float(model.calibration.apply(op_sum + elementwise_ms))
    return {
        "onnx": str(path),
        "input_shape": list(split.input_shape),
        "kernels": [r for r in rows if r["kind"] != "free"],
        "free_nodes": sum(1 for k in split.kernels if k.kind == "free"),
        "op_sum_ms": op_sum,
        "elementwise_ms": elementwise_ms,
        "predicted_ms": total,
        "calibration": model.calibration.to_dict(),
        "unknown_node_types": split.unknown,
        "unpriced_elementwise": unpriced,
    }


def _elementwise_ms(model: Any, k: Kernel) -> float | None:
    """An elementwise kernel priced as a global average pool over the same number of bytes."""
    if not k.shape or not k.bytes_moved:
        return None
    c = max(8, round(k.bytes_moved / 4 / 64))
    probe = OpSpec("gap", 8, c, c, act="none")
    try:
        return float(model.predict_ops([probe])[0])
    except LatbenchError:
        return None
