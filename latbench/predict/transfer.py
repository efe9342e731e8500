"""Few-shot latency transfer: predict every network of a space on a new device from K measured ones.

The new device's log-latency is modelled as a linear function of what is
already known about the same networks:

* the **reference devices'** log-latencies (datasets of the same archs,
  standardised per device), plus their mean as a *prior* column that is not
  shrunk: "the new device ranks networks like the average known device",
  with the per-device weights shrunk toward it (ridge, ``ref_alpha``);
* **arch features** (op counts of all edges and of the live ones, so that a
  runtime dropping dead code is expressible), shrunk harder (``feat_alpha``)
  since they must be learnt from the shots alone.

The fit is robust (Huber loss by iteratively reweighted least squares): a shot
the references cannot explain (a phone's whole-ms rounding, a runtime that
folds a dead network to nothing) does not drag every other prediction.

That multi-reference ridge can be averaged (in log space, half and half) with a
**single-reference average**: for each reference device alone, a line
``a + b * z_j (+ c * dead_cell)`` fitted on the shots, the lines weighted by
the inverse square of their leave-one-shot-out error. With ten shots the ridge
must spread its weight over a dozen correlated columns; the average instead
trusts the one or two devices that already rank the shots right, which is
what a new device usually resembles. Whether to blend is chosen by the same
simulation on the references as the shrinkage (with many shots the ridge alone
is as good). Measured by leaving each of the 13 NAS-Bench-201 devices out (20
seeds, K=10 with ``shots``): mean Spearman 0.956 for the ridge alone, 0.962
with the blend.

The two shrinkage strengths are not tuned to the target (K shots cannot tell
them apart reliably); they are chosen by **simulating the task on the
reference devices**: each reference in turn is the "new" device, predicted
from the others with K random shots, and the configuration that puts most of
its networks within 10% wins. Nothing about the target but its K shots is used.

A trained model is JSON (schema ``latbench.predictor/1``, kind ``transfer``):
coefficients, standardisation, the reference datasets' ids, paths and
fingerprints (checked on load), and the shots. It predicts archs the
reference datasets hold (all 15,625 for ``nb201``) and compiles to a lookup
over the whole space for the search engines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latbench import paths
from latbench.dataset import DatasetError, NetworkDataset, arch_from_key, arch_key, load_dataset, load_datasets
from latbench.errors import LatbenchError
from latbench.ops import OpSpec
from latbench.predict.base import E2ECalibration, SpaceLatency
from latbench.spaces import Arch, SearchSpace

KIND = "transfer"
#: (ref_alpha, feat_alpha) candidates; feat_alpha None = no arch features
CANDIDATES: tuple[tuple[float, float | None], ...] = tuple(
    (a, f) for a in (0.3, 1.0, 3.0) for f in (None, 3.0, 10.0, 30.0, 100.0)
)
DEFAULT_CONFIG = (1.0, 10.0)


class TransferError(LatbenchError):
    """Bad shots, references or a transfer model file."""


# ----------------------------------------------------------------------------- features
def arch_features(space: SearchSpace, keys: list[str]) -> tuple[list[str], np.ndarray]:
    """Arch features of the networks named by ``keys``: the space's own (nb201) or one-hot choices."""
    if space.name == "nb201":
        from latbench.spaces.nb201 import STRUCTURE_FEATURE_NAMES, str_to_ops, structure_features

        return list(STRUCTURE_FEATURE_NAMES), np.stack([structure_features(str_to_ops(k)) for k in keys])
    names = [f"{d.name}={o}" for d in space.decisions for o in d.options[1:]]
    out = np.zeros((len(keys), len(names)))
    for i, k in enumerate(keys):
        idx = space.to_indices(arch_from_key(space, k))
        col = 0
        for d, j in zip(space.decisions, idx, strict=True):
            if j:
                out[i, col + j - 1] = 1.0
            col += len(d) - 1
    return names, out


