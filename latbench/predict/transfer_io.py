"""Loading a transfer predictor file without going through the generic loader.

:func:`latbench.predict.io.load_predictor` loads ``transfer`` predictors too
(kind ``transfer``); this loader additionally refuses any other kind, for
commands that need a transfer model (``latbench transfer predict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latbench.predict.io import check_device, read_predictor_doc
from latbench.predict.transfer import KIND, TransferError, TransferModel


def load_transfer(path: str | Path, *, force: bool = False, device: Any = None) -> TransferModel:
    """Load a transfer predictor file (validated: schema, kind, references and their fingerprints)."""
    doc, found = read_predictor_doc(path)
    if doc.get("kind") != KIND:
        raise TransferError(f"{found}: not a transfer predictor (kind {doc.get('kind')!r})")
    check_device(doc, found, device, force=force)
    model = TransferModel.from_doc(doc, str(found))
    model.meta["path"] = str(found)
    return model
