#!/usr/bin/env bash
# GPU benchmark check: run from the repository root on a machine with a CUDA GPU.
#
#   SHARDTRAIN_DATA=/path/to/data OUT=/tmp/out bash benchmarks/gpu_check.sh [--quick]
#
# Needs torch, pytorch-lightning, torchmetrics, pyarrow, pyyaml, numpy (not Ray,
# albumentations or nlpaug: those benchmarks report "skipped"), and no install of shardtrain:
# without one, benchmarks/__init__.py maps this source tree into the shardtrain namespace
# (an installed shardtrain is used as it is). SHARDTRAIN_DATA must hold
# fashion-mnist/*.gz (default: ../shared/data). Writes $OUT/bench_gpu.json and
# $OUT/bench_gpu.txt; takes about 2-4 minutes on an H100 (most of it Trainer start-ups).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-.}"
DATA="${SHARDTRAIN_DATA:-../shared/data}"
export SHARDTRAIN_DATA="$DATA" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

if [ ! -d "$DATA/fashion-mnist" ]; then
    echo "gpu_check: no $DATA/fashion-mnist; set SHARDTRAIN_DATA to a directory holding fashion-mnist/*.gz" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" - <<'EOF'
import importlib
for name in ("torch", "pytorch_lightning", "torchmetrics", "pyarrow", "yaml", "numpy"):
    mod = importlib.import_module(name)
    print(f"{name} {getattr(mod, '__version__', '?')}")
import torch
assert torch.cuda.is_available(), "gpu_check: torch sees no CUDA device"
print("cuda", torch.version.cuda, torch.cuda.get_device_name(0))
import benchmarks, shardtrain  # the source tree when nothing is installed
print("shardtrain", shardtrain.__version__, "from", shardtrain.__file__)
EOF

# GPU rows first (they are what this machine is for), then the CPU feed rows as a sanity check.
timeout 540 "$PYTHON" -m benchmarks run "$@" --only time_to_89_gpu epoch_gpu_bs512 ensemble_vmap_gpu feed_gpu \
    --json "$OUT/bench_gpu.json" | tee "$OUT/bench_gpu.txt"