# ----------------------------------------------------------------------------- references
class ReferenceMatrix:
    """Log-latencies of the same archs on several reference devices, aligned row by row."""

    def __init__(self, datasets: list[NetworkDataset]) -> None:
        if len(datasets) < 2:
            raise TransferError("few-shot transfer needs at least 2 reference datasets")
        first = datasets[0]
        for d in datasets[1:]:
            if d.space != first.space or d.space_params != first.space_params:
                raise TransferError(
                    f"reference {d.id} is of space {d.space} {d.space_params}, not {first.space} {first.space_params}"
                )
        ids = [d.id for d in datasets]
        if len(set(ids)) != len(ids):
            raise TransferError(f"a reference dataset is given twice: {ids}")
        common = set(first.archs)
        for d in datasets[1:]:
            common &= set(d.archs)
        if len(common) < 20:
            raise TransferError(
                f"the reference datasets share only {len(common)} archs; they must measure the same networks"
            )
        self.datasets = datasets
        self.space = first.get_space()
        self.keys = [k for k in first.archs if k in common]
        self.row = {k: i for i, k in enumerate(self.keys)}
        cols = []
        for d in datasets:
            lut = d.as_dict()
            cols.append(np.log([lut[k] for k in self.keys]))
        self.log_ms = np.stack(cols, axis=1)
        self.feature_names, self.features = arch_features(self.space, self.keys)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datasets]

    def rows_of(self, keys: list[str]) -> np.ndarray:
        missing = [k for k in keys if k not in self.row]
        if missing:
            raise TransferError(f"arch not in the reference datasets: {missing[0][:100]} ({len(missing)} such)")
        return np.array([self.row[k] for k in keys], dtype=np.int64)

    def without(self, column: int) -> ReferenceMatrix:
        """The same references without one device (for leave-one-device-out)."""
        out = object.__new__(ReferenceMatrix)
        out.datasets = [d for i, d in enumerate(self.datasets) if i != column]
        out.space, out.keys, out.row = self.space, self.keys, self.row
        out.log_ms = np.delete(self.log_ms, column, axis=1)
        out.feature_names, out.features = self.feature_names, self.features
        return out


# ----------------------------------------------------------------------------- the regression
@dataclass
class Design:
    """Standardisation of references and features, fixed at fit time and saved with the model."""

    mu: np.ndarray
    sd: np.ndarray
    fmu: np.ndarray
    fsd: np.ndarray

    @classmethod
    def of(cls, log_ms: np.ndarray, features: np.ndarray) -> Design:
        sd = log_ms.std(axis=0)
        fsd = features.std(axis=0)
        return cls(log_ms.mean(axis=0), np.where(sd > 0, sd, 1.0), features.mean(axis=0), np.where(fsd > 0, fsd, 1.0))

    def matrix(self, log_ms: np.ndarray, features: np.ndarray, with_features: bool) -> np.ndarray:
        z = (log_ms - self.mu) / self.sd
        cols = [np.ones((len(z), 1)), z.mean(axis=1, keepdims=True), z]
        if with_features:
            cols.append((features - self.fmu) / self.fsd)
        return np.hstack(cols)


def _penalty(n_refs: int, n_feat: int, ref_alpha: float, feat_alpha: float | None) -> np.ndarray:
    pen = [0.0, 0.0] + [ref_alpha] * n_refs
    if feat_alpha is not None:
        pen += [feat_alpha] * n_feat
    return np.array(pen)


def huber_ridge(
    x: np.ndarray, y: np.ndarray, penalty: np.ndarray, c: float = 1.345, min_scale: float = 0.03, iters: int = 20
) -> np.ndarray:
    """Ridge with Huber loss (IRLS). The residual scale is robust (MAD) but at least ``min_scale`` (3% in log)."""
    w = np.ones(len(y))
    reg = np.diag(penalty) + 1e-9 * np.eye(len(penalty))
    coef = np.zeros(x.shape[1])
    for _ in range(iters):
        coef = np.linalg.solve(x.T @ (w[:, None] * x) + reg, x.T @ (w * y))
        r = y - x @ coef
        scale = max(float(np.median(np.abs(r))) / 0.6745, min_scale)
        u = np.abs(r) / (c * scale)
        new = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
        if np.allclose(new, w):
            break
        w = new
    return coef


