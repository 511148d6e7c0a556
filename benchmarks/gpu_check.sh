#!/usr/bin/env bash
# make gpu-check: every GPU check in one go, sized for one 15-minute device window (under 8 minutes
# on one H100 or H200 from a bare machine), with no network:
#   1. Ray from the carried bundle (.whl/, built by ../shared/device/make-bundle.sh) when the
#      machine has none;
#   2. pytest -m gpu: a run and a search on the real GPU (bf16, fused AdamW, pinned batches, MFU);
#   3. benchmarks/gpu.py --size check: BERT-base MLM at sequence 128, batch 256, one repetition;
#      tokens/s, MFU and the data-wait share go to benchmarks/results/gpu.json.
# GPU_CHECK_SIZE=smoke runs the same steps on a CPU at the smallest size (the GPU tests skip):
# a check of this script, not of a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${GPU_CHECK_SIZE:-check}
OUT=${GPU_CHECK_OUT:-benchmarks/results}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

if ! "$PY" -c "import ray" 2>/dev/null; then
  if [ ! -f .whl/device-setup.sh ]; then
    echo "gpu-check: no Ray here and no .whl/ bundle: build it with bash ../shared/device/make-bundle.sh" \
         "on a machine that reaches PyPI, and carry .whl/ here" >&2
    exit 2
  fi
  echo "[gpu-check] installing the carried Ray bundle"
  # shellcheck disable=SC1091
  . .whl/device-setup.sh
  PY=python3
fi
if [ "$SIZE" != smoke ] && ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu-check: no CUDA GPU here (torch.cuda.is_available() is False); GPU_CHECK_SIZE=smoke runs the" \
       "script's steps on a CPU" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('[gpu-check] torch', torch.__version__, '|',
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

start=$SECONDS
echo "[gpu-check] pytest -m gpu"
# Only the modules that hold GPU tests: the others may import test-only packages (boto3, moto) that
# a bare GPU machine lacks, and one collection error would stop the whole check.
mapfile -t gpu_tests < <(grep -rl --include='*.py' 'pytest.mark.gpu' tests)
timeout 300 "$PY" -m pytest -q -m gpu -p no:cacheprovider "${gpu_tests[@]}"
echo "[gpu-check] tests took $((SECONDS - start)) s"

start=$SECONDS
echo "[gpu-check] benchmarks/gpu.py --size $SIZE"
timeout 300 "$PY" benchmarks/gpu.py --size "$SIZE" --reps 1 --out "$OUT"
echo "[gpu-check] benchmark took $((SECONDS - start)) s; results in $OUT/gpu.json"
