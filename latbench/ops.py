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
)
ACTIVATIONS = ("relu", "relu6", "hswish", "none")
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

    def __post_init__(self) -> None:
        for name, options in (("type", OP_TYPES), ("act", ACTIVATIONS), ("dtype", tuple(DTYPE_BYTES))):
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
        if self.cin % self.groups or self.cout % self.groups:
            raise ArchError(f"groups={self.groups} does not divide cin={self.cin} / cout={self.cout}")
        # normalise 3.0 -> 3 so keys stay stable
        object.__setattr__(self, "expand", float(self.expand))

    # ----------------------------------------------------------------- identity
    @property
    def key(self) -> str:
        """Stable text key, e.g. ``mbconv-i56x56x24-o40-k5-s2-e6-g1-d1-relu6-se0-b1-float32``."""
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

    @classmethod
    def from_key(cls, key: str) -> OpSpec:
        """Parse a key written by :attr:`key`."""
        m = cls._KEY_RE.match(key)
        if not m:
            raise ArchError(f"not an op key: {key!r}")
        d: dict[str, Any] = m.groupdict()
        for name in ("hw", "cin", "cout", "kernel", "stride", "groups", "dilation", "batch"):
            d[name] = int(d[name])
        d["expand"] = float(d["expand"])
        d["se"] = d["se"] == "1"
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.cin, self.hw, self.hw)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.type == "classifier":
            return (self.batch, self.cout)
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
        return 0  # zero

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
        return 0

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
        return torch.randn(*self.input_shape, generator=g)

    def __str__(self) -> str:
        return self.key
