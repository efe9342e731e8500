"""Training ops beyond a search space: op configurations sampled across shapes.

A table of a space only holds that space's ops; a predictor that must answer
for other resolutions, widths or whole ONNX models needs to have seen how
latency moves with input size, channels, kernel, stride, expansion, SE and
activation. :func:`sample_ops` draws such ops, shaped like the layers of real
mobile networks (channels grow as the feature map shrinks) with a share of
fully random shapes for coverage. :func:`adaptive_ops` draws more ops where a
model trained on a table errs most (out-of-fold), as nn-Meter's adaptive
sampling does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from latbench.errors import LatbenchError
from latbench.ops import OpSpec, conv_out, make_divisible

#: share of each op type among the sampled ops
TYPE_MIX: dict[str, float] = {
    "mbconv": 0.62,
    "conv": 0.16,
    "dwconv": 0.04,
    "classifier": 0.04,
    "gap": 0.03,
    "pool": 0.04,
    "sep_conv": 0.03,
    "dil_conv": 0.02,
    "skip_connect": 0.02,
}
#: per stage (feature map = resolution / 2**stage): typical range of block widths
STAGE_CHANNELS = {1: (8, 64), 2: (16, 72), 3: (24, 112), 4: (40, 224), 5: (80, 512)}
ACT_MIX = {"relu6": 0.45, "relu": 0.25, "hswish": 0.30}
EXPAND_MIX = {1: 0.10, 3: 0.35, 4: 0.20, 6: 0.35}


def _choice(rng: np.random.Generator, mix: dict[Any, float]) -> Any:
    keys = list(mix)
    p = np.array([mix[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _log_uniform_channels(rng: np.random.Generator, lo: int, hi: int, divisor: int = 8) -> int:
    return make_divisible(math.exp(rng.uniform(math.log(lo), math.log(hi))), divisor)


def _resolution(rng: np.random.Generator) -> int:
    """An input resolution as networks use them: a multiple of 32 (96-256) or of 4 (Once-for-All's steps).

    Feature maps of such inputs are SIMD-aligned (112, 56, 28...), and aligned maps run faster: drawing any
    integer resolution made nearly all sampled maps odd sizes, and the models over-predicted networks' ops.
    """
    if rng.random() < 0.5:
        return int(rng.choice(np.arange(96, 257, 32)))
    return int(rng.choice(np.arange(96, 257, 4)))


def _shape(rng: np.random.Generator) -> tuple[int, int, int]:
    """(hw, stage, resolution): mostly a network-like feature map, sometimes a random one."""
    if rng.random() < 0.75:
        r = _resolution(rng)
        stage = int(rng.integers(1, 6))
        hw = r
        for _ in range(stage):
            hw = conv_out(hw, 3, 2)
        return hw, stage, r
    hw = round(math.exp(rng.uniform(math.log(3), math.log(160))))
    stage = min(5, max(1, round(math.log2(224 / max(hw, 1)))))
    return hw, stage, 224


def _mbconv(rng: np.random.Generator) -> OpSpec:
    hw, stage, _ = _shape(rng)
    lo, hi = STAGE_CHANNELS[stage]
    cin = _log_uniform_channels(rng, lo, hi)
    stride = 2 if hw > 3 and rng.random() < 0.3 else 1
    if stride == 1 and rng.random() < 0.45:
        cout = cin
    else:
        cout = make_divisible(cin * rng.uniform(0.8, 2.2))
    expand = _choice(rng, EXPAND_MIX)
    if rng.random() < 0.06:  # the first block of a network: no expansion, wide input
        expand, cin, cout = 1, _log_uniform_channels(rng, 16, 64), _log_uniform_channels(rng, 8, 32)
    return OpSpec(
        "mbconv",
        hw,
        cin,
        cout,
        kernel=int(rng.choice([3, 5, 7])),
        stride=stride,
        expand=float(expand),
        act=_choice(rng, ACT_MIX),
        se=bool(rng.random() < 0.3),
    )


def _conv(rng: np.random.Generator) -> OpSpec:
    act = _choice(rng, ACT_MIX)
    kind = rng.random()
    if kind < 0.3:  # stem: 3 input channels, k3 s2 at the full resolution
        r = _resolution(rng)
        return OpSpec("conv", r, 3, _log_uniform_channels(rng, 16, 64), kernel=3, stride=2, act=act)
    if kind < 0.6:  # head / pointwise: wide 1x1 at a small map
        hw, stage, _ = _shape(rng)
        cin = _log_uniform_channels(rng, 64, 512)
        cout = _log_uniform_channels(rng, 256, 2048)
        return OpSpec("conv", hw if rng.random() < 0.8 else 1, cin, cout, kernel=1, act=act)
    hw, stage, _ = _shape(rng)
    lo, hi = STAGE_CHANNELS[stage]
    k = int(rng.choice([1, 3, 5]))
    stride = 2 if hw > 3 and rng.random() < 0.3 else 1
    return OpSpec(
        "conv",
        hw,
        _log_uniform_channels(rng, lo, 2 * hi),
        _log_uniform_channels(rng, lo, 2 * hi),
        kernel=k,
        stride=stride,
        act=act,
    )


def _dwconv(rng: np.random.Generator) -> OpSpec:
    hw, stage, _ = _shape(rng)
    lo, hi = STAGE_CHANNELS[stage]
    c = _log_uniform_channels(rng, lo, 6 * hi)
    stride = 2 if hw > 3 and rng.random() < 0.3 else 1
    return OpSpec(
        "conv", hw, c, c, kernel=int(rng.choice([3, 5, 7])), stride=stride, groups=c, act=_choice(rng, ACT_MIX)
    )


def _classifier(rng: np.random.Generator) -> OpSpec:
    hw, _, _ = _shape(rng)
    hw = min(hw, 14) if rng.random() < 0.8 else 1
    cin = _log_uniform_channels(rng, 128, 2048)
    cout = int(rng.choice([10, 100, 1000, 1000, 1000]))
    return OpSpec("classifier", hw, cin, cout, act="none")


def _gap(rng: np.random.Generator) -> OpSpec:
    hw, _, _ = _shape(rng)
    c = _log_uniform_channels(rng, 32, 1536)
    return OpSpec("gap", hw, c, c, act="none")


def _pool(rng: np.random.Generator) -> OpSpec:
    hw, stage, _ = _shape(rng)
    lo, hi = STAGE_CHANNELS[stage]
    c = _log_uniform_channels(rng, lo, 2 * hi)
    t = "max_pool" if rng.random() < 0.5 else "avg_pool"
    return OpSpec(t, hw, c, c, kernel=3, stride=2 if hw > 3 and rng.random() < 0.4 else 1, act="none")


def _darts(rng: np.random.Generator, t: str) -> OpSpec:
    hw = int(rng.choice([8, 16, 28, 32, 56]))
    c = _log_uniform_channels(rng, 8, 128)
    stride = 2 if rng.random() < 0.3 else 1
    if t == "skip_connect":
        return OpSpec("skip_connect", hw, c, c, stride=2, act="relu")
    k = int(rng.choice([3, 5]))
    return OpSpec(t, hw, c, c, kernel=k, stride=stride, dilation=2 if t == "dil_conv" else 1, act="relu")


# ----------------------------------------------------------------------------- transformer ops
#: share of each transformer op type when transformer ops are drawn (``family="transformer"``)
TRANSFORMER_MIX: dict[str, float] = {
    "mhsa": 0.40,
    "mlp": 0.36,
    "layernorm": 0.08,
    "patch_embed": 0.06,
    "token_embed": 0.04,
    "cls_head": 0.06,
}


def _tokens(rng: np.random.Generator) -> tuple[int, str]:
    """A sequence length as transformers use them, and the family: ViT patches + class token
    (``(r / p)^2 + 1``) or a text length (powers of two and common cuts, sometimes any 8..512)."""
    if rng.random() < 0.5:
        r = int(rng.choice(np.arange(96, 385, 32)))
        p = int(rng.choice([8, 14, 16, 16, 32]))
        return (r // p) ** 2 + 1, "vit"
    if rng.random() < 0.75:
        return int(rng.choice([16, 32, 64, 96, 128, 128, 192, 256, 384, 512])), "bert"
    return int(rng.integers(8, 513)), "bert"


def _embed(rng: np.random.Generator) -> int:
    """An embed width 64..1024 (log-uniform, multiple of 8; half the draws multiples of 64 as BERT sizes are)."""
    return _log_uniform_channels(rng, 64, 1024, 8 if rng.random() < 0.5 else 64)


def _transformer(rng: np.random.Generator, t: str) -> OpSpec:
    n, family = _tokens(rng)
    d = _embed(rng)
    norm = "pre" if family == "vit" else "post"
    if rng.random() < 0.2:
        norm = "none"
    if t == "mhsa":
        heads = int(rng.integers(1, 17))
        head_dim = int(rng.choice([32, 64, 64, 64, 96, 128]))
        return OpSpec(
            "mhsa", n, d, d, heads=heads, head_dim=head_dim, fused=bool(rng.random() < 0.5), norm=norm, act="none"
        )
    if t == "mlp":
        ratio = float(rng.choice([1.0, 2.0, 3.0, 3.5, 4.0, 4.0])) if rng.random() < 0.6 else rng.uniform(0.5, 6.0)
        hidden = max(8, round(d * ratio / 8) * 8)
        act = "gelu" if rng.random() < 0.85 else "relu"
        return OpSpec("mlp", n, d, d, expand=hidden / d, act=act, norm=norm)
    if t == "layernorm":
        return OpSpec("layernorm", n, d, d, act="none")
    if t == "patch_embed":
        p = int(rng.choice([8, 14, 16, 16, 32]))
        r = p * int(rng.integers(max(2, 64 // p), 384 // p + 1))
        return OpSpec("patch_embed", r, 3, d, kernel=p, stride=p, act="none")
    if t == "token_embed":
        vocab = int(rng.choice([1000, 8000, 30522, 50265]))
        return OpSpec("token_embed", n, vocab, d, act="none")
    classes = int(rng.choice([2, 10, 100, 1000]))
    return OpSpec("cls_head", n, d, classes, act="tanh" if family == "bert" else "none")


_MAKERS: dict[str, Callable[[np.random.Generator], OpSpec]] = {
    "mbconv": _mbconv,
    "conv": _conv,
    "dwconv": _dwconv,
    "classifier": _classifier,
    "gap": _gap,
    "pool": _pool,
    "sep_conv": lambda rng: _darts(rng, "sep_conv"),
    "dil_conv": lambda rng: _darts(rng, "dil_conv"),
    "skip_connect": lambda rng: _darts(rng, "skip_connect"),
    **{t: (lambda rng, t=t: _transformer(rng, t)) for t in TRANSFORMER_MIX},
}
#: named mixes ``sample_ops(family=...)`` draws from; ``conv`` is the default (and what older tables were drawn with)
FAMILIES: dict[str, dict[str, float]] = {
    "conv": TYPE_MIX,
    "transformer": TRANSFORMER_MIX,
    "all": {**{k: 0.5 * v for k, v in TYPE_MIX.items()}, **{k: 0.5 * v for k, v in TRANSFORMER_MIX.items()}},
}


def sample_ops(
    n: int,
    seed: int = 0,
    *,
    mix: dict[str, float] | None = None,
    exclude: set[str] | None = None,
    family: str = "conv",
) -> list[OpSpec]:
    """``n`` distinct ops drawn across shapes (input size, channels, kernel, stride, expand, SE, activation).

    Deterministic for a ``seed``. ``family`` picks the mix: ``conv`` (:data:`TYPE_MIX`, the default),
    ``transformer`` (:data:`TRANSFORMER_MIX`: sequence lengths of ViTs and of text, embed widths 64-1024,
    heads, head dims, MLP ratios, fused or explicit attention, pre / post norm) or ``all``. ``mix``
    overrides the family (keys as in either mix); op keys in ``exclude`` are never returned (e.g. a
    space's vocabulary, to test how a model generalises to shapes it never saw).
    """
    if n < 1:
        raise LatbenchError(f"--sample needs N >= 1, got {n}")
    if family not in FAMILIES:
        raise LatbenchError(f"unknown op family {family!r} to sample; known: {', '.join(FAMILIES)}")
    mix = mix or FAMILIES[family]
    unknown = set(mix) - set(_MAKERS)
    if unknown:
        raise LatbenchError(f"unknown sampled op kinds {sorted(unknown)}; known: {', '.join(_MAKERS)}")
    rng = np.random.default_rng(seed)
    exclude = exclude or set()
    seen: dict[str, OpSpec] = {}
    tries = 0
    while len(seen) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise LatbenchError(f"could only draw {len(seen)} distinct ops of the {n} asked")
        op = _MAKERS[_choice(rng, mix)](rng)
        if op.key not in seen and op.key not in exclude:
            seen[op.key] = op
    return list(seen.values())


# ----------------------------------------------------------------------------- adaptive sampling
def _neighbour(op: OpSpec, rng: np.random.Generator) -> OpSpec | None:
    """A nearby op: one or two of hw, channels, kernel, expand moved a little."""
    changes: dict[str, Any] = {}
    for field in rng.choice(["hw", "cin", "cout", "kernel", "expand"], size=int(rng.integers(1, 3)), replace=False):
        if field == "hw":
            changes["hw"] = max(2, round(op.hw * rng.uniform(0.75, 1.33)))
        elif field == "cin" and op.cin > 3:
            changes["cin"] = make_divisible(op.cin * rng.uniform(0.7, 1.4))
        elif field == "cout":
            changes["cout"] = make_divisible(op.cout * rng.uniform(0.7, 1.4))
        elif field == "kernel" and op.kernel > 1:
            changes["kernel"] = int(rng.choice([3, 5, 7]))
        elif field == "expand" and op.type == "mbconv":
            changes["expand"] = float(rng.choice([1, 3, 4, 6]))
    if op.type in ("gap", "max_pool", "avg_pool", "skip_connect", "sep_conv", "dil_conv") or (
        op.type == "mbconv" and op.residual
    ):
        if "cin" in changes or "cout" in changes:
            c = changes.get("cin", changes.get("cout"))
            changes["cin"] = changes["cout"] = c
    if op.type == "conv" and op.groups > 1:
        c = changes.get("cin", changes.get("cout", op.cin))
        changes.update(cin=c, cout=c, groups=c)
    try:
        return op.with_(**changes)
    except LatbenchError:
        return None


def adaptive_ops(
    ops: list[OpSpec],
    errors: np.ndarray,
    n: int,
    seed: int = 0,
    *,
    top_fraction: float = 0.2,
    exclude: set[str] | None = None,
) -> list[OpSpec]:
    """``n`` new ops near the ops with the largest ``errors`` (e.g. out-of-fold relative errors).

    The ``top_fraction`` worst ops are the seeds; each new op moves one or two
    of their shape fields a little.
    """
    if len(ops) != len(errors):
        raise ValueError("ops and errors differ in length")
    if n < 1:
        return []
    rng = np.random.default_rng(seed)
    order = np.argsort(-np.asarray(errors, dtype=np.float64))
    worst = [ops[i] for i in order[: max(1, math.ceil(top_fraction * len(ops)))]]
    weights = np.asarray(errors, dtype=np.float64)[order[: len(worst)]] + 1e-6
    weights = weights / weights.sum()
    taken = set(exclude or set()) | {o.key for o in ops}
    out: list[OpSpec] = []
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        new = _neighbour(worst[int(rng.choice(len(worst), p=weights))], rng)
        if new is not None and new.key not in taken:
            taken.add(new.key)
            out.append(new)
    return out


def adaptive_table_ops(
    table: Any, n: int, seed: int = 0, *, model: str = "xgboost", folds: int = 5
) -> tuple[list[OpSpec], dict[str, Any]]:
    """The ops of ``table`` plus ``n`` new ones where ``model`` errs most out of fold.

    Returns ``(ops, info)``; measuring ``ops`` with ``resume`` adds only the new ones.
    """
    from latbench.predict.models import cross_val_predict_ops, table_rows

    ops, ms = table_rows([table])
    if len(ops) < 2 * folds:
        raise LatbenchError(
            f"adaptive sampling needs a table of at least {2 * folds} rows, {table.path} has {len(ops)}"
        )
    pred = cross_val_predict_ops(model, ops, ms, folds=folds, seed=seed)
    err = np.where(np.isfinite(pred), np.abs(pred - ms) / ms, 0.0)
    new = adaptive_ops(ops, err, n, seed=seed)
    info = {
        "model": model,
        "oof_mape_before": float(np.mean(err[np.isfinite(pred)])),
        "worst_ops": [ops[i].key for i in np.argsort(-err)[:5]],
        "new_ops": len(new),
    }
    return ops + new, info
