"""`History`: every trial of a search, kept as column arrays (appended a batch at a time)."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from latbench.spaces import SearchSpace

NUMERIC = ("trial", "accuracy", "latency_ms", "reward", "params", "memory_mb", "eval_s", "elapsed_s")
FLAGS = ("within_budget", "cached")
TEXT = ("status", "source", "error", "note")
#: history.csv columns around the decision columns
HEAD = ("trial", "status")
TAIL = (
    "accuracy",
    "source",
    "latency_ms",
    "reward",
    "within_budget",
    "params",
    "memory_mb",
    "eval_s",
    "elapsed_s",
    "cached",
    "error",
    "note",
)


class History:
    """Column store of trials: ``indices`` (n, decisions) plus the fields of :data:`HEAD` and :data:`TAIL`."""

    def __init__(self, space: SearchSpace, value_name: str = "accuracy") -> None:
        self.space = space
        #: the CSV name of the evaluator's number: "accuracy", or "score" for a proxy score
        self.value_name = value_name
        self.names = [d.name for d in space.decisions]
        self._chunks: list[dict[str, Any]] = []
        self._cache: dict[str, Any] | None = None
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, **cols: Any) -> None:
        n = len(cols["trial"])
        if n == 0:
            return
        self._chunks.append(cols)
        self._n += n
        self._cache = None

    def arrays(self) -> dict[str, Any]:
        """All columns concatenated (cached until the next append)."""
        if self._cache is None:
            d = len(self.names)
            if not self._chunks:
                out: dict[str, Any] = {"indices": np.zeros((0, d), dtype=np.int64)}
                for k in NUMERIC:
                    out[k] = np.zeros(0)
                for k in FLAGS:
                    out[k] = np.zeros(0, dtype=bool)
                for k in TEXT:
                    out[k] = np.zeros(0, dtype=object)
                out["trial"] = out["trial"].astype(np.int64)
                self._cache = out
            else:
                out = {"indices": np.concatenate([c["indices"] for c in self._chunks])}
                for k in (*NUMERIC, *FLAGS):
                    out[k] = np.concatenate([np.asarray(c[k]) for c in self._chunks])
                for k in TEXT:
                    out[k] = np.array([v for c in self._chunks for v in c[k]], dtype=object)
                out["trial"] = out["trial"].astype(np.int64)
                self._chunks = [dict(out)]
                self._cache = out
        return self._cache

    # ------------------------------------------------------------------ CSV
    def header(self) -> list[str]:
        tail = [self.value_name if c == "accuracy" else c for c in TAIL]
        return [*HEAD, *self.names, *tail]

    def csv_rows(self, start: int, stop: int | None = None) -> str:
        """CSV text (no header) of rows ``start:stop``."""
        a = self.arrays()
        stop = len(self) if stop is None else stop
        if stop <= start:
            return ""
        sl = slice(start, stop)
        cols: list[Any] = [a["trial"][sl].tolist(), a["status"][sl].tolist()]
        for j, d in enumerate(self.space.decisions):
            opts = np.array([str(o) for o in d.options], dtype=object)
            cols.append(opts[a["indices"][sl, j]].tolist())

        def num(x: np.ndarray, fmt: str) -> list[str]:
            # "r": shortest text that reads back to the same float (a resumed run sees exactly these values)
            if fmt == "r":
                return [("" if not np.isfinite(v) else repr(v)) for v in x.tolist()]
            return [("" if not np.isfinite(v) else format(v, fmt)) for v in x.tolist()]

        cols += [
            num(a["accuracy"][sl], "r"),
            a["source"][sl].tolist(),
            num(a["latency_ms"][sl], "r"),
            num(a["reward"][sl], "r"),
            np.where(a["within_budget"][sl], "1", "0").tolist(),
            num(a["params"][sl], ".0f"),
            num(a["memory_mb"][sl], ".4g"),
            num(a["eval_s"][sl], ".4g"),
            num(a["elapsed_s"][sl], ".4f"),
            np.where(a["cached"][sl], "1", "0").tolist(),
            [e or "" for e in a["error"][sl].tolist()],
            [e or "" for e in a["note"][sl].tolist()],
        ]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(zip(*cols, strict=True))
        return buf.getvalue()

    @classmethod
    def from_csv(cls, space: SearchSpace, text: str, value_name: str = "accuracy") -> History:
        """Parse history.csv back (the header must match the space's decisions and the evaluator's number)."""
        from latbench.errors import LatbenchError

        h = cls(space, value_name)
        reader = csv.reader(io.StringIO(text))
        try:
            header = next(reader)
        except StopIteration:
            return h
        if header != h.header():
            raise LatbenchError(
                "history.csv columns do not match the run's space (was the run made by another latbench?)"
            )
        rows = [r for r in reader if r]
        if not rows:
            return h
        cols = list(zip(*rows, strict=True))
        d = len(h.names)
        lookup = [{str(o): i for i, o in enumerate(dec.options)} for dec in space.decisions]
        idx = np.array([[lookup[j][v] for v in cols[2 + j]] for j in range(d)], dtype=np.int64).T.reshape(-1, d)
        t = {name: cols[2 + d + i] for i, name in enumerate(TAIL)}

        def f(vals: tuple[str, ...]) -> np.ndarray:
            return np.array([float(v) if v != "" else np.nan for v in vals])

        h.append(
            trial=np.array([int(v) for v in cols[0]], dtype=np.int64),
            status=list(cols[1]),
            indices=idx,
            accuracy=f(t["accuracy"]),
            source=list(t["source"]),
            latency_ms=f(t["latency_ms"]),
            reward=f(t["reward"]),
            within_budget=np.array([v == "1" for v in t["within_budget"]]),
            params=f(t["params"]),
            memory_mb=f(t["memory_mb"]),
            eval_s=f(t["eval_s"]),
            elapsed_s=f(t["elapsed_s"]),
            cached=np.array([v == "1" for v in t["cached"]]),
            error=[v or None for v in t["error"]],
            note=list(t["note"]),
        )
        return h
