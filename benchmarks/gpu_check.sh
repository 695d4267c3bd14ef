#!/usr/bin/env bash
# One command for a CUDA machine, from a fresh clone (under five minutes): the GPU tests, indexing
# throughput with the model on the GPU (photos/s; decode or model as the bottleneck) and 1M-vector
# exact search on GPU FAISS against the CPU, as one table. Without a GPU it says so and runs the
# CPU half. Install first (README, "GPUs"): pip install -e '.[test,gpu]', then swap faiss-cpu.
#   bash benchmarks/gpu_check.sh [--photos N] [--vectors N] [--model SPEC]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PYTHON="${PYTHON:-python3}"

if "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "== GPU tests (tests marked gpu) =="
    "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/
else
    echo "== NO GPU on this machine: torch sees no CUDA device. The GPU tests skip; the CPU half runs. =="
    "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/ -rs | tail -n 8
fi
echo
echo "== indexing throughput and 1M-vector search =="
"$PYTHON" benchmarks/gpu_bench.py "$@"