#: candidate weights of the single-reference average in the blend (log space; the ridge has the rest),
#: chosen like the shrinkage strengths by simulating the task on the reference devices
BLENDS = (0.0, 0.5)
#: arch feature that marks a network whose cell has no input-output path (folded away by some runtimes)
DEAD_FEATURE = "dead_cell"


@dataclass
class SingleReferences:
    """Per reference device a line ``a + b * z_j + c * dead``; the lines averaged with fixed weights."""

    coef: np.ndarray  # (references, 3)
    weights: np.ndarray  # (references,), summing to 1

    def predict(self, z: np.ndarray, dead: np.ndarray) -> np.ndarray:
        lines = self.coef[:, 0] + z * self.coef[:, 1] + dead[:, None] * self.coef[:, 2]
        return lines @ self.weights


def fit_single_references(z: np.ndarray, dead: np.ndarray, y: np.ndarray, dead_alpha: float = 1.0) -> SingleReferences:
    """One line per reference column of ``z`` (shot rows only), weighted by 1 / (leave-one-out MSE)^2.

    The dead-cell term is ridge-shrunk (``dead_alpha``) since few shots, if
    any, are dead networks; intercept and slope are practically unshrunk.
    """
    n, m = z.shape
    pen = np.diag([1e-6, 1e-6, dead_alpha])
    coef = np.zeros((m, 3))
    loo = np.zeros(m)
    for j in range(m):
        a = np.stack([np.ones(n), z[:, j], dead], axis=1)
        coef[j] = np.linalg.solve(a.T @ a + pen, a.T @ y)
        err = 0.0
        for i in range(n):
            keep = np.arange(n) != i
            ci = np.linalg.solve(a[keep].T @ a[keep] + pen, a[keep].T @ y[keep])
            err += float(a[i] @ ci - y[i]) ** 2
        loo[j] = err / n
    w = 1.0 / np.maximum(loo, 1e-10) ** 2
    return SingleReferences(coef, w / w.sum())


def dead_column(feature_names: list[str], features: np.ndarray) -> np.ndarray:
    """The dead-cell flag of every row, or zeros for spaces without one."""
    if DEAD_FEATURE in feature_names:
        return features[:, list(feature_names).index(DEAD_FEATURE)].astype(np.float64)
    return np.zeros(len(features))


def fit_blend(
    design: Design,
    refs_log: np.ndarray,
    features: np.ndarray,
    dead: np.ndarray,
    rows: np.ndarray,
    y_log: np.ndarray,
    config: tuple[float, float | None],
) -> tuple[np.ndarray, SingleReferences]:
    """The ridge coefficients and the single-reference average, both fitted on the shot ``rows`` only."""
    x = design.matrix(refs_log[rows], features[rows], config[1] is not None)
    coef = huber_ridge(x, y_log, _penalty(refs_log.shape[1], features.shape[1], *config))
    z = (refs_log[rows] - design.mu) / design.sd
    return coef, fit_single_references(z, dead[rows], y_log)


def predict_blend(
    design: Design,
    refs_log: np.ndarray,
    features: np.ndarray,
    dead: np.ndarray,
    coef: np.ndarray,
    singles: SingleReferences | None,
    with_features: bool,
    blend: float,
) -> np.ndarray:
    """Log-latency of every row: the ridge, averaged with weight ``blend`` with the single-reference lines."""
    ridge = design.matrix(refs_log, features, with_features) @ coef
    if singles is None or blend == 0.0:
        return ridge
    return (1.0 - blend) * ridge + blend * singles.predict((refs_log - design.mu) / design.sd, dead)


