#!/usr/bin/env bash
# GPU check of the torch-cuda backend, for whoever has an NVIDIA GPU (a few minutes).
#   scripts/gpu_check.sh            # results under $OUT if set, else ./gpu-check-out
# 1. the torch-cuda contract suite and the timing-policy tests (pytest, nothing skipped may pass silently)
# 2. a small table build (darts space) under each timing policy, the policy recorded in every row
# 3. agreement with torch.utils.benchmark (blocked_autorange) within 5%, graph vs eager figures
# Exit code 0 only when all three pass. Needs a CUDA build of torch in the Python used (PYTHON=...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT_DIR="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export LATBENCH_HOME="$OUT_DIR/home"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
"$PY" -c "from latbench.backends.torch_cuda import cuda_unavailable_reason as r; import sys; m=r(); print(m or 'cuda ok'); sys.exit(1 if m else 0)"
status=0
"$PY" -m pytest -q -rs tests/test_cuda_backend.py tests/test_cuda_timing.py 2>&1 | tee "$OUT_DIR/pytest.txt" || status=1
if grep -q "SKIPPED" "$OUT_DIR/pytest.txt" && grep -q "unavailable here" "$OUT_DIR/pytest.txt"; then
  echo "gpu_check: CUDA tests were skipped on a GPU machine" | tee -a "$OUT_DIR/pytest.txt"; status=1
fi
"$PY" scripts/gpu_check.py --out "$OUT_DIR" 2>&1 | tee "$OUT_DIR/gpu_check.txt" || status=1
echo "gpu_check: exit $status, results in $OUT_DIR"
exit $status
