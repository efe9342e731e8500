"""`OpSpec`: a frozen, hashable description of one candidate operation.

An op is what a latency table has one row for: a block of a network with a
fixed input shape (``batch x cin x hw x hw``). Its ``key`` is stable text, so
tables written today can be read by later versions and diffed by people.

Counts (MACs, parameters, memory) are analytic; a search space sums them per
arch so that a search can bound model size and peak activation memory.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from latbench.errors import ArchError

#: every op type latbench knows how to build and count
OP_TYPES = (
    "conv",  # Conv2d + BN + act (stem, 1x1 heads, depthwise when groups == cin)
    "mbconv",  # inverted residual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project
    "sep_conv",  # DARTS separable conv (two stacked relu-dw-pw-bn)
    "dil_conv",  # DARTS dilated separable conv
    "max_pool",
    "avg_pool",
    "skip_connect",  # identity, or DARTS factorized reduce when stride 2
    "gap",  # global average pool
    "classifier",  # [global average pool] + linear
    "zero",  # a skipped block / DARTS `none`: never timed, zero latency
    # transformer ops (tensors are batch x tokens x dim; ``hw`` is the sequence length, ``cin`` the embed dim)
    "patch_embed",  # ViT: kxk stride-k conv 3 -> dim, flatten to tokens, class token + position embedding
    "token_embed",  # BERT: token lookup (``cin`` = vocabulary) + position embedding + LayerNorm
    "mhsa",  # multi-head self-attention block: [LN] -> QKV -> attention -> proj -> + input [-> LN]
    "mlp",  # transformer MLP block: [LN] -> linear dim -> hidden -> act -> linear -> + input [-> LN]
    "layernorm",  # LayerNorm over the embed dim (ViT's final norm)
    "cls_head",  # class-token head: token 0 -> [BERT pooler: linear + tanh] -> linear to classes
)
#: the transformer op types: keyed with their own key format (:attr:`OpSpec.key`)
TRANSFORMER_TYPES = ("patch_embed", "token_embed", "mhsa", "mlp", "layernorm", "cls_head")
#: activations of the conv-era ops (the feature columns of predictors trained before transformers)
CONV_ACTIVATIONS = ("relu", "relu6", "hswish", "none")
ACTIVATIONS = (*CONV_ACTIVATIONS, "gelu", "tanh")
#: where a transformer block normalises: before the block (ViT, pre-LN), after the residual add (BERT), nowhere
NORMS = ("none", "pre", "post")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}
#: the integer fields of an op, and the largest value each may take (a sanity bound: no real network has a
#: 1,000,000-pixel-wide feature map or a kernel wider than 64; a bigger value in a file is a corrupt file)
INT_FIELDS = {
    "hw": 1 << 16,
    "cin": 1 << 20,
    "cout": 1 << 20,
    "kernel": 64,
    "stride": 64,
    "groups": 1 << 20,
    "dilation": 64,
    "batch": 1 << 16,
    "heads": 1024,
}
MAX_EXPAND = 1024.0
#: JSON nesting deeper than this is refused (nothing latbench writes nests more than ~10 levels)
MAX_JSON_DEPTH = 64


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise ValueError(f"integer {text[:24]}... is out of range")
    value = int(text)
    if abs(value) > (1 << 63) - 1:
        raise ValueError(f"integer {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _depth(text: str) -> int:
    """Deepest nesting of ``[`` / ``{`` outside strings (two regex passes, then a walk over the brackets)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def strict_json_loads(text: str | bytes) -> Any:
    """Parse JSON the way latbench files must be: UTF-8, no NaN / Infinity, no number that overflows a float or
    a 64-bit integer, no duplicate key in an object, nesting at most :data:`MAX_JSON_DEPTH` deep.

    Raises :class:`ValueError` with one line (``json.JSONDecodeError``, which carries ``lineno``, for syntax).
    Python's own ``json.loads`` takes ``NaN``, turns ``1e400`` into infinity and lets the later of two
    duplicate keys win silently: each would put a wrong number into a table or a predictor.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = text[: exc.start].count(b"\n") + 1
            raise ValueError(f"not UTF-8 text (byte 0x{text[exc.start]:02x} at line {line})") from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            parse_constant=_no_constant,
        )
    except RecursionError:  # pragma: no cover - the depth scan comes first
        raise ValueError("JSON nested too deep") from None


def json_error_text(exc: ValueError) -> str:
    """One line for a :func:`strict_json_loads` error (syntax errors name their line)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno} ({exc.msg})"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels the way MobileNet / Once-for-All code does."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def conv_out(hw: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Spatial output size of a 'same'-padded convolution or pool."""
    pad = dilation * (kernel - 1) // 2
    return (hw + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True, order=True)
class OpSpec:
    """One candidate op with a fixed input shape.

    ``hw`` is the input height = width, ``expand`` the MBConv expansion ratio
    (middle width is ``make_divisible(cin * expand)``), ``se`` adds
    squeeze-and-excitation, ``act`` is the activation.
    """

    type: str
    hw: int
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    expand: float = 1.0
    groups: int = 1
    dilation: int = 1
    act: str = "relu"
    se: bool = False
    batch: int = 1
    dtype: str = "float32"
    # transformer fields (left at their defaults, and out of key and dict, for every conv-era op)
    heads: int = 1
    head_dim: int = 0
    fused: bool = False
    norm: str = "none"

    def __post_init__(self) -> None:
        for name, options in (
            ("type", OP_TYPES),
            ("act", ACTIVATIONS),
            ("dtype", tuple(DTYPE_BYTES)),
            ("norm", NORMS),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in options:
                raise ArchError(f"unknown op {name} {value!r}; known: {', '.join(options)}")
        for name, limit in INT_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ArchError(f"op field {name} must be an integer, got {value!r}")
            if not 1 <= int(value) <= limit:
                raise ArchError(f"op field {name} must be 1..{limit}, got {value}")
            object.__setattr__(self, name, int(value))
        if isinstance(self.expand, bool) or not isinstance(self.expand, numbers.Real):
            raise ArchError(f"op field expand must be a number, got {self.expand!r}")
        if not 0 < float(self.expand) <= MAX_EXPAND:
            raise ArchError(f"op field expand must be > 0 and <= {MAX_EXPAND:g}, got {self.expand}")
        if isinstance(self.se, (str, float)) or not any(self.se is v or self.se == v for v in (True, False)):
            raise ArchError(f"op field se must be true or false, got {self.se!r}")
        object.__setattr__(self, "se", bool(self.se))
        self._check_transformer_fields()
        if self.cin % self.groups or self.cout % self.groups:
            raise ArchError(f"groups={self.groups} does not divide cin={self.cin} / cout={self.cout}")
        # normalise 3.0 -> 3 so keys stay stable
        object.__setattr__(self, "expand", float(self.expand))

    def _check_transformer_fields(self) -> None:
        """``head_dim`` 0..4096, ``fused`` a bool; conv-era ops keep the transformer fields at their defaults
        (so their keys and dicts are what they always were) and transformer ops their own invariants."""
        hd = self.head_dim
        if isinstance(hd, bool) or not isinstance(hd, numbers.Integral) or not 0 <= int(hd) <= 4096:
            raise ArchError(f"op field head_dim must be an integer 0..4096, got {hd!r}")
        object.__setattr__(self, "head_dim", int(hd))
        if isinstance(self.fused, (str, float)) or not any(self.fused is v or self.fused == v for v in (True, False)):
            raise ArchError(f"op field fused must be true or false, got {self.fused!r}")
        object.__setattr__(self, "fused", bool(self.fused))
        if self.type not in TRANSFORMER_TYPES:
            if self.act not in CONV_ACTIVATIONS:
                raise ArchError(f"unknown op act {self.act!r} for {self.type}; known: {', '.join(CONV_ACTIVATIONS)}")
            if (self.heads, self.head_dim, self.fused, self.norm) != (1, 0, False, "none"):
                raise ArchError(f"op type {self.type} takes no heads / head_dim / fused / norm")
            return
        if self.groups != 1 or self.dilation != 1 or self.se:
            raise ArchError(f"transformer op {self.type} takes groups=1, dilation=1, se=false")
        if self.type == "mhsa" and self.head_dim < 1:
            raise ArchError("an mhsa op needs head_dim >= 1")
        if self.type != "mhsa" and (self.heads != 1 or self.head_dim != 0 or self.fused):
            raise ArchError(f"op type {self.type} takes no heads / head_dim / fused")
        if self.type != "patch_embed" and (self.kernel != 1 or self.stride != 1):
            raise ArchError(f"op type {self.type} takes kernel=1, stride=1 (only patch_embed has a patch)")
        if self.type == "patch_embed" and (self.stride != self.kernel or self.hw % self.kernel):
            raise ArchError(f"patch_embed needs stride == kernel (the patch) dividing hw, got {self.key_hint}")
        if self.type != "mlp" and self.expand != 1.0:
            raise ArchError(f"op type {self.type} takes no expand (only mlp has a hidden ratio)")
        if self.type == "mlp" and round(self.cin * float(self.expand)) < 1:
            raise ArchError("an mlp op needs a hidden width >= 1")
        if self.type in ("mhsa", "mlp", "layernorm") and self.cin != self.cout:
            raise ArchError(f"{self.type} keeps the embed dim: cin must equal cout, got {self.cin} / {self.cout}")

    @property
    def key_hint(self) -> str:
        return f"hw={self.hw} kernel={self.kernel} stride={self.stride}"

    @property
    def is_transformer(self) -> bool:
        return self.type in TRANSFORMER_TYPES

    @property
    def hidden(self) -> int:
        """Hidden width of a transformer MLP (``round(cin * expand)``); ``cin`` for other types."""
        if self.type == "mlp":
            return round(self.cin * float(self.expand))
        return self.cin

    @property
    def qkv_dim(self) -> int:
        """Width of Q (and K, V) of an attention op: ``heads * head_dim``; 0 for other types."""
        return self.heads * self.head_dim if self.type == "mhsa" else 0

    @property
    def tokens_out(self) -> int:
        """Tokens a transformer op outputs: patches + class token for ``patch_embed``, else its input's."""
        if self.type == "patch_embed":
            return (self.hw // self.kernel) ** 2 + 1
        return self.hw

    # ----------------------------------------------------------------- identity
    @property
    def key(self) -> str:
        """Stable text key, e.g. ``mbconv-i56x56x24-o40-k5-s2-e6-g1-d1-relu6-se0-b1-float32``.

        Transformer ops have a key of their own, e.g. ``mhsa-n197-d240-o240-h4-hd64-k1-f240-none-pre-fu1-b1-float32``
        (``n`` tokens, ``d`` embed dim in, ``o`` out, heads, head dim, kernel, ``f`` MLP hidden width, act, norm,
        fused attention kernel).
        """
        if self.type in TRANSFORMER_TYPES:
            return (
                f"{self.type}-n{self.hw}-d{self.cin}-o{self.cout}-h{self.heads}-hd{self.head_dim}-k{self.kernel}"
                f"-f{self.hidden}-{self.act}-{self.norm}-fu{int(self.fused)}-b{self.batch}-{self.dtype}"
            )
        return (
            f"{self.type}-i{self.hw}x{self.hw}x{self.cin}-o{self.cout}-k{self.kernel}"
            f"-s{self.stride}-e{self.expand:g}-g{self.groups}-d{self.dilation}-{self.act}"
            f"-se{int(self.se)}-b{self.batch}-{self.dtype}"
        )

    _KEY_RE = re.compile(
        r"^(?P<type>[a-z_]+)-i(?P<hw>\d+)x\d+x(?P<cin>\d+)-o(?P<cout>\d+)-k(?P<kernel>\d+)"
        r"-s(?P<stride>\d+)-e(?P<expand>[\d.]+)-g(?P<groups>\d+)-d(?P<dilation>\d+)-(?P<act>[a-z0-9]+)"
        r"-se(?P<se>[01])-b(?P<batch>\d+)-(?P<dtype>[a-z0-9]+)$"
    )

    _TKEY_RE = re.compile(
        r"^(?P<type>[a-z_]+)-n(?P<hw>\d+)-d(?P<cin>\d+)-o(?P<cout>\d+)-h(?P<heads>\d+)-hd(?P<head_dim>\d+)"
        r"-k(?P<kernel>\d+)-f(?P<hidden>\d+)-(?P<act>[a-z0-9]+)-(?P<norm>[a-z]+)-fu(?P<fused>[01])"
        r"-b(?P<batch>\d+)-(?P<dtype>[a-z0-9]+)$"
    )

    @classmethod
    def from_key(cls, key: str) -> OpSpec:
        """Parse a key written by :attr:`key`."""
        t = cls._TKEY_RE.match(key) if isinstance(key, str) else None
        if t:
            d: dict[str, Any] = t.groupdict()
            for name in ("hw", "cin", "cout", "heads", "head_dim", "kernel", "batch"):
                d[name] = int(d[name])
            hidden = int(d.pop("hidden"))
            d["fused"] = d["fused"] == "1"
            d["stride"] = d["kernel"]
            if d["type"] == "mlp":
                d["expand"] = hidden / d["cin"]
            spec = cls(**d)
            if spec.key != key:
                raise ArchError(f"not an op key: {key!r}")
            return spec
        m = cls._KEY_RE.match(key)
        if not m:
            raise ArchError(f"not an op key: {key!r}")
        d = m.groupdict()
        for name in ("hw", "cin", "cout", "kernel", "stride", "groups", "dilation", "batch"):
            d[name] = int(d[name])
        d["expand"] = float(d["expand"])
        d["se"] = d["se"] == "1"
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON; conv-era ops leave out the transformer fields (their dicts are as they were)."""
        d = asdict(self)
        if self.type not in TRANSFORMER_TYPES:
            for name in ("heads", "head_dim", "fused", "norm"):
                d.pop(name)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpSpec:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ArchError(f"unknown op fields: {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as exc:  # missing required field
            raise ArchError(f"bad op spec {data!r}: {exc}") from None

    def with_(self, **changes: Any) -> OpSpec:
        return replace(self, **changes)

    # ------------------------------------------------------------------ shapes
    @property
    def hw_out(self) -> int:
        """Output height = width (conv ops); output tokens (transformer ops, 1 for the head)."""
        if self.type in TRANSFORMER_TYPES:
            return 1 if self.type == "cls_head" else self.tokens_out
        if self.type in ("gap", "classifier"):
            return 1
        if self.type in ("skip_connect", "zero"):
            return conv_out(self.hw, 1, self.stride)
        return conv_out(self.hw, self.kernel, self.stride, self.dilation)

    @property
    def mid(self) -> int:
        """Middle (expanded) width of an MBConv; ``cin`` for other types."""
        if self.type == "mbconv" and self.expand != 1.0:
            return make_divisible(self.cin * self.expand, 8)
        return self.cin

    @property
    def se_mid(self) -> int:
        return make_divisible(self.mid // 4, 8)

    @property
    def residual(self) -> bool:
        """Whether the block adds its input (MBConv: stride 1 and cin == cout)."""
        return self.type == "mbconv" and self.stride == 1 and self.cin == self.cout

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``batch x cin x hw x hw`` (conv ops, ``patch_embed``); ``batch x tokens`` of token ids
        (``token_embed``); ``batch x tokens x dim`` (other transformer ops)."""
        if self.type == "token_embed":
            return (self.batch, self.hw)
        if self.type in TRANSFORMER_TYPES and self.type != "patch_embed":
            return (self.batch, self.hw, self.cin)
        return (self.batch, self.cin, self.hw, self.hw)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.type in ("classifier", "cls_head"):
            return (self.batch, self.cout)
        if self.type in TRANSFORMER_TYPES:
            return (self.batch, self.tokens_out, self.cout)
        return (self.batch, self.cout, self.hw_out, self.hw_out)

    # ------------------------------------------------------------------ counts
    @property
    def macs(self) -> int:
        """Multiply-accumulates of one forward pass (batch included)."""
        hi, ho, b = self.hw, self.hw_out, self.batch
        k2 = self.kernel * self.kernel
        t = self.type
        if t == "conv":
            return b * ho * ho * k2 * (self.cin // self.groups) * self.cout
        if t == "mbconv":
            mid = self.mid
            m = 0
            if self.expand != 1.0:
                m += hi * hi * self.cin * mid
            m += ho * ho * k2 * mid
            if self.se:
                m += 2 * mid * self.se_mid
            m += ho * ho * mid * self.cout
            return b * m
        if t == "sep_conv":
            first = ho * ho * k2 * self.cin + ho * ho * self.cin * self.cin
            second = ho * ho * k2 * self.cin + ho * ho * self.cin * self.cout
            return b * (first + second)
        if t == "dil_conv":
            return b * (ho * ho * k2 * self.cin + ho * ho * self.cin * self.cout)
        if t in ("max_pool", "avg_pool"):
            return b * ho * ho * k2 * self.cin
        if t == "skip_connect":
            return 0 if self.stride == 1 else b * ho * ho * self.cin * self.cout
        if t == "gap":
            return b * hi * hi * self.cin
        if t == "classifier":
            return b * (hi * hi * self.cin + self.cin * self.cout)
        if t in TRANSFORMER_TYPES:
            return b * sum(self.transformer_macs().values())
        return 0  # zero

    def transformer_macs(self) -> dict[str, int]:
        """MACs of one sample of a transformer op, by part: ``dense`` (linear layers, patch conv), ``attn``
        (the two ``L x L`` products, ``2 * heads * L^2 * head_dim``: the term that grows with the square of the
        sequence) and ``elementwise`` (norms, adds, softmax, activation; one per element touched)."""
        n, d, t = self.hw, self.cin, self.type
        if t == "patch_embed":
            patches = (self.hw // self.kernel) ** 2
            return {"dense": patches * self.kernel**2 * self.cin * self.cout, "attn": 0, "elementwise": 0}
        if t == "token_embed":
            return {"dense": 0, "attn": 0, "elementwise": 3 * n * self.cout}
        if t == "mhsa":
            q = self.qkv_dim
            return {
                "dense": n * d * 3 * q + n * q * d,
                "attn": 2 * self.heads * n * n * self.head_dim,
                "elementwise": self.heads * n * n + (3 if self.norm != "none" else 1) * n * d,
            }
        if t == "mlp":
            f = self.hidden
            return {"dense": 2 * n * d * f, "attn": 0, "elementwise": n * f + (3 if self.norm != "none" else 1) * n * d}
        if t == "layernorm":
            return {"dense": 0, "attn": 0, "elementwise": 2 * n * d}
        if t == "cls_head":
            pool = self.cin * self.cin if self.act == "tanh" else 0
            return {"dense": pool + self.cin * self.cout, "attn": 0, "elementwise": self.cin if pool else 0}
        return {"dense": 0, "attn": 0, "elementwise": 0}

    @property
    def flops(self) -> int:
        """Floating-point operations, counted as 2 x MACs."""
        return 2 * self.macs

    @property
    def params(self) -> int:
        """Learnable parameters (conv weights, BN affine, linear weights + bias)."""
        k2 = self.kernel * self.kernel
        t = self.type
        if t == "conv":
            return k2 * (self.cin // self.groups) * self.cout + 2 * self.cout
        if t == "mbconv":
            mid = self.mid
            p = 0
            if self.expand != 1.0:
                p += self.cin * mid + 2 * mid
            p += k2 * mid + 2 * mid
            if self.se:
                p += 2 * mid * self.se_mid + self.se_mid + mid
            p += mid * self.cout + 2 * self.cout
            return p
        if t == "sep_conv":
            return (k2 * self.cin + self.cin * self.cin + 2 * self.cin) + (
                k2 * self.cin + self.cin * self.cout + 2 * self.cout
            )
        if t == "dil_conv":
            return k2 * self.cin + self.cin * self.cout + 2 * self.cout
        if t == "skip_connect" and self.stride != 1:
            return self.cin * self.cout + 2 * self.cout
        if t == "classifier":
            return self.cin * self.cout + self.cout
        if t in TRANSFORMER_TYPES:
            return self._transformer_params()
        return 0

    def _transformer_params(self) -> int:
        d, t = self.cin, self.type
        norm = 2 * self.cout if self.norm != "none" or t in ("layernorm", "token_embed") else 0
        if t == "patch_embed":
            return self.kernel**2 * self.cin * self.cout + self.cout + self.cout + self.tokens_out * self.cout
        if t == "token_embed":
            return self.cin * self.cout + self.hw * self.cout + norm
        if t == "mhsa":
            q = self.qkv_dim
            return d * 3 * q + 3 * q + q * d + d + norm
        if t == "mlp":
            f = self.hidden
            return d * f + f + f * d + d + norm
        if t == "layernorm":
            return norm
        if t == "cls_head":
            pool = d * d + d if self.act == "tanh" else 0
            return pool + d * self.cout + self.cout
        return 0

    @property
    def attn_matrix_bytes(self) -> int:
        """Bytes of the ``heads x L x L`` attention matrix an unfused attention writes and reads (0 otherwise)."""
        if self.type != "mhsa":
            return 0
        return self.batch * self.heads * self.hw * self.hw * DTYPE_BYTES[self.dtype]

    @property
    def weight_bytes(self) -> int:
        return self.params * DTYPE_BYTES[self.dtype]

    @property
    def input_bytes(self) -> int:
        return math.prod(self.input_shape) * DTYPE_BYTES[self.dtype]

    @property
    def output_bytes(self) -> int:
        return math.prod(self.output_shape) * DTYPE_BYTES[self.dtype]

    @property
    def peak_activation_bytes(self) -> int:
        """Largest set of activations alive at once inside the op (input kept for a residual)."""
        e = DTYPE_BYTES[self.dtype]
        b = self.batch
        if self.type == "mbconv":
            mid_in = b * self.mid * self.hw * self.hw * e
            mid_out = b * self.mid * self.hw_out * self.hw_out * e
            stages = [self.input_bytes + mid_in, mid_in + mid_out, mid_out + self.output_bytes]
            keep = self.input_bytes if self.residual else 0
            return max(stages) + keep
        if self.type == "mhsa":
            qkv = 3 * self.batch * self.hw * self.qkv_dim * e
            return self.input_bytes + qkv + (0 if self.fused else self.attn_matrix_bytes)
        if self.type == "mlp":
            return self.input_bytes + self.batch * self.hw * self.hidden * e + self.output_bytes
        return self.input_bytes + self.output_bytes

    @property
    def memory_bytes(self) -> int:
        """Bytes moved by one forward pass: weights + input + output activations."""
        return self.weight_bytes + self.input_bytes + self.output_bytes

    # ----------------------------------------------------------------- building
    def build(self) -> Any:
        """A fresh ``torch.nn.Module`` in eval mode computing this op."""
        from latbench import torch_ops

        return torch_ops.build_module(self).eval()

    def example_input(self, seed: int = 0) -> Any:
        """A deterministic random input tensor of :attr:`input_shape`."""
        import torch

        g = torch.Generator().manual_seed(seed)
        if self.type == "token_embed":  # token ids (as floats, so every latbench input is a float tensor)
            return torch.randint(0, self.cin, self.input_shape, generator=g).float()
        return torch.randn(*self.input_shape, generator=g)

    def __str__(self) -> str:
        return self.key