def _fit_predict(
    refs_log: np.ndarray,
    features: np.ndarray,
    rows: np.ndarray,
    y_log: np.ndarray,
    config: tuple[float, float | None],
    dead: np.ndarray | None = None,
    blend: float = 0.0,
) -> np.ndarray:
    """Fit on ``rows`` of the references and predict log-latency of every row (the blend of the model)."""
    design = Design.of(refs_log, features)
    dead = np.zeros(len(refs_log)) if dead is None else dead
    coef, singles = fit_blend(design, refs_log, features, dead, rows, y_log, config)
    return predict_blend(design, refs_log, features, dead, coef, singles, config[1] is not None, blend)


def choose_blend(
    refs: ReferenceMatrix, k: int, config: tuple[float, float | None], seed: int = 0, trials: int = 2
) -> tuple[float, dict[str, float]]:
    """The weight of the single-reference average (``BLENDS``) that best predicts each reference from the others.

    Same simulation as :func:`choose_config` (``k`` random shots of each
    reference in turn, score: share within 10%); never looks at the target.
    """
    rng = np.random.default_rng([seed, 0xB1E])
    n, m = refs.log_ms.shape
    dead = dead_column(refs.feature_names, refs.features)
    hits = np.zeros(len(BLENDS))
    for j in range(m):
        others = np.delete(refs.log_ms, j, axis=1)
        target = refs.log_ms[:, j]
        design = Design.of(others, refs.features)
        for _ in range(trials):
            rows = rng.choice(n, size=min(k, n), replace=False)
            coef, singles = fit_blend(design, others, refs.features, dead, rows, target[rows], config)
            for b, blend in enumerate(BLENDS):
                pred = predict_blend(design, others, refs.features, dead, coef, singles, config[1] is not None, blend)
                hits[b] += float(np.mean(np.abs(np.exp(pred - target) - 1.0) <= 0.10))
    hits /= m * trials
    return BLENDS[int(np.argmax(hits))], {f"{b:g}": float(h) for b, h in zip(BLENDS, hits, strict=True)}


def choose_config(
    refs: ReferenceMatrix, k: int, seed: int = 0, trials: int = 2
) -> tuple[tuple[float, float | None], dict[str, float]]:
    """The (ref_alpha, feat_alpha) that best predicts each reference device from the others with ``k`` shots.

    Returns the winner and every candidate's mean share within 10% (on the references, never the target).
    """
    rng = np.random.default_rng(seed)
    n = len(refs.keys)
    hits = np.zeros(len(CANDIDATES))
    m = refs.log_ms.shape[1]
    n_feat = refs.features.shape[1]
    for j in range(m):
        others = np.delete(refs.log_ms, j, axis=1)
        target = refs.log_ms[:, j]
        x = Design.of(others, refs.features).matrix(others, refs.features, True)
        n_base = x.shape[1] - n_feat
        for _ in range(trials):
            rows = rng.choice(n, size=min(k, n), replace=False)
            for c, (a, f) in enumerate(CANDIDATES):
                xc = x if f is not None else x[:, :n_base]
                coef = huber_ridge(xc[rows], target[rows], _penalty(m - 1, n_feat, a, f))
                hits[c] += float(np.mean(np.abs(np.exp(xc @ coef - target) - 1.0) <= 0.10))
    hits /= m * trials
    best = CANDIDATES[int(np.argmax(hits))]
    return best, {
        f"{a:g}/{'none' if f is None else f'{f:g}'}": float(h) for (a, f), h in zip(CANDIDATES, hits, strict=True)
    }


