"""ProxylessNAS-style differentiable latency search (also FBNet's Gumbel and DARTS' softmax relaxations).

``run(...)`` is the Python twin of ``latbench search proxyless``; the parts:

* :mod:`.supernet`  mixed ops over each decision's candidates, modes ``binary`` / ``gumbel`` / ``softmax``;
* :mod:`.latency`   ``E[LAT] = fixed + sum_blocks sum_ops p_op * lat_op`` from the deployment space's latency;
* :mod:`.losses`    ``add``, ``mul-log`` and ``budget`` (dual ascent on the derived arch's latency gap);
* :mod:`.engine`    the alternating weight / alpha loop, warmup, checkpoints, resume;
* :mod:`.derive`    argmax or the most probable arch within the budget;
* :mod:`.finish`    measure the derived arch, keep it within budget, write the run folder;
* :mod:`.retrain`   training a derived arch from scratch, the random-archs baseline;
* :mod:`.report`    ``alpha.csv``, trajectory plot, ``report.md``.
"""

from latbench.search.proxyless.api import SearchResult, run, training_space
from latbench.search.proxyless.engine import TrainSettings
from latbench.search.proxyless.latency import ExpectedLatency
from latbench.search.proxyless.losses import LOSSES, make_loss
from latbench.search.proxyless.supernet import MODES, build_supernet
from latbench.search.target import parse_target

__all__ = [
    "LOSSES",
    "MODES",
    "ExpectedLatency",
    "SearchResult",
    "TrainSettings",
    "build_supernet",
    "make_loss",
    "parse_target",
    "run",
    "training_space",
]
