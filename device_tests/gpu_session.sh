#!/usr/bin/env bash
# One prepared GPU session: the training benchmark (#4), the CUDA inference benchmark (#7) and the DDP rows (#18),
# each under its own time limit so a slow compile cannot eat the other's figures. Results land in $OUT
# (default ./gpu-out): bench_training.json, bench_cuda.json, distributed_cpu.json (+ distributed_gpu.json), logs.
#
#   bash device_tests/gpu_session.sh [DEMO_MANIFEST]
#
# With a demo manifest (default datasets/demo/manifest.jsonl when present: carry datasets/demo) the training
# benchmark also runs the loader rows: cache_loader (issue #18: image cache, crops/flips on the GPU) right after
# full_compiled, its synthetic-input baseline; the report's cache_loader_vs_synthetic has target >= 0.9.
#
# Needs torch (CUDA), transformers, timm, numpy, pillow, tokenizers; no network. lugha itself is used from this
# checkout: an editable install when pip can do it offline, else a path finder (what an editable install is).
# LUGHA_HOME should hold tokenizers/e5-small/tokenizer.json (the XLM-R vocabulary the text tower needs).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
DATA=${1:-}
[ -z "$DATA" ] && [ -f datasets/demo/manifest.jsonl ] && DATA=datasets/demo/manifest.jsonl
TRAIN_LIMIT=${TRAIN_LIMIT:-330}
INFER_LIMIT=${INFER_LIMIT:-150}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python -V
  python -c "import torch, transformers, timm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__)"
} 2>&1 | tee "$OUT/machine.txt"

if ! python -c "import lugha.training" 2>/dev/null; then
  pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/pip.log" 2>&1 || true
fi
if ! python -c "import lugha.training" 2>/dev/null; then
  SHIM=$(mktemp -d)
  cat >"$SHIM/sitecustomize.py" <<EOF
import importlib.util, sys
from pathlib import Path
_ROOT = Path("$PWD")
_MAP = {"lugha": "kit", "lugha.cli": "cli", "lugha.data": "data", "lugha.training": "training", "lugha.export": "export", "lugha.runtimes": "runtimes"}
class _Finder:
    def find_spec(self, name, path=None, target=None):
        if name in _MAP:
            d = _ROOT / _MAP[name]
            return importlib.util.spec_from_file_location(name, d / "__init__.py", submodule_search_locations=[str(d)])
        return None
sys.meta_path.insert(0, _Finder())
EOF
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
  echo "lugha from source through a path finder ($SHIM)" | tee -a "$OUT/machine.txt"
fi
python -c "import lugha, lugha.training; print('lugha', lugha.__version__, 'from', lugha.__file__)" 2>&1 | tee -a "$OUT/machine.txt"

# BENCH_ARGS: extra bench_training.py flags (e.g. "--modes full_compiled,real_loader --repeats 2")
timeout "$TRAIN_LIMIT" python device_tests/bench_training.py ${DATA:+--data "$DATA"} --cache-dir /tmp/lugha-cache ${BENCH_ARGS:-} \
  --json "$OUT/bench_training.json" 2>&1 | grep -v "Enum subclass" | tee "$OUT/bench_training.log"
echo "bench_training exit ${PIPESTATUS[0]}" | tee -a "$OUT/bench_training.log"

if [ "$INFER_LIMIT" -gt 0 ]; then  # INFER_LIMIT=0 skips the inference benchmark
  timeout "$INFER_LIMIT" python device_tests/bench_cuda_inference.py --json "$OUT/bench_cuda.json" 2>&1 \
    | grep -v "Enum subclass" | tee "$OUT/bench_cuda.log"
  echo "bench_cuda_inference exit ${PIPESTATUS[0]}" | tee -a "$OUT/bench_cuda.log"
fi

# DDP rows (#18): 1 vs 2 torchrun processes on this machine's CPUs (gloo), and 1 vs all GPUs (NCCL, one GPU a
# process) when there are 2 or more; samples/s and the metrics both reach. DDP_LIMIT=0 skips them.
DDP_LIMIT=${DDP_LIMIT:-240}
if [ "$DDP_LIMIT" -gt 0 ]; then
  timeout "$DDP_LIMIT" python benchmarks/distributed.py ${DATA:+--data "$DATA"} --repeats 2 --out "$OUT/distributed_cpu.json" 2>&1 \
    | grep -v "Enum subclass" | tee "$OUT/distributed.log"
  echo "distributed cpu exit ${PIPESTATUS[0]}" | tee -a "$OUT/distributed.log"
  NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
  if [ "$NGPU" -ge 2 ]; then
    timeout "$DDP_LIMIT" python benchmarks/distributed.py ${DATA:+--data "$DATA"} --device cuda --nproc "$NGPU" --repeats 2 \
      --out "$OUT/distributed_gpu.json" 2>&1 | grep -v "Enum subclass" | tee -a "$OUT/distributed.log"
    echo "distributed gpu exit ${PIPESTATUS[0]}" | tee -a "$OUT/distributed.log"
  else
    echo "distributed gpu: $NGPU GPU(s), the NCCL row needs 2 or more" | tee -a "$OUT/distributed.log"
  fi
fi