# ----------------------------------------------------------------------------- the model
class TransferModel:
    """A fitted few-shot transfer predictor for one device (implements the LatencyModel protocol)."""

    name = "transfer"

    def __init__(
        self,
        refs: ReferenceMatrix,
        design: Design,
        coef: np.ndarray,
        config: tuple[float, float | None],
        shots: dict[str, float],
        device: dict[str, Any],
        fingerprint: dict[str, Any],
        meta: dict[str, Any] | None = None,
        singles: SingleReferences | None = None,
        blend: float = 0.0,
    ) -> None:
        self.refs = refs
        self.singles = singles
        self.blend = float(blend) if singles is not None else 0.0
        self.space = refs.space
        self.design = design
        self.coef = np.asarray(coef, dtype=np.float64)
        self.config = config
        self.shots = dict(shots)
        self.device = dict(device)
        self.device_name = self.device.get("name")
        self.fingerprint = dict(fingerprint)
        self.calibration = E2ECalibration()
        self.meta = dict(meta or {})
        self._all: np.ndarray | None = None

    # ------------------------------------------------------------ prediction
    def predict_all(self) -> np.ndarray:
        """Milliseconds of every arch of the references, in ``refs.keys`` order."""
        if self._all is None:
            refs = self.refs
            dead = dead_column(refs.feature_names, refs.features)
            log_ms = predict_blend(
                self.design,
                refs.log_ms,
                refs.features,
                dead,
                self.coef,
                self.singles,
                self.config[1] is not None,
                self.blend,
            )
            self._all = np.exp(log_ms)
        return self._all

    def predict_keys(self, keys: list[str]) -> np.ndarray:
        return self.predict_all()[self.refs.rows_of(keys)]

    def predict_arch(self, arch: Arch) -> float:
        return float(self.predict_keys([arch_key(self.space, arch)])[0])

    def predict_archs(self, archs: list[Arch]) -> np.ndarray:
        return self.predict_keys([arch_key(self.space, a) for a in archs])

    def predict_ops(self, ops: list[OpSpec]) -> np.ndarray:
        raise TransferError("a transfer predictor predicts whole networks of its space, not single ops")

    def compile(self, space: SearchSpace) -> SpaceLatency:
        if space.name != self.space.name or space.params != self.space.params:
            raise TransferError(
                f"transfer predictor is for {self.space.name} {self.space.params}, not {space.name} {space.params}"
            )
        return TransferSpaceLatency(self)

    # ------------------------------------------------------------ saving
    def to_doc(self) -> dict[str, Any]:
        from latbench.fingerprint import library_versions, now_iso

        def ref_entry(d: NetworkDataset) -> dict[str, Any]:
            p = d.path.resolve() if d.path else None
            root = (paths.REPO_DIR / "datasets").resolve()
            rel = str(p.relative_to(root)) if p and p.is_relative_to(root) else (str(p) if p else None)
            return {"id": d.id, "path": rel, "column": d.column, "fingerprint": d.fingerprint, "device": d.name}

        return {
            "schema": "latbench.predictor/1",
            "model": self.name,
            "kind": KIND,
            "device": self.device,
            "fingerprint": self.fingerprint,
            "versions": self.meta.get("versions") or library_versions(),
            "space": self.space.name,
            "space_params": dict(self.space.params),
            "features": ["log_ms:" + n for n in self.refs.names] + list(self.refs.feature_names),
            "training": {
                "references": [ref_entry(d) for d in self.refs.datasets],
                "shots": [{"arch": k, "ms": v} for k, v in self.shots.items()],
                "k": len(self.shots),
                "selection": self.meta.get("selection") or {},
            },
            "calibration": self.calibration.to_dict(),
            "metrics": self.meta.get("metrics") or {},
            "created": self.meta.get("created") or now_iso(),
            "state": {
                "ref_alpha": self.config[0],
                "feat_alpha": self.config[1],
                "coef": self.coef.tolist(),
                "mu": self.design.mu.tolist(),
                "sd": self.design.sd.tolist(),
                "fmu": self.design.fmu.tolist(),
                "fsd": self.design.fsd.tolist(),
                **(
                    {
                        "blend": self.blend,
                        "singles_coef": self.singles.coef.tolist(),
                        "singles_weights": self.singles.weights.tolist(),
                    }
                    if self.singles is not None
                    else {}
                ),
            },
        }

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        target = paths.check_writable_target(Path(path))
        if target.exists() and not force:
            raise TransferError(f"{target} exists; pass --force to overwrite it")
        doc = self.to_doc()
        head = json.dumps({k: v for k, v in doc.items() if k != "state"}, indent=1, allow_nan=False)
        state = json.dumps(doc["state"], separators=(",", ":"), allow_nan=False)
        # the predictor file layout of latbench.predict.io: metadata for people, the state on one line
        paths.atomic_write_text(target, head[: -len("\n}")] + ',\n "state": ' + state + "\n}\n")
        return target

    @classmethod
    def from_doc(cls, doc: dict[str, Any], where: str = "predictor") -> TransferModel:
        """Rebuild from a saved document: references re-loaded and checked against their fingerprints."""
        try:
            training, state = doc["training"], doc["state"]
            datasets = []
            for ref in training["references"]:
                try:
                    d = load_dataset(ref["path"], ref["column"])
                except DatasetError as exc:
                    raise TransferError(f"{where}: reference {ref['id']}: {exc}") from None
                if d.fingerprint != ref["fingerprint"]:
                    raise TransferError(
                        f"{where}: reference dataset {ref['id']} changed since training "
                        f"(fingerprint {d.fingerprint}, trained on {ref['fingerprint']}); retrain"
                    )
                datasets.append(d)
            refs = ReferenceMatrix(datasets)
            design = Design(*(np.asarray(state[k], dtype=np.float64) for k in ("mu", "sd", "fmu", "fsd")))
            feat_alpha = None if state["feat_alpha"] is None else float(state["feat_alpha"])
            config = (float(state["ref_alpha"]), feat_alpha)
            coef = np.asarray(state["coef"], dtype=np.float64)
            n_expected = 2 + len(datasets) + (len(refs.feature_names) if feat_alpha is not None else 0)
            if coef.shape != (n_expected,) or not np.all(np.isfinite(coef)):
                raise TransferError(f"{where}: transfer coefficients malformed ({coef.shape}, want {n_expected})")
            if len(design.mu) != len(datasets) or len(design.fmu) != len(refs.feature_names):
                raise TransferError(f"{where}: transfer standardisation does not match its references")
            if doc.get("space") != refs.space.name:
                raise TransferError(f"{where}: predictor space {doc.get('space')} differs from its references'")
            shots = {s["arch"]: float(s["ms"]) for s in training["shots"]}
            singles, blend = _singles_from_state(state, len(datasets), where)
        except (KeyError, TypeError, ValueError) as exc:
            raise TransferError(f"{where}: malformed transfer predictor ({type(exc).__name__}: {exc})") from None
        meta = {k: v for k, v in doc.items() if k != "state"}
        return cls(refs, design, coef, config, shots, doc.get("device") or {}, doc["fingerprint"], meta, singles, blend)


