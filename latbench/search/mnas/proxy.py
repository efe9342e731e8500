"""Small-image variants of the deployment spaces, for proxy training and zero-cost scores.

Accuracy is estimated on a network with the same decisions as the deployment
arch but sized for a small offline data set (digits upscaled to 32 px, 10
classes); latency is always counted on the deployment space. ``bert`` has no
images: its proxy is the same encoder on the synthetic sequence task the
supernet evaluator uses (:data:`SEQUENCE_TASK`: does a sequence of 32 tokens
from a vocabulary of 16 contain the bigram (1, 2)?), with the supernet's
training widths (:class:`SmallBert`: hidden and FFN x 0.125, heads of 8), so
a candidate trains and is scored in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from latbench.errors import LatbenchError
from latbench.ops import OpSpec
from latbench.spaces import Arch, SearchSpace, get_space
from latbench.spaces.bert import Bert
from latbench.spaces.mobile import OFAMobileNetV3

#: the ``bert`` proxy's task: sequences of ``seq`` tokens from ``vocab``, ``samples`` of them (made, not downloaded)
SEQUENCE_TASK = {"seq": 32, "vocab": 16, "samples": 4000}


class SmallImageOFA(OFAMobileNetV3):
    """``ofa-mbv3`` at a small fixed resolution (the proxy of the real space; never a latency source)."""

    RESOLUTIONS = (*tuple(range(16, 128, 4)), *OFAMobileNetV3.RESOLUTIONS)

    def __init__(self, resolution: int = 32, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__(resolution=resolution, width=width, num_classes=num_classes)


class SmallBert(Bert):
    """``bert`` with every choice kept (same decisions and options) but built narrower: hidden and FFN widths
    scaled by ``scale``, heads of ``head_dim`` (the proxy of the real space; never a latency source)."""

    def __init__(self, scale: float = 0.125, head_dim: int = 8, **params: Any) -> None:
        super().__init__(**params)
        self.scale, self.head_dim = float(scale), int(head_dim)

    def _w(self, value: int) -> int:
        return max(1, round(value * self.scale))

    def head_ops(self, embed: int) -> list[OpSpec]:
        return super().head_ops(self._w(embed))

    def tail_ops(self, embed: int) -> list[OpSpec]:
        return super().tail_ops(self._w(embed))

    def attention_op(self, embed: int, heads: int) -> OpSpec:
        return replace(super().attention_op(self._w(embed), heads), head_dim=self.head_dim)

    def mlp_op(self, embed: int, mlp: Any) -> OpSpec:
        e = self._w(embed)
        return replace(super().mlp_op(e, mlp), expand=self._w(int(mlp)) / e)


def proxy_space(space: SearchSpace, resolution: int = 32, width: float = 0.35, num_classes: int = 10) -> SearchSpace:
    """The small-image variant of ``space`` (same decision names) that proxy training builds."""
    if space.name == "proxyless-mobile":
        return get_space("proxyless-mobile", resolution=resolution, width=width, num_classes=num_classes)
    if space.name == "ofa-mbv3":
        # OFA's width is 1.0 or 1.2 only; at 32 px the 1.0 net is small enough to train here
        return SmallImageOFA(resolution=resolution, width=1.0, num_classes=num_classes)
    if space.name == "bert":
        seq, vocab = SEQUENCE_TASK["seq"], SEQUENCE_TASK["vocab"]
        from latbench.search.mnas.evaluators.supernet import DEFAULTS

        narrow = DEFAULTS["bert"]
        return SmallBert(
            narrow["width"],
            narrow["head_dim"],
            seq=seq,
            vocab=vocab,
            num_classes=num_classes,
            fused=space.params["fused"],
        )
    if space.name == "darts":
        return get_space(
            "darts",
            channels=space.params["channels"],
            resolution=resolution,
            reduction=space.params["reduction"],
            num_classes=num_classes,
        )
    params = dict(space.params)
    for k, v in (("resolution", resolution), ("num_classes", num_classes)):
        if k in params:
            params[k] = v
    try:
        return type(space)(**params)
    except Exception as exc:
        raise LatbenchError(f"no small-image proxy for space {space.name!r}: {exc}") from None


def proxy_data(space: SearchSpace, data: str, resolution: int, seed: int) -> Any:
    """The :class:`~latbench.data.Splits` the proxy of ``space`` trains and is scored on: ``data`` (digits or an
    .npz of images) at ``resolution`` px, or for ``bert`` the synthetic sequence task (images do not apply)."""
    from latbench.search.mnas.evaluators.torch_util import cached_splits, sequence_splits

    if space.name != "bert":
        return cached_splits(data, resolution, seed)
    if data != "digits":
        raise LatbenchError(f"--data {data}: the bert proxy is scored on a synthetic sequence task, not images")
    return sequence_splits(SEQUENCE_TASK["seq"], SEQUENCE_TASK["vocab"], SEQUENCE_TASK["samples"], seed)


def proxy_arch(proxy: SearchSpace, arch: Arch) -> Arch:
    """The deployment arch's choices on the proxy space (decisions the proxy lacks, such as ``r``, dropped)."""
    choices = arch["choices"]
    missing = [d.name for d in proxy.decisions if d.name not in choices]
    if missing:
        raise LatbenchError(f"proxy space lacks decisions {missing[:3]} of the arch")
    return {"space": proxy.name, **proxy.params, "choices": {d.name: choices[d.name] for d in proxy.decisions}}


def describe_proxy(proxy: SearchSpace) -> dict[str, Any]:
    narrow = {"width_scale": proxy.scale, "head_dim": proxy.head_dim} if isinstance(proxy, SmallBert) else {}
    return {"space": proxy.name, **proxy.params, **narrow}
