#!/usr/bin/env bash
# One device call for a session lent a GPU (docs/gpus.md): GhostNet 1.0x training throughput at
# 224 px with one worker (issue 20), then as many of the CIFAR proxy study's targets as fit
# (issue 17). Run from the repository root on the GPU machine, with the CIFAR archive copied to
# .gpudata/ and carried; everything it measures is written to $OUT:
#
#   here:  mkdir -p .gpudata && cp ../shared/data/cifar10-jpg.tar.gz .gpudata/
#          echo /.gpudata/ >> .git/info/exclude
#   run:   command "bash benchmarks/gpu_session.sh", carry [".gpudata"], timeout_s 570
#   back:  python benchmarks/proxy_budget.py merge --from FILES_AT/proxy_budget_gpu.json \
#              --out benchmarks/results/proxy_budget_cifar.json   (with the CPU study stopped)
#
# DEVICE=cpu THROUGHPUT_IMAGES=64 STUDY_SECONDS=60 checks the plumbing on a CPU machine.
set -u
OUT=${OUT:?set OUT to the folder that comes back}
DEVICE=${DEVICE:-cuda}
THROUGHPUT_IMAGES=${THROUGHPUT_IMAGES:-20000}
STUDY_SECONDS=${STUDY_SECONDS:-360}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

data=$(mktemp -d)
tar -xzf .gpudata/cifar10-jpg.tar.gz -C "$data" || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PY" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/machine.txt"

# 1. Training throughput at 224 px: one epoch of the paper's recipe (batch 1024, random-resized
#    crops), one worker, the images read from disk by loader workers as a large data set would
#    be (train.json's final images_per_second; the progress lines show the loader's rate).
timeout 200 "$PY" -m search train ghostnet_100 --dataset folder --data-dir "$data" \
    --recipe ghostnet-imagenet --resolution 224 --epochs 1 --max-train "$THROUGHPUT_IMAGES" \
    --device "$DEVICE" --in-memory-limit 0.05 --out "$data/train224" > "$OUT/train224.log" 2>&1
cp "$data/train224/train.json" "$OUT/train224.json" 2>/dev/null

# 2. The proxy study's targets, several trainings sharing the GPU; each finished result is in
#    the record copy, whatever the timeout cuts.
cp benchmarks/results/proxy_budget_cifar.json "$data/study.json"
timeout "$STUDY_SECONDS" "$PY" benchmarks/proxy_budget.py run --dataset folder \
    --data-dir "$data" --device "$DEVICE" --workers 6 --proxies target \
    --out "$data/study.json" > "$OUT/study.log" 2>&1
cp "$data/study.json" "$OUT/proxy_budget_gpu.json"
echo "done: $(ls "$OUT")"