def _singles_from_state(state: dict[str, Any], n_refs: int, where: str) -> tuple[SingleReferences | None, float]:
    """The single-reference average of a saved model and its weight (absent: the ridge alone)."""
    if "singles_coef" not in state:
        return None, 0.0
    blend = state.get("blend")
    if not isinstance(blend, (int, float)) or isinstance(blend, bool) or not 0.0 <= float(blend) <= 1.0:
        raise TransferError(f"{where}: transfer blend {blend!r} must be a number in [0, 1]")
    coef = np.asarray(state["singles_coef"], dtype=np.float64)
    weights = np.asarray(state["singles_weights"], dtype=np.float64)
    if coef.shape != (n_refs, 3) or weights.shape != (n_refs,):
        raise TransferError(f"{where}: single-reference lines malformed ({coef.shape}, {weights.shape})")
    if not (np.all(np.isfinite(coef)) and np.all(weights >= 0) and abs(float(weights.sum()) - 1.0) < 1e-6):
        raise TransferError(f"{where}: single-reference weights must be finite, >= 0 and sum to 1")
    return SingleReferences(coef, weights), float(blend)


class TransferSpaceLatency(SpaceLatency):
    """A transfer model compiled for the search engines: a lookup over every arch of an enumerable space."""

    def __init__(self, model: TransferModel) -> None:
        space = model.space
        card = space.cardinalities
        total = int(np.prod(card))
        if total != len(model.refs.keys):
            raise TransferError(
                f"the references cover {len(model.refs.keys)} of the {total} archs of {space.name}; "
                "a search needs all of them"
            )
        self.space = space
        self.calibration = E2ECalibration()
        self.radix = np.concatenate([np.cumprod(card[::-1])[::-1][1:], [1]]).astype(np.int64)
        codes = np.array([int(space.to_indices(arch_from_key(space, k)) @ self.radix) for k in model.refs.keys])
        table = np.empty(total)
        table[codes] = model.predict_all()
        self.vector = table  # hashed by the search engines to identify the source

    def op_sum_indices(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(np.asarray(idx, dtype=np.int64))
        return self.vector[idx @ self.radix]

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        return self.op_sum_indices(idx).astype(np.float64)

    def fixed_ms(self) -> float:
        return 0.0

    def decision_latencies(self) -> list[np.ndarray]:
        raise ValueError("a transfer predictor has no per-decision latencies (it predicts whole networks)")

    def bounds(self) -> tuple[float, float]:
        return float(self.vector.min()), float(self.vector.max())


# ----------------------------------------------------------------------------- fitting
def fit_transfer(
    refs: ReferenceMatrix,
    shots: dict[str, float],
    *,
    device: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
    config: tuple[float, float | None] | None = None,
    blend: float | None = None,
    seed: int = 0,
) -> TransferModel:
    """Fit a transfer model on ``shots`` (arch key -> measured ms of the new device)."""
    if len(shots) < 3:
        raise TransferError(f"few-shot transfer needs at least 3 measured networks, got {len(shots)}")
    keys = list(shots)
    bad = [k for k in keys if not (np.isfinite(shots[k]) and shots[k] > 0)]
    if bad:
        raise TransferError(f"shot {bad[0][:80]} has latency {shots[bad[0]]!r}: need finite positive ms")
    rows = refs.rows_of(keys)
    y = np.log(np.array([shots[k] for k in keys], dtype=np.float64))
    scores: dict[str, float] = {}
    if config is None:
        config, scores = choose_config(refs, len(keys), seed=seed)
    blend_scores: dict[str, float] = {}
    if blend is None:
        blend, blend_scores = choose_blend(refs, len(keys), config, seed=seed)
    design = Design.of(refs.log_ms, refs.features)
    dead = dead_column(refs.feature_names, refs.features)
    coef, singles = fit_blend(design, refs.log_ms, refs.features, dead, rows, y, config)
    with_f = config[1] is not None
    loo = np.empty(len(y))
    for i in range(len(y)):
        held = rows[i : i + 1]
        c_i, s_i = fit_blend(design, refs.log_ms, refs.features, dead, np.delete(rows, i), np.delete(y, i), config)
        loo[i] = predict_blend(design, refs.log_ms[held], refs.features[held], dead[held], c_i, s_i, with_f, blend)[0]
    rel = np.abs(np.exp(loo - y) - 1.0)
    metrics = {"loo_within_10": float(np.mean(rel <= 0.10)), "loo_mape": float(np.mean(rel)), "k": len(keys)}
    name = (device or {}).get("name") or "new-device"
    fp = dict(fingerprint or {"id": f"transfer-{name}", "kind": "shots"})
    selection = {"config": list(config), "scores": scores, "blend": blend, "blend_scores": blend_scores, "seed": seed}
    meta = {"selection": selection, "metrics": metrics}
    return TransferModel(refs, design, coef, config, shots, device or {"name": name}, fp, meta, singles, blend)


# ----------------------------------------------------------------------------- shot selection
def select_shots(refs: ReferenceMatrix, k: int, seed: int = 0, components: int = 4) -> list[str]:
    """``k`` archs spread over what the references know: farthest-point sampling in their principal components.

    The first arch is drawn at random (``seed``), each next one is the arch
    farthest from those chosen in the references' top ``components``
    principal directions of standardised log-latency (scaled by their
    singular values), so the shots span the latency range and the ways
    devices disagree. Deterministic by seed.
    """
    n = len(refs.keys)
    if not 1 <= k <= n:
        raise TransferError(f"-k must be 1..{n}, got {k}")
    z = (refs.log_ms - refs.log_ms.mean(axis=0)) / np.where(refs.log_ms.std(axis=0) > 0, refs.log_ms.std(axis=0), 1)
    u, s, _ = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    pcs = u[:, :components] * s[:components]
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    dist = np.linalg.norm(pcs - pcs[chosen[0]], axis=1)
    for _ in range(k - 1):
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, np.linalg.norm(pcs - pcs[j], axis=1))
    return [refs.keys[i] for i in chosen]


