"""Export ops and networks to ONNX the way deployment does.

* TorchScript exporter (``torch.onnx.export(..., dynamo=False)``): 0.2 s per
  block against ~4 s for the torch.export based one (see FACTS.md).
* eval mode and constant folding, so every BatchNorm is folded into the Conv
  before it (the exported graph of an MBConv is ``Conv, Clip, Conv, Clip, Conv``).
* static shapes (the batch size of the example input is baked in).
* the exporter, opset, torch version and what was exported are written into
  the model's ``metadata_props``.

Exports of an :class:`~latbench.ops.OpSpec` or an arch dict are cached by key
in a cache folder (``$LATBENCH_HOME/cache/onnx``, else
``$XDG_DATA_HOME/latbench/cache/onnx``), so a table build exports each op once
per machine; a cached file is reused only when its metadata says it was made
with the same exporter, opset and torch version.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from latbench import paths
from latbench.errors import LatbenchError
from latbench.ops import OpSpec

__all__ = ["EXPORTER", "default_cache_dir", "export_arch", "export_onnx", "read_metadata", "workload_cache_key"]

#: recorded in every exported model (metadata_props "latbench.exporter")
EXPORTER = "torch.onnx.export(dynamo=False)"
#: bump when the export recipe changes, so old cache entries are not reused
RECIPE_VERSION = "1"
INPUT_NAME = "input"
OUTPUT_NAME = "output"
#: torch seed the weights of exported ops and archs are drawn with
WEIGHT_SEED = 0


def default_cache_dir() -> Path:
    """Where exported graphs are cached: ``$LATBENCH_HOME/cache/onnx`` or the user data dir's ``cache/onnx``."""
    home = os.environ.get("LATBENCH_HOME")
    if home:
        return Path(home) / "cache" / "onnx"
    return paths.user_dir("devices").parent / "cache" / "onnx"


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def workload_cache_key(workload: Any, opset: int) -> str | None:
    """File name (without suffix) under which ``workload`` is cached, or ``None`` when it cannot be cached."""
    tag = f"opset{opset}-torch{_torch_version()}-r{RECIPE_VERSION}"
    if isinstance(workload, OpSpec):
        return f"op-{workload.key}-{hashlib.sha1(tag.encode()).hexdigest()[:8]}"
    if isinstance(workload, dict):
        blob = json.dumps(workload, sort_keys=True) + tag
        return f"arch-{workload.get('space', 'x')}-{hashlib.sha1(blob.encode()).hexdigest()[:16]}"
    return None


def _module_and_input(workload: Any) -> tuple[Any, Any, str]:
    """``(module, example_input, description)`` of an OpSpec, an arch dict or a ``(module, input)`` pair.

    OpSpecs and archs are built under ``torch.manual_seed(WEIGHT_SEED)`` (the global RNG is left as it
    was), so an export is reproducible: the same key gives the same weights, which int8 quantization needs.
    """
    import torch

    if isinstance(workload, tuple) and len(workload) == 2 and isinstance(workload[0], torch.nn.Module):
        return workload[0], workload[1], f"module:{type(workload[0]).__name__}"
    if isinstance(workload, OpSpec) and workload.type == "zero":
        raise LatbenchError(f"op {workload.key} is a skipped block (zero): it has no graph to export")
    if not isinstance(workload, (OpSpec, dict)):
        raise LatbenchError(
            f"cannot export {type(workload).__name__} to ONNX (give an OpSpec, an arch dict or (module, input))"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(WEIGHT_SEED)
        if isinstance(workload, OpSpec):
            return workload.build(), workload.example_input(), f"op:{workload.key}"
        from latbench.spaces import space_of

        space = space_of(workload)
        arch = space.validate(workload)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(*space.input_shape, generator=g)
        return space.build(arch), x, "arch:" + json.dumps(arch, sort_keys=True)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading its weights)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError / various on a file that is not ONNX
        raise LatbenchError(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    return {p.key: p.value for p in model.metadata_props}


def _export_to(module: Any, x: Any, target: Path, opset: int, what: str) -> None:
    """Export ``module`` on ``x`` to ``target`` (written atomically, with latbench's metadata)."""
    import warnings

    import onnx
    import torch

    module = module.eval()
    # torch.onnx.export writes to a path of its own (and may add external-data files beside it): it gets a
    # private staging folder; the user-visible file is written once, atomically, by paths.atomic_write_bytes
    with tempfile.TemporaryDirectory(prefix="latbench-export-") as staging:
        tmp = str(Path(staging) / "model.onnx")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (x,),
                tmp,
                dynamo=False,
                opset_version=opset,
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
            )
        model = onnx.load(tmp)
    meta = {
        "latbench.exporter": EXPORTER,
        "latbench.opset": str(opset),
        "latbench.torch": _torch_version(),
        "latbench.recipe": RECIPE_VERSION,
        "latbench.workload": what[:4000],
        "latbench.input_shape": json.dumps(list(x.shape)),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    paths.atomic_write_bytes(target, model.SerializeToString())


def _cache_hit(path: Path, opset: int) -> bool:
    if not path.exists():
        return False
    try:
        meta = read_metadata(path)
    except LatbenchError:
        return False
    return (
        meta.get("latbench.exporter") == EXPORTER
        and meta.get("latbench.opset") == str(opset)
        and meta.get("latbench.torch") == _torch_version()
    )


def export_onnx(
    workload: Any,
    path: str | os.PathLike[str] | None,
    *,
    opset: int = 17,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Export ``workload`` to the ONNX file ``path`` and return it.

    ``workload`` is an :class:`OpSpec`, an arch dict (the network of
    ``space_of(arch).build(arch)`` on ``space.input_shape``) or a
    ``(torch.nn.Module, example_input)`` pair. OpSpecs and archs are cached by
    key in ``cache_dir`` (default :func:`default_cache_dir`); with
    ``path=None`` the cached file itself is returned (do not modify it).
    """
    if opset < 13:
        raise LatbenchError(f"opset {opset} is too old; latbench exports opset 13 or newer (17 by default)")
    key = workload_cache_key(workload, opset)
    target = Path(path) if path is not None else None
    if key is not None:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        cached = cache / f"{key}.onnx"
        if not _cache_hit(cached, opset):
            module, x, what = _module_and_input(workload)
            _export_to(module, x, cached, opset, what)
        if target is None:
            return cached
        if target.resolve() != cached.resolve():
            paths.atomic_write_bytes(target, cached.read_bytes())
        return target
    module, x, what = _module_and_input(workload)
    if target is None:
        target = Path(tempfile.mkdtemp(prefix="latbench-onnx-")) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    _export_to(module, x, target, opset, what)
    return target


def export_arch(arch: dict[str, Any], path: str | os.PathLike[str], *, opset: int = 17) -> Path:
    """Export the whole network of an arch JSON to ``path`` (cached like ops); returns the path."""
    if not isinstance(arch, dict):
        raise LatbenchError(f"an arch must be a JSON object, got {type(arch).__name__}")
    return export_onnx(arch, path, opset=opset)
