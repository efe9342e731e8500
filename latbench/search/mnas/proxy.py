"""Small-image variants of the deployment spaces, for proxy training and zero-cost scores.

Accuracy is estimated on a network with the same decisions as the deployment
arch but sized for a small offline data set (digits upscaled to 32 px, 10
classes); latency is always counted on the deployment space.
"""

from __future__ import annotations

from typing import Any

from latbench.errors import LatbenchError
from latbench.spaces import Arch, SearchSpace, get_space
from latbench.spaces.mobile import OFAMobileNetV3


class SmallImageOFA(OFAMobileNetV3):
    """``ofa-mbv3`` at a small fixed resolution (the proxy of the real space; never a latency source)."""

    RESOLUTIONS = (*tuple(range(16, 128, 4)), *OFAMobileNetV3.RESOLUTIONS)

    def __init__(self, resolution: int = 32, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__(resolution=resolution, width=width, num_classes=num_classes)


def proxy_space(space: SearchSpace, resolution: int = 32, width: float = 0.35, num_classes: int = 10) -> SearchSpace:
    """The small-image variant of ``space`` (same decision names) that proxy training builds."""
    if space.name == "proxyless-mobile":
        return get_space("proxyless-mobile", resolution=resolution, width=width, num_classes=num_classes)
    if space.name == "ofa-mbv3":
        # OFA's width is 1.0 or 1.2 only; at 32 px the 1.0 net is small enough to train here
        return SmallImageOFA(resolution=resolution, width=1.0, num_classes=num_classes)
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


def proxy_arch(proxy: SearchSpace, arch: Arch) -> Arch:
    """The deployment arch's choices on the proxy space (decisions the proxy lacks, such as ``r``, dropped)."""
    choices = arch["choices"]
    missing = [d.name for d in proxy.decisions if d.name not in choices]
    if missing:
        raise LatbenchError(f"proxy space lacks decisions {missing[:3]} of the arch")
    return {"space": proxy.name, **proxy.params, "choices": {d.name: choices[d.name] for d in proxy.decisions}}


def describe_proxy(proxy: SearchSpace) -> dict[str, Any]:
    return {"space": proxy.name, **proxy.params}