# ----------------------------------------------------------------------------- IO helpers
def load_references(specs: list[str], exclude: list[str] | tuple[str, ...] = ()) -> ReferenceMatrix:
    """Reference datasets from files (``FILE`` = every column, ``FILE:DEVICE`` = one), minus ``exclude`` names."""
    sets: list[NetworkDataset] = []
    for spec in specs:
        text = str(spec)
        if ":" in text and not Path(text).exists():
            sets.append(load_dataset(text))
        else:
            sets.extend(load_datasets(text))
    unknown = [e for e in exclude if e not in {d.name for d in sets} | {d.column for d in sets}]
    if unknown:
        raise TransferError(f"--exclude {unknown[0]}: no such reference device")
    return ReferenceMatrix([d for d in sets if d.name not in exclude and d.column not in exclude])


def read_shots(path: str | Path, space: SearchSpace) -> dict[str, float]:
    """Measured shots: a CSV ``arch,ms`` (arch key or arch JSON), or a latbench dataset file."""
    p = Path(path)
    if p.suffix == ".csv" and p.with_suffix(".json").is_file():
        d = load_dataset(p) if len(load_datasets(p)) == 1 else None
        if d is not None:
            return d.as_dict()
    import csv

    if not p.is_file():
        raise TransferError(f"shots file not found: {p}")
    rows = list(csv.reader(p.read_text().splitlines()))
    if not rows or [c.strip() for c in rows[0][:2]] != ["arch", "ms"]:
        raise TransferError(f"{p}: shots CSV needs the header 'arch,ms'")
    out: dict[str, float] = {}
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 2:
            raise TransferError(f"{p}:{i}: need 'arch,ms'")
        text, ms = row[0].strip(), row[1].strip()
        try:
            arch = json.loads(text) if text.startswith("{") else arch_from_key(space, text)
            key = arch_key(space, arch)
            value = float(ms)
        except (LatbenchError, json.JSONDecodeError, ValueError) as exc:
            raise TransferError(f"{p}:{i}: bad shot ({exc})") from None
        if not np.isfinite(value) or value <= 0:
            raise TransferError(f"{p}:{i}: latency {ms} ms is not a finite positive number")
        if key in out:
            raise TransferError(f"{p}:{i}: arch given twice")
        out[key] = value
    return out


__all__ = [
    "CANDIDATES",
    "Design",
    "ReferenceMatrix",
    "TransferError",
    "TransferModel",
    "TransferSpaceLatency",
    "arch_features",
    "choose_config",
    "fit_transfer",
    "load_references",
    "read_shots",
    "select_shots",
]
