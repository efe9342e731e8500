"""Featurizer: one numeric row per op, the same columns for every op type.

Columns are the op's shape (input / output size, channels, middle width,
kernel, stride, groups, expand, dilation), its work (MACs / FLOPs split into
pointwise, depthwise and SE parts, parameters), the bytes it moves (input,
output, weights, and the expanded activations of an MBConv), and flags (SE,
residual, depthwise, activation one-hot, op type one-hot).

Sizes and counts enter as ``log2(1 + x)``: latency spans three decades, the
models fit ``log(ms)``, and a linear model on log features is a power law
per op type. Trees do not care about the monotone transform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from latbench.ops import ACTIVATIONS, CONV_ACTIVATIONS, DTYPE_BYTES, OP_TYPES, TRANSFORMER_TYPES, OpSpec

#: the feature columns, in order (the names a saved predictor records)
SHAPE_FEATURES = ("hw", "hw_out", "cin", "cout", "mid", "kernel", "stride", "groups", "expand", "dilation", "batch")
WORK_FEATURES = (
    "macs",
    "flops",
    "macs_pointwise",
    "macs_depthwise",
    "macs_se",
    "params",
    "input_bytes",
    "output_bytes",
    "weight_bytes",
    "memory_bytes",
    "mid_bytes",
    "peak_activation_bytes",
)
FLAG_FEATURES = ("se", "residual", "depthwise")
#: SIMD alignment of the feature map: on this CPU a 112 px map ran 3-15% faster than a 109 or 121 px one
#: with the same work, and a model without these flags over-predicted networks' (aligned) ops
ALIGN_FEATURES = ("hw_align8", "hw_align4", "hw_out_align8", "hw_out_align4")
#: sequence terms of transformer ops (0 for conv ops): tokens, heads, widths, the work split into dense matmuls,
#: the two ``L x L`` attention products (``2 h L^2 hd``: the term that grows with the square of the sequence) and
#: element-wise work, and the bytes of the attention matrix an unfused kernel writes
TRANSFORMER_NUMERIC = (
    "tokens",
    "heads",
    "head_dim",
    "qkv_dim",
    "mlp_hidden",
    "macs_dense",
    "macs_attn",
    "macs_elementwise",
    "attn_matrix_bytes",
)
TRANSFORMER_FLAGS = ("fused", "norm_pre", "norm_post")
#: op types and activations added with the transformer ops (their one-hots come after the older columns)
NEW_TYPES = tuple(t for t in OP_TYPES if t in TRANSFORMER_TYPES)
NEW_ACTS = tuple(a for a in ACTIVATIONS if a not in CONV_ACTIVATIONS)
FEATURES: tuple[str, ...] = (
    *SHAPE_FEATURES,
    *WORK_FEATURES,
    *FLAG_FEATURES,
    *(f"act_{a}" for a in CONV_ACTIVATIONS),
    *(f"type_{t}" for t in OP_TYPES if t not in TRANSFORMER_TYPES),
    *ALIGN_FEATURES,
    # schema 3: transformer columns, all after the schema-2 ones (whose values for conv ops are unchanged)
    *TRANSFORMER_NUMERIC,
    *TRANSFORMER_FLAGS,
    *(f"act_{a}" for a in NEW_ACTS),
    *(f"type_{t}" for t in NEW_TYPES),
)
#: columns that enter as log2(1 + x)
LOG_FEATURES = frozenset((*SHAPE_FEATURES, *WORK_FEATURES, *TRANSFORMER_NUMERIC))
#: schema 2 added ALIGN_FEATURES, schema 3 the transformer columns; an older predictor is read with its own
#: (shorter) column list
FEATURE_SCHEMA = "latbench.features/3"
READABLE_SCHEMAS = ("latbench.features/1", "latbench.features/2", FEATURE_SCHEMA)


def _split_macs(op: OpSpec) -> tuple[int, int, int]:
    """(pointwise/dense, depthwise, SE) MACs of an op (batch included)."""
    b, hi, ho, k2 = op.batch, op.hw, op.hw_out, op.kernel * op.kernel
    if op.type == "mbconv":
        mid = op.mid
        pw = (hi * hi * op.cin * mid if op.expand != 1.0 else 0) + ho * ho * mid * op.cout
        dw = ho * ho * k2 * mid
        se = 2 * mid * op.se_mid if op.se else 0
        return b * pw, b * dw, b * se
    if op.type in ("sep_conv", "dil_conv"):
        n = 2 if op.type == "sep_conv" else 1
        dw = n * ho * ho * k2 * op.cin
        return op.macs - b * dw, b * dw, 0
    if op.type == "conv" and op.groups > 1:
        return 0, op.macs, 0
    return op.macs, 0, 0


def op_features(op: OpSpec) -> list[float]:
    """The raw (untransformed) feature values of one op, in :data:`FEATURES` order."""
    pw, dw, se = _split_macs(op)
    mid_bytes = op.batch * op.mid * (op.hw * op.hw + op.hw_out * op.hw_out) * DTYPE_BYTES[op.dtype]
    shape = [
        op.hw,
        op.hw_out,
        op.cin,
        op.cout,
        op.mid,
        op.kernel,
        op.stride,
        op.groups,
        op.expand,
        op.dilation,
        op.batch,
    ]
    work = [
        op.macs,
        op.flops,
        pw,
        dw,
        se,
        op.params,
        op.input_bytes,
        op.output_bytes,
        op.weight_bytes,
        op.memory_bytes,
        mid_bytes if op.type == "mbconv" else 0,
        op.peak_activation_bytes,
    ]
    flags = [float(op.se), float(op.residual), float(op.type == "conv" and op.groups > 1 and op.groups == op.cin)]
    acts = [float(op.act == a) for a in CONV_ACTIVATIONS]
    types = [float(op.type == t) for t in OP_TYPES if t not in TRANSFORMER_TYPES]
    align = [float(op.hw % 8 == 0), float(op.hw % 4 == 0), float(op.hw_out % 8 == 0), float(op.hw_out % 4 == 0)]
    return [float(x) for x in (*shape, *work)] + flags + acts + types + align + _transformer_features(op)


def _transformer_features(op: OpSpec) -> list[float]:
    """The schema-3 columns: sequence terms, flags and one-hots of transformer ops (zeros for conv ops)."""
    new_acts = [float(op.act == a) for a in NEW_ACTS]
    new_types = [float(op.type == t) for t in NEW_TYPES]
    if not op.is_transformer:
        return [0.0] * (len(TRANSFORMER_NUMERIC) + len(TRANSFORMER_FLAGS)) + new_acts + new_types
    parts = op.transformer_macs()
    b = op.batch
    numeric = [
        op.hw,
        op.heads if op.type == "mhsa" else 0,
        op.head_dim,
        op.qkv_dim,
        op.hidden if op.type == "mlp" else 0,
        b * parts["dense"],
        b * parts["attn"],
        b * parts["elementwise"],
        op.attn_matrix_bytes,
    ]
    flags = [float(op.fused), float(op.norm == "pre"), float(op.norm == "post")]
    return [float(x) for x in numeric] + flags + new_acts + new_types


class Featurizer:
    """Ops -> feature matrix ``(n_ops, len(names))`` (float64).

    ``log=True`` (default) maps sizes and counts to ``log2(1 + x)``; flags and
    one-hots stay 0/1. ``names`` picks the columns (default: all of
    :data:`FEATURES`), so a predictor saved with an older column list still
    gets exactly the columns it was trained on.
    """

    def __init__(self, log: bool = True, names: Sequence[str] | None = None) -> None:
        self.log = log
        self.names: tuple[str, ...] = tuple(names) if names is not None else FEATURES
        unknown = [n for n in self.names if n not in FEATURES]
        if unknown:
            raise ValueError(f"unknown feature columns {unknown}")
        self._cols = None if self.names == FEATURES else [FEATURES.index(n) for n in self.names]
        self._log_mask = [n in LOG_FEATURES for n in FEATURES]
        self._cache: dict[str, list[float]] = {}

    def transform(self, ops: Sequence[OpSpec]) -> np.ndarray:
        rows = []
        for op in ops:
            row = self._cache.get(op.key)
            if row is None:
                row = op_features(op)
                if self.log:
                    row = [math.log2(1.0 + x) if lg else x for x, lg in zip(row, self._log_mask, strict=True)]
                if self._cols is not None:
                    row = [row[i] for i in self._cols]
                if len(self._cache) < 200_000:
                    self._cache[op.key] = row
            rows.append(row)
        if not rows:
            return np.zeros((0, len(self.names)))
        return np.asarray(rows, dtype=np.float64)

    def to_dict(self) -> dict[str, object]:
        return {"schema": FEATURE_SCHEMA, "log": self.log, "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Featurizer:
        from latbench.errors import LatbenchError

        if not isinstance(d, dict):
            raise LatbenchError("predictor features are not an object")
        if d.get("schema") not in READABLE_SCHEMAS:
            raise LatbenchError(
                f"feature schema {d.get('schema')!r} is not supported "
                f"(this latbench reads {', '.join(READABLE_SCHEMAS)})"
            )
        raw = d.get("names")
        if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw) or len(set(raw)) != len(raw):
            raise LatbenchError("predictor feature names are not a list of distinct names; retrain the predictor")
        if not isinstance(d.get("log", True), bool):
            raise LatbenchError("predictor feature flag 'log' is not true/false")
        names = list(raw)
        unknown = [n for n in names if n not in FEATURES]
        if not names or unknown:
            raise LatbenchError(
                f"predictor features {unknown[:3] or '(none)'} are not known to this latbench; retrain the predictor"
            )
        return cls(log=bool(d.get("log", True)), names=names)
