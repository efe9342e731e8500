"""A device farm on Ray: devices as Ray resources, sharded table builds, parallel search trials.

A host that serves a device runs a Ray worker node offering one unit of the
custom resource ``latbench-device:<device name>`` (``latbench farm join``).
The driver (``latbench table build --cluster``, ``latbench search mnas
--cluster``) connects to the cluster, places one measuring actor per node that
serves the device (so two timings never share a node), checks each node's
fingerprint against the device profile, and streams rows back.

Ray is an optional extra (``pip install 'latbench[ray]'``). Nothing in this
package imports Ray at module level: :func:`require_ray` does, when a command
asks for a cluster.
"""

from __future__ import annotations

from typing import Any

from latbench.errors import LatbenchError

#: custom resource a node offers for each device it serves (one unit: one timing at a time)
RESOURCE_PREFIX = "latbench-device:"
#: environment variable (set by ``farm join`` on the node) with the host's own device profiles, JSON
NODE_PROFILES_ENV = "LATBENCH_FARM_PROFILES"
INSTALL_HINT = "pip install 'latbench[ray]'"


class FarmError(LatbenchError):
    """A cluster that cannot be reached, a device no node serves, a node refused or lost."""


def resource_name(device: str) -> str:
    """The Ray resource a node serving ``device`` offers."""
    return f"{RESOURCE_PREFIX}{device}"


def require_ray(what: str = "--cluster") -> Any:
    """Import and return ``ray``, or raise a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FarmError(f"{what} needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray
